//! Hardware mode end to end without hardware: `reflex-hil hardware --io dds` drives a robot
//! made of PyPI `cyclonedds` (`tests/hardware/robot.py`: a base following /cmd_vel, a lidar
//! ray-cast against the scenario's set-up, the E-stop topic) whose "people" answer the runner's
//! prompts. Needs `--features dds`; `bash scripts/test` runs it.
#![cfg(feature = "dds")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn robot(scenario: &str, extra: &[&str]) -> (i32, String) {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `bash scripts/test` (it installs cyclonedds into .venv)",
        python.display()
    );
    let out = Command::new(python)
        .arg(repo().join("hil-tests/tests/hardware/robot.py"))
        .args(["--reflex-hil", env!("CARGO_BIN_EXE_reflex-hil")])
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
fn hardware_mode_estop_prompted_and_observed() {
    let (code, text) = robot("estop_category_1", &[]);
    println!("{text}");
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

#[test]
fn hardware_mode_fails_when_nobody_presses_the_estop() {
    // The person ignores the prompt: the robot never stops, and the runner says so.
    let (code, text) = robot("estop_category_1", &["--ignore", "EstopPressed"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("CHECK FAIL StoppedWithin { after: EstopPressed"),
        "{text}"
    );
}

#[test]
fn hardware_mode_injects_a_frozen_lidar_and_stops_short_of_a_wall() {
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
