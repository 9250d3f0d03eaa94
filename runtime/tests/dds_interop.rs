//! Wire-level ROS 2 interop of the `dds` adapter: the real `reflex run --io dds` binary, driven
//! as a black box by `tests/dds/harness.py` on PyPI `cyclonedds` (the DDS ROS 2 ships) with the
//! ROS 2 IDL types. Needs `--features dds`; `bash scripts/test` runs it.
#![cfg(feature = "dds")]

mod common;

use std::process::Command;

fn harness(extra: &[&str]) -> (i32, String) {
    let python = common::repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `bash scripts/test` (it installs cyclonedds into .venv)",
        python.display()
    );
    let out = Command::new(python)
        .arg(common::repo().join("runtime/tests/dds/harness.py"))
        .args(["--reflex", env!("CARGO_BIN_EXE_reflex")])
        .args(extra)
        .env("ORT_DYLIB_PATH", common::ort_library())
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
fn reflex_on_dds_obeys_ros_topics_from_cyclone_dds() {
    let (code, text) = harness(&[]);
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    for check in [
        "PASS Reflex appears in the ROS graph as a node",
        "PASS E-stop latched before start keeps the robot stopped",
        "PASS clear path => motion",
        "PASS obstacle 0.05 m ahead => stop",
        "PASS E-stop topic => stop",
        "PASS motion on scans from the lidar process",
        "PASS scan publisher killed => stop",
    ] {
        assert!(text.contains(check), "{check}: {text}");
    }
}

#[test]
fn the_harness_fails_when_the_scan_type_name_is_wrong() {
    // Negative control: scans under a wrong DDS type name never match Reflex's reader, so the
    // robot never moves and the motion check fails.
    let (code, text) = harness(&["--wrong-scan-type"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("FAIL clear path => motion"), "{text}");
}
