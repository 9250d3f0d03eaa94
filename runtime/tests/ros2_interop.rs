//! ROS 2 Jazzy (rcl from PyPI wheels, Fast DDS) peers drive the real `reflex` binary as a black
//! box: `tests/ros2/harness.py` runs rclpy nodes that play the robot, against `reflex run
//! --io ros2` (r2r over rcl) and `reflex run --io dds` (RustDDS talking to Fast DDS). Needs
//! `--features ros2,dds` and the environment of `.ros2/env.sh` (`scripts/setup-ros2`);
//! `bash scripts/test` does both. Without that environment every test fails and says how to get
//! it: never a silent skip.
#![cfg(all(feature = "ros2", feature = "dds"))]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to its end, or kills it after `timeout` (a hung peer must not hang CI); its
/// exit code (-1 when killed) and its stdout + stderr.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (i32, String) {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let [out, err] = pipes;
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    if code == -1 {
        return (
            code,
            format!("killed after {timeout:?} (or by a signal):\n{text}"),
        );
    }
    (code, text)
}

fn harness(io: &str, scenario: &str, extra: &[&str]) -> (i32, String) {
    let python = std::env::var("REFLEX_ROS2_PYTHON").unwrap_or_else(|_| {
        panic!(
            "REFLEX_ROS2_PYTHON is not set: these tests need ROS 2 Jazzy; run `bash scripts/setup-ros2`, then `source .ros2/env.sh` before cargo (bash scripts/test does both)"
        )
    });
    assert!(
        std::path::Path::new(&python).is_file(),
        "REFLEX_ROS2_PYTHON={python} does not exist: re-run `bash scripts/setup-ros2` and source the .ros2/env.sh it prints"
    );
    let mut cmd = Command::new(&python);
    cmd.arg(common::repo().join("runtime/tests/ros2/harness.py"))
        .args(["--reflex", env!("CARGO_BIN_EXE_reflex")])
        .args(["--io", io, "--scenario", scenario])
        .args(extra)
        .env("ORT_DYLIB_PATH", common::ort_library());
    let (code, text) = run_with_timeout(cmd, Duration::from_secs(300));
    println!("{text}");
    (code, text)
}

fn assert_passed(code: i32, text: &str, checks: &[&str]) {
    assert_eq!(code, 0, "{text}");
    for check in checks {
        assert!(text.contains(&format!("PASS {check}")), "{check}: {text}");
    }
}

const BASIC: &[&str] = &[
    "Reflex appears in the rclpy graph as /reflex",
    "E-stop latched before start keeps the robot stopped (the press arrived",
    "/diagnostics says ERROR 'E-stop latched' while latched",
    "clear path => motion",
    "obstacle 0.05 m ahead => stop",
    "obstacle gone => motion again",
    "SAF-013 release + reset without a start => still stopped",
    "E-stop topic => stop",
    "release + reset => motion",
    "/diagnostics while running",
    "/cmd_vel is TwistStamped (Jazzy's default) with a zero stamp",
    "SAF-012 a 1 ms press => stop",
    "SAF-012 ... and it stays latched after the release",
    "release + reset + start => motion after the short press",
    "motion on scans from the lidar process",
    "lidar process killed => stop within",
    "SAF-011 SIGTERM => the last command on the wire is zero",
    "SAF-011 SIGTERM => clean exit",
];

#[test]
fn ros2_adapter_obeys_rclpy_robot() {
    let (code, text) = harness("ros2", "basic", &[]);
    assert_passed(code, &text, BASIC);
    for check in [
        "~/reset_estop while pressed answers success=false",
        "~/reset_estop (std_srvs/Trigger) after release answers success",
        "~/start (std_srvs/Trigger) after the reset answers success",
    ] {
        assert!(text.contains(&format!("PASS {check}")), "{check}: {text}");
    }
}

#[test]
fn dds_adapter_obeys_rclpy_robot_on_fast_dds() {
    let (code, text) = harness("dds", "basic", &[]);
    assert_passed(code, &text, BASIC);
}

