//! launch/ cannot drift from the config schema: every parameter a launch or params file sets
//! must be a key `reflex check-config` accepts (launch/check_launch_files.py, run here with the
//! real binary), and the check fails when a bad key is injected. `jetson_clocks.service`
//! verifies with systemd's own checker (`systemd-analyze verify`).

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

/// `systemd-analyze verify` on a copy of launch/jetson_clocks.service (with reflex.service
/// beside it, which it orders itself before), ExecStart as given.
fn verify_jetson_clocks(exec_start: Option<&str>) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("reflex-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut unit =
        std::fs::read_to_string(common::repo().join("launch/jetson_clocks.service")).unwrap();
    if let Some(exec) = exec_start {
        assert!(
            unit.contains("ExecStart=/usr/bin/jetson_clocks\n"),
            "{unit}"
        );
        unit = unit.replace(
            "ExecStart=/usr/bin/jetson_clocks\n",
            &format!("ExecStart={exec}\n"),
        );
    }
    std::fs::write(dir.join("jetson_clocks.service"), unit).unwrap();
    std::fs::copy(
        common::repo().join("launch/reflex.service"),
        dir.join("reflex.service"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("jetson_clocks.service"))
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e}; it ships with systemd (Debian: apt-get install systemd)")
        });
    let _ = std::fs::remove_dir_all(&dir);
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
fn the_jetson_clocks_unit_is_valid_and_only_lacks_the_jetson_tool_here() {
    // As shipped, on this (non-Jetson) host: systemd's only complaint is the missing
    // /usr/bin/jetson_clocks, which L4T provides.
    let (ok, text) = verify_jetson_clocks(None);
    assert!(!ok, "{text}");
    let complaints: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !complaints.is_empty()
            && complaints
                .iter()
                .all(|l| l.contains("/usr/bin/jetson_clocks")),
        "{text}"
    );
    // With a tool there (as on a Jetson), the unit verifies clean.
    let (ok, text) = verify_jetson_clocks(Some("/bin/true"));
    assert!(ok && text.trim().is_empty(), "{text}");
}

#[test]
fn a_controller_file_that_lets_the_arm_run_on_is_caught() {
    // The shipped ros2_control file with JTC's command timeout off, and with the gripper
    // controller's joints not the ones arm.toml commands.
    let shipped =
        std::fs::read_to_string(common::repo().join("launch/ros2_control/arm_controllers.yaml"))
            .unwrap();
    let dir = std::env::temp_dir().join(format!("reflex-controllers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, from, to, expected) in [
        (
            "timeout",
            "cmd_timeout: 0.05",
            "cmd_timeout: 0.0",
            "never times out",
        ),
        (
            "joints",
            "joints: [gripper]",
            "joints: [finger]",
            "but gripper_controller.joints = ['finger']",
        ),
    ] {
        assert!(shipped.contains(from), "{from}");
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, shipped.replace(from, to)).unwrap();
        let (ok, text) = checker(&["--controllers", path.to_str().unwrap()]);
        assert!(!ok, "{name}: {text}");
        assert!(text.contains(expected), "{name}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
