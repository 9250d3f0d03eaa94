//! `reflex sim --robot arm` as a user runs it: the shipped launch/arm.toml and the two-camera
//! demo arm package (the defaults), through the production runner and the ROS port's own
//! observation assembly, with a person walking into the cell.

mod common;

use common::{ort_library, repo};
use std::process::{Command, Output};

fn reflex(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(args)
        .args(["--ort-library", ort_library().to_str().unwrap()])
        .args(["--metrics-bind", "127.0.0.1:0"])
        .current_dir(repo())
        .output()
        .expect("run reflex")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn the_shipped_arm_config_reaches_stops_for_a_person_and_moves_on() {
    let out = reflex(&["sim", "--robot", "arm", "--duration", "12", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v = summary(&out);
    println!("{v}");
    assert_eq!(
        v["joints"],
        serde_json::json!(["shoulder", "elbow", "wrist"])
    );
    // The demo's reach pose (shoulder, elbow, wrist rad; gripper m), reached after the person left.
    let goal = [0.8, -0.6, 1.2];
    let q: Vec<f64> = v["final_positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    for (k, (x, g)) in q.iter().zip(goal).enumerate() {
        assert!((x - g).abs() < 0.03, "joint {k} at {x}, pose {g}: {v}");
    }
    assert!((f(&v["final_gripper_m"]) - 0.06).abs() < 0.005, "{v}");
    assert_eq!(v["position_violations"], 0, "{v}");
    assert!(f(&v["peak_speed_ratio"]) <= 1.1, "{v}");
    // The person walking in stopped the arm; it stood still while they stood there (SAF-017),
    // moved on slowed as they walked away, and never touched them.
    assert!(
        v["vetoes"]["arm_separation"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    assert!(
        v["vetoes"]["arm_separation_slow"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    assert!(f(&v["peak_speed_ratio_while_person_stood"]) < 0.02, "{v}");
    // ... short of its pose (without SAF-017 it reaches it at about 2.5 s, before they leave).
    let wrist_left = f(&v["positions_when_person_left"][2]);
    assert!((wrist_left - goal[2]).abs() > 0.2, "{v}");
    // They stood where the pose puts the tool against them (the sphere's surface 5 mm from
    // their body): they walked up to the stopped arm, and no link touched them.
    assert!(f(&v["min_person_separation_m"]) > 0.0, "{v}");
    // Both cameras' frames went through the port (rgb8 320×240 and bgr8 160×120, preprocessed
    // as the package says), and every observation had both.
    let inputs = &v["inputs"];
    assert!(inputs["images"].as_u64().unwrap() > 100, "{v}");
    assert_eq!(inputs["images_refused"], 0, "{v}");
    assert_eq!(inputs["joint_states_refused"], 0, "{v}");
    assert_eq!(inputs["scans_refused"], 0, "{v}");
}

#[test]
fn an_arm_without_arm_config_or_with_an_unknown_instruction_is_refused_by_name() {
    let out = reflex(&[
        "sim",
        "--robot",
        "arm",
        "--config",
        "launch/reflex.example.toml",
        "--duration",
        "1",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("[safety.arm]"), "{}", text(&out));
    let out = reflex(&[
        "sim",
        "--robot",
        "arm",
        "--policy",
        "models/demo/tiny-language",
        "--instruction",
        "wave hello",
        "--duration",
        "1",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("\"wave hello\"") && t.contains("\"raise the arm\""),
        "{t}"
    );
}

#[test]
fn a_package_whose_model_makes_another_chunk_length_is_refused_at_start() {
    // The arm package says its chunks are 30 steps (0.6 s at 50 Hz); its model makes 25. Run,
    // the loop would time 25 actions as 30 (or read past them): refused before anything
    // moves, naming the output and both shapes.
    let dir = std::env::temp_dir().join(format!("reflex-arm-chunk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let source = repo().join("models/demo/reflex-demo-arm-reach");
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let policy = dir.join("policy.json");
    let mut p: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    assert_eq!(p["outputs"][0]["shape"], serde_json::json!([1, 25, 4]));
    p["outputs"][0]["shape"] = serde_json::json!([1, 30, 4]);
    p["chunk_horizon_s"] = 0.6.into();
    std::fs::write(&policy, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    let out = reflex(&[
        "sim",
        "--robot",
        "arm",
        "--policy",
        dir.to_str().unwrap(),
        "--duration",
        "2",
        "--json",
    ]);
    let t = text(&out);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("outputs `actions`")
            && t.contains("[1, 30, 4]")
            && t.contains("the model has [1, 25, 4]"),
        "{t}"
    );
}

#[test]
fn an_instruction_drives_the_language_package_on_the_simulated_arm() {
    let out = reflex(&[
        "sim",
        "--robot",
        "arm",
        "--policy",
        "models/demo/tiny-language",
        "--instruction",
        "Lower the arm.",
        "--duration",
        "1.5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v = summary(&out);
    let q: Vec<f64> = v["final_positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    // "lower the arm": shoulder and wrist up, elbow down.
    assert!(q[0] > 0.2 && q[1] < -0.2 && q[2] > 0.05, "{v}");
    assert_eq!(v["inputs"]["instructions"], 1, "{v}");
    assert_eq!(v["inputs"]["instructions_unknown"], 0, "{v}");
    assert_eq!(v["position_violations"], 0, "{v}");
}