#[test]
fn ros2_adapter_follows_ros_args_remaps_and_namespace() {
    let (code, text) = harness("ros2", "remap", &[]);
    assert_passed(
        code,
        &text,
        &[
            "--ros-args -r __node:= -r __ns:= => the node is /robot1/base_safety",
            "no node named /reflex",
            "the reset service moved with the node",
            "-r /scan:=/front_lidar/scan => motion",
            "/diagnostics hardware_id is the remapped node's name",
        ],
    );
}

#[test]
fn ros2_adapter_takes_the_shipped_params_file() {
    let (code, text) = harness("ros2", "params", &[]);
    assert_passed(
        code,
        &text,
        &[
            "the params file's values are the node's parameters, seen from rclpy",
            "scans and camera on the params file's topics => motion",
            "SAF-014 -p safety.base.max_vx_mps:=5.0 is refused at start",
        ],
    );
}

#[test]
fn ros2_adapter_takes_the_shipped_arm_config_and_params_file() {
    let (code, text) = harness("ros2", "params-arm", &[]);
    assert_passed(
        code,
        &text,
        &[
            "the node is /reflex_arm",
            "arm.yaml's values are the node's parameters",
            "Reflex subscribes both cameras arm.yaml names",
            "and not arm.toml's [ros.cameras] topics nor the default /camera/image_raw",
            "release + ~/reset_estop + ~/start => JointTrajectory with velocities reaches the rclpy arm",
            "the arm reaches the policy's pose",
            "every JointTrajectory",
            "gripper Float64MultiArray",
            "joint states and both cameras' frames reached Reflex, joint commands left it",
        ],
    );
}

#[test]
fn the_shipped_launch_files_command_lines_drive_an_rclpy_robot() {
    // launch/reflex.launch.py and .xml, read as launch_ros reads them (the wheels have no
    // `ros2 launch`): their command line, name, namespace, params and remappings.
    let (code, text) = harness("ros2", "launch", &[]);
    let mut checks = Vec::new();
    for file in ["reflex.launch.py", "reflex.launch.xml"] {
        for check in [
            "the command is `reflex run --io ros2 --config … --ros-args …`",
            "the node is /robot1/reflex",
            "release + reset (its ~/reset_estop) => motion",
            "its parameters reached the node ([False, '/cmd_vel'])",
        ] {
            checks.push(format!("{file}: {check}"));
        }
    }
    let checks: Vec<&str> = checks.iter().map(String::as_str).collect();
    assert_passed(code, &text, &checks);
}

#[test]
fn the_harness_fails_when_the_scan_type_is_wrong() {
    // Negative control, both adapters: scans of another type on /scan never match Reflex's
    // subscription, so the robot never moves and the motion check fails.
    for io in ["ros2", "dds"] {
        let (code, text) = harness(io, "wrong-type", &[]);
        assert_eq!(code, 3, "{io}: {text}");
        assert!(text.contains("FAIL clear path => motion"), "{io}: {text}");
    }
}

#[test]
fn estop_presses_stop_the_robot_on_both_adapters() {
    // 20 presses at random phase (the 200-press measurement is scripts/bench-ros2): every one
    // stops the robot, the median and p90 within a few periods.
    for io in ["ros2", "dds"] {
        let (code, text) = harness(io, "measure", &["--presses", "20"]);
        assert_passed(
            code,
            &text,
            &[
                "every one of 20 presses stopped the robot",
                "E-stop => zero /cmd_vel: p50",
            ],
        );
    }
}

#[test]
fn a_bad_ros_environment_is_refused_with_the_fix() {
    // rcl would panic inside r2r, RustDDS would join another domain: both refuse, naming it.
    for io in ["ros2", "dds"] {
        let out = Command::new(env!("CARGO_BIN_EXE_reflex"))
            .args(["run", "--io", io, "--duration", "1", "--config"])
            .arg(common::repo().join("runtime/tests/dds/reflex_dds.toml"))
            .arg("--policy")
            .arg(common::repo().join("models/demo/reflex-demo-vla"))
            .env("ORT_DYLIB_PATH", common::ort_library())
            .env("ROS_DOMAIN_ID", "robot7")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{io}: {err}");
        assert!(
            err.contains("ROS_DOMAIN_ID=\"robot7\": expected a number 0-232"),
            "{io}: {err}"
        );
        assert!(!err.contains("panicked"), "{io}: {err}");
    }
}

