//! Hardware mode end to end over rcl: `reflex-hil hardware --io ros2` (r2r) drives a robot made
//! of rclpy nodes of ROS 2 Jazzy on Fast DDS (`tests/hardware/robot.py --peer rclpy`: a base
//! following /cmd_vel, a lidar ray-cast against the scenario's set-up, the E-stop topic) whose
//! "people" answer the runner's prompts. Needs `--features ros2` and `.ros2/env.sh` sourced
//! (`scripts/setup-ros2`); `bash scripts/test` does both. Without it the tests fail and say so.
#![cfg(feature = "ros2")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn robot(scenario: &str, extra: &[&str]) -> (i32, String) {
    let python = std::env::var("REFLEX_ROS2_PYTHON").unwrap_or_else(|_| {
        panic!(
            "REFLEX_ROS2_PYTHON is not set: run `bash scripts/setup-ros2`, then `source .ros2/env.sh` before cargo (bash scripts/test does both)"
        )
    });
    let out = Command::new(python)
        .arg(repo().join("hil-tests/tests/hardware/robot.py"))
        .args(["--reflex-hil", env!("CARGO_BIN_EXE_reflex-hil")])
        .args(["--peer", "rclpy", "--io", "ros2"])
        .arg("--scenario")
        .arg(repo().join(format!("hil-tests/scenarios/{scenario}.toml")))
        .arg("--config")
        .arg(repo().join("runtime/tests/dds/reflex_dds.toml"))
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn hardware_mode_over_rcl_estop_prompted_and_observed() {
    let (code, text) = robot("estop_category_1", &[]);
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    for line in [
        "PROMPT NOW",
        "CHECK PASS StoppedWithin { after: EstopPressed",
        "CHECK PASS Vetoed { reason: \"estop_latched\" }",
        "CHECK PASS Moved",
        "RESULT estop_category_1 pass",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
}

#[test]
fn hardware_mode_over_rcl_fails_when_nobody_presses_the_estop() {
    let (code, text) = robot("estop_category_1", &["--ignore", "EstopPressed"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("CHECK FAIL StoppedWithin { after: EstopPressed"),
        "{text}"
    );
}

#[test]
fn hardware_mode_over_rcl_injects_a_frozen_lidar_and_stops_short_of_a_wall() {
    let (code, text) = robot("lidar_freeze", &[]);
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("CHECK PASS Vetoed { reason: \"scan_stale\" }"),
        "{text}"
    );
    let (code, text) = robot("corridor_wall_adversarial", &[]);
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("CHECK PASS NoCollision"), "{text}");
}
