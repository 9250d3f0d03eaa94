//! launch/ cannot drift from the config schema: every parameter a launch or params file sets
//! must be a key `reflex check-config` accepts (launch/check_launch_files.py, run here with the
//! real binary), and the check fails when a bad key is injected.

mod common;

use std::process::Command;

fn checker(extra: &[&str]) -> (bool, String) {
    let python = common::repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `bash scripts/test` (it creates .venv with ruamel.yaml via rosbags)",
        python.display()
    );
    let out = Command::new(python)
        .arg(common::repo().join("launch/check_launch_files.py"))
        .args(["--reflex", env!("CARGO_BIN_EXE_reflex")])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_launch_and_params_key_exists_in_the_config_schema() {
    let (ok, text) = checker(&[]);
    assert!(ok && text.contains("launch files ok"), "{text}");
}

#[test]
fn an_unknown_parameter_is_caught() {
    let (ok, text) = checker(&["--inject-bad-key"]);
    assert!(!ok, "{text}");
    assert!(text.contains("max_speeeed"), "{text}");
}
