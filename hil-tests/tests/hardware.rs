//! Hardware mode end to end without hardware: `reflex-hil hardware` drives a robot made of ROS 2
//! peers (`tests/hardware/robot.py`: a base following /cmd_vel, a lidar ray-cast against the
//! scenario's set-up, the E-stop topic) whose "people" answer the runner's prompts:
//! - `--io dds` (feature `dds`): the robot on PyPI `cyclonedds` (.venv);
//! - `--io ros2` (feature `ros2`, r2r over rcl): the robot as rclpy nodes of ROS 2 Jazzy on Fast
//!   DDS (.ros2/venv; `.ros2/env.sh` sourced, from `scripts/setup-ros2`).
//!
//! `bash scripts/test` builds both adapters and runs every test here; a missing Python or ROS
//! environment fails the test with the fix, never skips it.
#![cfg(any(feature = "dds", feature = "ros2"))]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Clone, Copy)]
enum Peer {
    /// PyPI cyclonedds, `--io dds`.
    #[cfg_attr(not(feature = "dds"), allow(dead_code))]
    Cyclone,
    /// rclpy (ROS 2 Jazzy, Fast DDS), `--io ros2`.
    #[cfg_attr(not(feature = "ros2"), allow(dead_code))]
    Rclpy,
}

fn robot(peer: Peer, scenario: &str, extra: &[&str]) -> (i32, String) {
    let (python, args) = match peer {
        Peer::Cyclone => {
            let python = repo().join(".venv/bin/python");
            assert!(
                python.is_file(),
                "{} missing: run `bash scripts/test` (it installs cyclonedds into .venv)",
                python.display()
            );
            (python, ["--peer", "cyclonedds", "--io", "dds"])
        }
        Peer::Rclpy => {
            let python = std::env::var("REFLEX_ROS2_PYTHON").unwrap_or_else(|_| {
                panic!(
                    "REFLEX_ROS2_PYTHON is not set: run `bash scripts/setup-ros2`, then `source .ros2/env.sh` before cargo (bash scripts/test does both)"
                )
            });
            (PathBuf::from(python), ["--peer", "rclpy", "--io", "ros2"])
        }
    };
    let out = Command::new(python)
        .arg(repo().join("hil-tests/tests/hardware/robot.py"))
        .args(["--reflex-hil", env!("CARGO_BIN_EXE_reflex-hil")])
        .args(args)
        .arg("--scenario")
        .arg(repo().join(format!("hil-tests/scenarios/{scenario}.toml")))
        .arg("--config")
        .arg(repo().join("runtime/tests/dds/reflex_dds.toml"))
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out.status.code().unwrap_or(-1), text)
}

fn estop_prompted_and_observed(peer: Peer) {
    let (code, text) = robot(peer, "estop_category_1", &[]);
    assert_eq!(code, 0, "{text}");
    for line in [
        "PROMPT in 3.0 s: EstopPressed: press the E-stop",
        "PROMPT NOW",
        "CHECK PASS StoppedWithin { after: EstopPressed",
        "CHECK PASS Vetoed { reason: \"estop_latched\" }",
        "CHECK PASS Moved",
        "RESULT estop_category_1 pass",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
}

fn fails_when_nobody_presses_the_estop(peer: Peer) {
    // The person ignores the prompt: the robot never stops, and the runner says so.
    let (code, text) = robot(peer, "estop_category_1", &["--ignore", "EstopPressed"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("CHECK FAIL StoppedWithin { after: EstopPressed"),
        "{text}"
    );
}

fn frozen_lidar_and_a_wall(peer: Peer) {
    let (code, text) = robot(peer, "lidar_freeze", &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("CHECK PASS Vetoed { reason: \"scan_stale\" }"),
        "{text}"
    );
    let (code, text) = robot(peer, "corridor_wall_adversarial", &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("CHECK PASS NoCollision"), "{text}");
}

#[cfg(feature = "dds")]
mod over_dds {
    use super::*;

    #[test]
    fn hardware_mode_estop_prompted_and_observed() {
        estop_prompted_and_observed(Peer::Cyclone);
    }

    #[test]
    fn hardware_mode_fails_when_nobody_presses_the_estop() {
        fails_when_nobody_presses_the_estop(Peer::Cyclone);
    }

    #[test]
    fn hardware_mode_injects_a_frozen_lidar_and_stops_short_of_a_wall() {
        frozen_lidar_and_a_wall(Peer::Cyclone);
    }
}

#[cfg(feature = "ros2")]
mod over_rcl {
    use super::*;

    #[test]
    fn hardware_mode_estop_prompted_and_observed() {
        estop_prompted_and_observed(Peer::Rclpy);
    }

    #[test]
    fn hardware_mode_fails_when_nobody_presses_the_estop() {
        fails_when_nobody_presses_the_estop(Peer::Rclpy);
    }

    #[test]
    fn hardware_mode_injects_a_frozen_lidar_and_stops_short_of_a_wall() {
        frozen_lidar_and_a_wall(Peer::Rclpy);
    }
}
