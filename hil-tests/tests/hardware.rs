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

/// How many E-stops Reflex latched for the host's timing in a run (`host_latches=` of its
/// RESULT line: watchdog trips and RT-thread stalls), 0 without the line.
fn host_latches(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("RESULT "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("host_latches="))
        })
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// `robot_once`, repeated (at most twice) when its exit status is not `expect` and Reflex
/// latched its E-stop for the host's timing meanwhile (a CI VM's steal starving the RT thread
/// past reflex_dds.toml's 3 deadlines in a row: the robot then stands, latched, as it must, and
/// a Moved check cannot hold). Any other outcome is final; every attempt is printed.
fn robot(peer: Peer, scenario: &str, extra: &[&str], expect: i32) -> (i32, String) {
    let mut attempt = 1;
    loop {
        let (code, text) = robot_once(peer, scenario, extra);
        let latches = host_latches(&text);
        if code == expect || latches == 0 || attempt == 3 {
            return (code, text);
        }
        println!(
            "HOST attempt {attempt} of {scenario}: exit {code} (expected {expect}) after Reflex latched {latches} E-stop(s) for the host's timing; repeated"
        );
        attempt += 1;
    }
}

fn robot_once(peer: Peer, scenario: &str, extra: &[&str]) -> (i32, String) {
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
    let (code, text) = robot(peer, "estop_category_1", &[], 0);
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
    let (code, text) = robot(peer, "estop_category_1", &["--ignore", "EstopPressed"], 1);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("CHECK FAIL StoppedWithin { after: EstopPressed"),
        "{text}"
    );
}

fn frozen_lidar_and_a_wall(peer: Peer) {
    let (code, text) = robot(peer, "lidar_freeze", &[], 0);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("CHECK PASS Vetoed { reason: \"scan_stale\" }"),
        "{text}"
    );
    let (code, text) = robot(peer, "corridor_wall_adversarial", &[], 0);
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

/// The repeat reads Reflex's own count; a RESULT line without it (or none) repeats nothing.
#[test]
fn host_latches_are_read_from_the_result_line() {
    let text = "CHECK FAIL Moved { m: 2.0 }\nRESULT estop_category_1 FAIL ticks=769 deadline_misses=13 host_latches=2 min_clearance_m=inf\n";
    assert_eq!(host_latches(text), 2);
    assert_eq!(
        host_latches("RESULT x FAIL ticks=1 deadline_misses=0 min_clearance_m=inf"),
        0
    );
    assert_eq!(host_latches("host_latches=5 outside a RESULT line"), 0);
}
