//! The port's ROS 2 messages encode byte for byte as ROS 2 does (golden files written by PyPI
//! `rosbags`, `tests/cdr/make_cdr_golden.py`) and decode those files back to the same values.

use std::path::Path;

use reflex_ros::port::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn header(sec: i32, nanosec: u32, frame: &str) -> Header {
    Header {
        stamp: Time { sec, nanosec },
        frame_id: frame.into(),
    }
}

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str, value: T) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cdr")
        .join(format!("{name}.cdr"));
    let golden = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with .venv/bin/python runtime/tests/cdr/make_cdr_golden.py",
            path.display()
        )
    });
    let ours = cdr::encode(&value).unwrap();
    assert_eq!(ours, golden, "{name}: our CDR differs from rosbags'");
    let back: T = cdr::decode(&golden).unwrap();
    assert_eq!(back, value, "{name}: decoding rosbags' CDR");
}

#[test]
fn every_message_matches_rosbags_byte_for_byte() {
    check(
        "laser_scan",
        LaserScan {
            header: header(12, 500_000_000, "laser"),
            angle_min: -3.125,
            angle_max: 3.125,
            angle_increment: 0.5,
            time_increment: 0.0,
            scan_time: 0.04,
            range_min: 0.05,
            range_max: 30.0,
            ranges: vec![1.5, 2.25, f32::INFINITY, 0.75],
            intensities: vec![],
        },
    );
    check(
        "joint_state",
        JointState {
            header: header(3, 7, "base"),
            name: vec!["shoulder".into(), "elbow".into()],
            position: vec![0.5, -1.25],
            velocity: vec![0.0, 0.125],
            effort: vec![],
        },
    );
    check(
        "image",
        Image {
            header: header(1, 2, "camera"),
            height: 2,
            width: 3,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: 9,
            data: (0..18).collect(),
        },
    );
    check(
        "string",
        StringMsg {
            data: "go to the red marker".into(),
        },
    );
    check("bool_true", BoolMsg { data: true });
    check("empty", Empty::default());
    check(
        "twist",
        TwistMsg {
            linear: Vector3 {
                x: 0.5,
                y: -0.25,
                z: 0.0,
            },
            angular: Vector3 {
                x: 0.0,
                y: 0.0,
                z: 1.125,
            },
        },
    );
    let v = |x, y, z| Vector3 { x, y, z };
    check(
        "twist_stamped",
        TwistStampedMsg {
            header: header(1_700_000_000, 250_000_000, "base_link"),
            twist: TwistMsg {
                linear: v(0.5, 0.0, 0.0),
                angular: v(0.0, 0.0, -0.75),
            },
        },
    );
    let mut pose_cov = [0.0; 36];
    let mut twist_cov = [0.0; 36];
    for i in 0..36 {
        pose_cov[i] = i as f64 / 8.0;
        twist_cov[i] = -(i as f64);
    }
    check(
        "odometry",
        Odometry {
            header: header(5, 6, "odom"),
            child_frame_id: "base_link".into(),
            pose: PoseWithCovariance {
                pose: Pose {
                    position: Point {
                        x: 1.0,
                        y: 2.0,
                        z: 0.0,
                    },
                    orientation: Quaternion {
                        x: 0.0,
                        y: 0.0,
                        z: 0.5,
                        w: 0.875,
                    },
                },
                covariance: Covariance(pose_cov),
            },
            twist: TwistWithCovariance {
                twist: TwistMsg {
                    linear: v(0.625, -0.125, 0.0),
                    angular: v(0.0, 0.0, 0.25),
                },
                covariance: Covariance(twist_cov),
            },
        },
    );
    check(
        "diagnostic_array",
        DiagnosticArray {
            header: header(100, 0, ""),
            status: vec![DiagnosticStatus {
                level: 2,
                name: "reflex: control loop".into(),
                message: "E-stop latched: robot stopped".into(),
                hardware_id: "robot-1".into(),
                values: vec![
                    KeyValue {
                        key: "ticks".into(),
                        value: "42".into(),
                    },
                    KeyValue {
                        key: "estop_latched".into(),
                        value: "true".into(),
                    },
                ],
            }],
        },
    );
}

#[test]
fn a_changed_field_is_caught() {
    // Negative control: the comparison can fail.
    let wrong = TwistMsg {
        linear: Vector3 {
            x: 0.5,
            y: -0.25,
            z: 0.0,
        },
        angular: Vector3 {
            x: 0.0,
            y: 0.0,
            z: 1.0,
        },
    };
    let golden =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cdr/twist.cdr")).unwrap();
    assert_ne!(cdr::encode(&wrong).unwrap(), golden);
    assert!(cdr::decode::<TwistMsg>(&[0x7f, 0, 0, 0, 1]).is_err());
}
