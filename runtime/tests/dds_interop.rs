//! Wire-level ROS 2 interop of the `dds` adapter: the real `reflex run --io dds` binary, driven
//! as a black box by `tests/dds/harness.py` on PyPI `cyclonedds` (the DDS ROS 2 ships) with the
//! ROS 2 IDL types. Needs `--features dds`; `bash scripts/test` runs it.
#![cfg(feature = "dds")]

mod common;

use std::process::Command;

fn harness(extra: &[&str]) -> (i32, String) {
    run_harness("runtime/tests/dds/harness.py", extra)
}

fn run_harness(script: &str, extra: &[&str]) -> (i32, String) {
    let python = common::repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `bash scripts/test` (it installs cyclonedds into .venv)",
        python.display()
    );
    let out = Command::new(python)
        .arg(common::repo().join(script))
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
        "PASS SAF-013 release + reset without a start => still stopped",
        "PASS clear path => motion",
        "PASS obstacle 0.05 m ahead => stop",
        "PASS E-stop topic => stop",
        "PASS SAF-012 a 1 ms press => stop",
        "PASS SAF-012 ... and it stays latched after the release",
        "PASS motion on scans from the lidar process",
        "PASS scan publisher killed => stop",
        "PASS SAF-011 SIGTERM => the last command on the wire is zero",
        "PASS SAF-011 SIGTERM => clean exit",
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

fn scenario(name: &str, checks: &[&str]) {
    let (code, text) = harness(&["--scenario", name]);
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    for check in checks {
        assert!(text.contains(check), "{check}: {text}");
    }
}

/// SAF-011: the RT thread panics while the robot drives: the actuator gate sends zero within
/// two periods of the last verdict, ten zeros, then silence; `reflex` exits with an error.
#[test]
fn saf_011_rt_thread_death_gives_zero_then_silence_on_the_wire() {
    scenario(
        "rt-panic",
        &[
            "PASS SAF-011 rt-panic: zero on the wire",
            "PASS SAF-011 rt-panic: nothing but zero after it",
            "PASS SAF-011 rt-panic: then silence",
            "PASS SAF-011 rt-panic: reflex exits with an error",
        ],
    );
}

/// SAF-011: the RT thread stops ticking for 1 s (a stall, or starvation): zero within two
/// periods, and the supervisor's E-stop keeps the robot stopped afterwards until a reset.
#[test]
fn saf_011_rt_thread_stall_gives_zero_and_latches() {
    scenario(
        "rt-stall",
        &[
            "PASS SAF-011 rt-stall: zero on the wire",
            "PASS SAF-011 rt-stall: nothing but zero after it",
            "PASS SAF-011 rt-stall: latched after the stall",
            "PASS release + reset + start => motion after the stall",
        ],
    );
}

/// SAF-011: the whole process is stopped (SIGSTOP) and continued: no stale motion reaches the
/// wire, and Reflex exits with an error (restarted latched by the service manager).
#[test]
fn saf_011_sigstop_then_sigcont_sends_no_stale_motion_and_exits() {
    scenario(
        "sigstop",
        &[
            "PASS SAF-011 after SIGSTOP/SIGCONT: no motion on the wire",
            "PASS SAF-011 after SIGCONT: reflex exits with an error naming the stop",
        ],
    );
}

/// The shipped unit and config drive: `reflex run` exactly as launch/reflex.service starts it
/// (its ExecStart, launch/mobile_base.toml with the hardware E-stop heartbeat and require_rt).
#[test]
fn the_shipped_unit_and_config_drive_a_robot_and_stop_it() {
    scenario(
        "shipped",
        &[
            "PASS the unit's ExecStart maps onto this checkout",
            "PASS shipped: latched at start",
            "PASS SAF-013 release + reset without a start => still stopped",
            "PASS shipped: release + reset + start => motion",
            "PASS shipped: obstacle => stop",
            "PASS shipped: E-stop => stop",
            "PASS shipped: safety controller silent => stop",
            "PASS shipped: hardware E-stop pressed => stop",
            "PASS shipped: ... the heartbeat's 'clear' does not overwrite it",
        ],
    );
}