/// SAF-011 on the `ros2` adapter (r2r over rcl) with an rclpy robot: the RT thread killed, then
/// stalled for 1 s, while driving: zero within two periods of the last verdict (the zero's
/// source timestamp), then silence (panic) or a latched stop (stall).
#[test]
fn saf_011_rt_thread_faults_on_the_ros2_adapter() {
    for (scenario, checks) in [
        (
            "rt-panic",
            &[
                "SAF-011 rt-panic: zero on the wire",
                "SAF-011 rt-panic: nothing but zero after it",
                "SAF-011 rt-panic: then silence",
                "SAF-011 rt-panic: reflex exits with an error",
            ][..],
        ),
        (
            "rt-stall",
            &[
                "SAF-011 rt-stall: zero on the wire",
                "SAF-011 rt-stall: nothing but zero after it",
                "SAF-011 rt-stall: latched after the stall",
                "release + reset + start => motion after the stall",
            ][..],
        ),
    ] {
        let (code, text) = harness("ros2", scenario, &[]);
        assert_eq!(code, 0, "{scenario}: {text}");
        for check in checks {
            assert!(text.contains(&format!("PASS {check}")), "{check}: {text}");
        }
    }
}

const ODOM: &[&str] = &[
    "cmd_vel_type = \"twist\": Twist on /cmd_vel; odometry fresh => motion",
    "wall 1.6 m ahead, odometry = the commanded speed => still moving",
    "odometry says 2.5 m/s (base sliding) => stop for the wall",
    "... and it stays stopped while odometry says 2.5 m/s",
    "odometry back to the commanded speed, wall gone => motion",
    "odometry header stamps 0.5 s old (bound 200 ms) => refused => stop",
    "odometry header stamps 0.5 s in the future (bound 200 ms) => refused => stop",
    "/diagnostics counts them",
    "fresh odometry again => motion",
    "odometry silent => stop",
    "... counted: inputs.odometry_lapses",
    "odometry back => motion",
];

/// /odom (nav_msgs/Odometry from an rclpy drive) feeds the stopping distance and stale header
/// stamps are refused, on both adapters; `[ros] cmd_vel_type = "twist"` overrides Jazzy's
/// TwistStamped default (which every other scenario here runs with).
#[test]
fn odometry_feeds_the_stopping_distance_on_both_adapters() {
    for io in ["ros2", "dds"] {
        let (code, text) = harness(io, "odom", &[]);
        println!("{io}: {text}");
        assert_passed(code, &text, ODOM);
    }
}

/// SAF-012 with a second E-stop publisher (an rclpy pendant that keeps saying "clear") on the
/// robot's E-stop topic: under `dds` (one state per publisher GID) it cannot hide the first
/// pendant's press; under `ros2` (r2r does not give a message's publisher) the device counts as
/// unknown, and resets are refused naming the fix, until the second publisher is gone.
#[test]
fn saf_012_a_second_publisher_on_the_estop_topic_cannot_hide_a_press() {
    let (code, text) = harness("dds", "pendants", &[]);
    assert_passed(
        code,
        &text,
        &[
            "two pendants, both clear => motion",
            "pendant A pressed => stop",
            "SAF-012 pendant B's 'clear' does not overwrite A's press",
            "A released + reset + start => motion",
        ],
    );
    let (code, text) = harness("ros2", "pendants", &[]);
    assert_passed(
        code,
        &text,
        &[
            "SAF-012 ros2: two publishers on one E-stop topic",
            "... ~/reset_estop refuses, naming the fix",
            "... /diagnostics: inputs.estop_ambiguous_devices = 1",
            "pendant B gone => release + reset + start => motion",
        ],
    );
}