/// /odom (nav_msgs/Odometry from a Cyclone DDS drive) feeds the stopping distance, header
/// stamps older than `[ros] max_stamp_age_ms` are refused, and `cmd_vel_type =
/// "twist_stamped"` puts stamped commands on the wire (the plain `dds` build's default is Twist).
#[test]
fn odometry_feeds_the_stopping_distance_and_cmd_vel_can_be_stamped() {
    scenario(
        "odom",
        &[
            "PASS odometry required and fresh => motion",
            "PASS wall 1.6 m ahead, odometry = the commanded speed => still moving",
            "PASS odometry says 2.5 m/s (base sliding) => stop for the wall",
            "PASS ... and it stays stopped while odometry says 2.5 m/s",
            "PASS odometry back to the commanded speed, wall gone => motion",
            "PASS odometry header stamps 0.5 s old (bound 200 ms) => refused => stop",
            "PASS odometry header stamps 0.5 s in the future (bound 200 ms) => refused => stop",
            "PASS /diagnostics counts them",
            "PASS fresh odometry again => motion",
            "PASS odometry silent => stop",
            "PASS ... counted: inputs.odometry_lapses",
            "PASS odometry back => motion",
            "PASS cmd_vel_type = \"twist_stamped\", cmd_vel_stamp = \"send_time\": stamped when sent",
        ],
    );
}

/// The shipped launch/arm.toml drives an arm over DDS with the arm demo package (policy.json
/// schema 2): JointTrajectory to joint_trajectory_controller, Float64MultiArray to the
/// gripper's controller, every value inside the config's limits; latched start, E-stop, SAF-013,
/// the following-error stop (SAF-015), a refused joint state and the keep-out box (SAF-016,
/// forward kinematics of the shipped chain) and a person near the moving arm (SAF-017, the
/// shipped scanner config), against a Cyclone DDS arm.
#[test]
fn the_shipped_arm_config_drives_an_arm_through_ros2_control_topics() {
    let (code, text) = run_harness("runtime/tests/dds/arm_harness.py", &[]);
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    for check in [
        "PASS latched at start => no trajectory moves the arm",
        "PASS release + reset + start => the arm moves",
        "PASS the arm reaches the policy's pose",
        "PASS while moving, points carry velocities",
        "PASS gripper commands: one value inside [0.0, 0.08]",
        "PASS wrist camera covered => the policy holds the arm on its way",
        "PASS wrist camera uncovered => it moves on",
        "PASS wrist camera silent => no observation, the chunk runs out, the arm stops",
        "PASS wrist camera back => it moves on",
        "PASS Reflex counted the silent camera's observations as camera_unavailable",
        "PASS SAF-015 pushed back and held => protective stop, latched: it stays where it was left",
        "PASS reset + start => it restarts from where it was left",
        "PASS E-stop press => the arm stops",
        "PASS SAF-013 release + reset, no start => still stopped",
        "PASS start => moving again",
        "PASS joint_states without the wrist => refused => the arm stops",
        "PASS SAF-016 turned back toward the pose through the keep-out box => it stops before it",
        "PASS SAF-016 Reflex says on /diagnostics, while the arm stands, that the keep-out box holds it",
        "PASS SAF-016 every link of every commanded point",
        "PASS SAF-016 Reflex named the keep-out box as the reason it held the arm",
        "PASS SAF-017 a person inside what a still arm needs, beyond the moving arm's goal => it stops short of it",
        "PASS SAF-017 the person steps back to",
        "beyond the goal => it moves on (slowed)",
        "PASS SAF-017 the person leaves => the arm reaches its pose",
        "PASS SAF-017 Reflex named the person as the reason it stopped and slowed the arm",
        "PASS every trajectory",
    ] {
        assert!(text.contains(check), "{check}: {text}");
    }
}

#[test]
fn an_instruction_selects_the_packages_embedding_and_an_unknown_one_stops_the_arm() {
    let (code, text) = run_harness("runtime/tests/dds/language_harness.py", &[]);
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    for check in [
        "PASS Reflex runs the language package on arm.toml without cameras",
        "PASS release + reset + start => Reflex is running",
        "PASS no instruction yet => the arm does not move, and Reflex says so",
        "PASS \"Lower the arm.\" => shoulder and wrist up, elbow down",
        "PASS \"raise the arm\" => it reverses",
        "PASS \"wave hello\" (no embedding in the package) => the arm stops and stays",
        "PASS \"open the gripper!\" => the gripper opens",
        "PASS every trajectory",
        "PASS Reflex's summary counts 4 instructions, 1 unknown",
    ] {
        assert!(text.contains(check), "{check}: {text}");
    }
}
