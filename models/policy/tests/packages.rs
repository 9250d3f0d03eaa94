//! Policy packages and the ONNX Runtime backend against the real library from the PyPI wheel
//! (`ORT_DYLIB_PATH`, set by scripts/test; falls back to the repo's .venv).

use std::path::{Path, PathBuf};

use reflex_policy::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config() -> BackendConfig {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo().join(
                ".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1",
            )
        });
    assert!(
        path.is_file(),
        "ONNX Runtime not found at {}: run `bash scripts/test` (it runs scripts/setup-python) or set ORT_DYLIB_PATH",
        path.display()
    );
    BackendConfig {
        ort_library: Some(path),
        ..BackendConfig::default()
    }
}

fn demo() -> PolicyPackage {
    PolicyPackage::open(&repo().join("models/demo/reflex-demo-vla")).unwrap()
}

/// A scratch copy of a demo package that a test may break.
fn scratch(name: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reflex-models-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "policy.json",
        "golden.json",
        "model.onnx",
        "model.onnx.data",
        "instructions.npy",
    ] {
        let from = repo().join("models/demo").join(name).join(f);
        if from.exists() {
            std::fs::copy(from, dir.join(f)).unwrap();
        }
    }
    dir
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("policy.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn red_blob_at(column: i32, colour: [u8; 3]) -> Vec<u8> {
    let mut img = vec![90u8; 3 * 96 * 96];
    for y in 0..96i32 {
        for x in 0..96i32 {
            if (y - 48).pow(2) + (x - column).pow(2) <= 100 {
                for (c, value) in colour.iter().enumerate() {
                    img[c * 96 * 96 + (y * 96 + x) as usize] = *value;
                }
            }
        }
    }
    img
}

#[test]
fn demo_package_verifies_and_reproduces_its_golden_pairs() {
    for name in [
        "reflex-demo-vla",
        "tiny-mlp",
        "reflex-demo-arm-reach",
        "tiny-flow",
        "tiny-mlp-external",
        "tiny-language",
    ] {
        let package = PolicyPackage::open(&repo().join("models/demo").join(name)).unwrap();
        let external = package.manifest.targets[0].external_data.len()
            + usize::from(package.manifest.instruction_embeddings.is_some());
        assert_eq!(package.verify_files().unwrap(), 2 + external, "{name}");
        let mut backend = OrtBackend::load(&package, &config()).unwrap();
        let report = backend
            .check_golden(&package.golden_pairs().unwrap())
            .unwrap();
        assert!(
            report.pairs >= 3 && report.max_abs_error <= 1e-4,
            "{name}: {report:?}"
        );
        assert_eq!(backend.describe().provider, "cpu");
    }
}

#[test]
fn the_instruction_selects_the_goal_and_the_image_steers() {
    let package = demo();
    let mut backend = OrtBackend::load(&package, &config()).unwrap();
    backend.warm_up(2).unwrap();
    let mut obs = package.manifest.observation();
    let mut chunk = package.manifest.action_chunk();
    assert_eq!((chunk.horizon, chunk.dims), (20, 3));
    // A red marker on the left, asked for red: turn left (wz > 0) and drive.
    obs.images = vec![ImageData::U8(red_blob_at(20, [220, 30, 30]))];
    package
        .manifest
        .tokenize("Go to the RED marker.", &mut obs.instruction);
    obs.t_obs_ns = 42;
    backend.infer(&obs, &mut chunk).unwrap();
    let last = chunk.step(19);
    assert!(last[2] > 0.3 && last[0] > 0.05, "{last:?}");
    assert_eq!(chunk.t_obs_ns, 42);
    assert_eq!(chunk.model_digest, package.model_digest());
    // The same picture, asked for blue: not visible, so rotate in place to search.
    package
        .manifest
        .tokenize("go to the blue marker", &mut obs.instruction);
    backend.infer(&obs, &mut chunk).unwrap();
    let last = chunk.step(19);
    assert!(
        last[0].abs() < 0.01 && (last[2] - 0.4).abs() < 0.01,
        "{last:?}"
    );
    // A blue marker on the right, asked for blue: turn right.
    obs.images = vec![ImageData::U8(red_blob_at(76, [30, 40, 220]))];
    backend.infer(&obs, &mut chunk).unwrap();
    assert!(chunk.step(19)[2] < -0.3, "{:?}", chunk.step(19));
    // The chunk starts at the measured velocity (state, physical units) and blends in.
    obs.state = vec![0.5, 0.0, 0.0];
    backend.infer(&obs, &mut chunk).unwrap();
    assert!((chunk.step(0)[0] - (0.5 + 0.2 * (chunk.step(19)[0] - 0.5))).abs() < 1e-4);
}

#[test]
fn a_tampered_file_is_refused_by_digest() {
    let dir = scratch("tiny-mlp", "tampered");
    let mut bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(dir.join("model.onnx"), &bytes).unwrap();
    let package = PolicyPackage::open(&dir).unwrap();
    let err = package.verify_files().unwrap_err().to_string();
    assert!(
        err.contains("digest mismatch") && err.contains("model.onnx"),
        "{err}"
    );
    let err = OrtBackend::load(&package, &config())
        .unwrap_err()
        .to_string();
    assert!(err.contains("digest mismatch"), "{err}");
}

#[test]
fn a_truncated_model_is_a_clear_error() {
    let dir = scratch("tiny-mlp", "truncated");
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    std::fs::write(dir.join("model.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    let digest = sha256_file(&dir.join("model.onnx")).unwrap();
    edit_manifest(&dir, |v| v["targets"][0]["sha256"] = digest.into());
    let package = PolicyPackage::open(&dir).unwrap();
    package.verify_files().unwrap();
    let err = OrtBackend::load(&package, &config())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.onnx") && err.contains("not a loadable ONNX model"),
        "{err}"
    );
}

#[test]
fn schema_invalid_manifests_name_the_file_and_field() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "unknown",
            Box::new(|v| v["colour"] = "red".into()),
            "unknown field `colour`",
        ),
        (
            "version",
            Box::new(|v| v["version"] = "one".into()),
            "field `version`",
        ),
        (
            "schema",
            Box::new(|v| v["schema_version"] = 0.into()),
            "field `schema_version`",
        ),
        (
            "shape",
            Box::new(|v| v["outputs"][0]["shape"] = serde_json::json!([1, 10, 3])),
            "field `outputs[0].shape`",
        ),
        (
            "stats",
            Box::new(|v| v["normalization"]["state"]["std"] = serde_json::json!([1.0])),
            "field `normalization.state.std`",
        ),
        (
            "nostats",
            Box::new(|v| v["normalization"]["action"] = serde_json::json!({})),
            "missing normalization statistics",
        ),
        (
            "axis",
            Box::new(|v| v["action_space"][1]["drives"] = "base_vz".into()),
            "field `action_space[1].drives`",
        ),
        (
            "escape",
            Box::new(|v| v["targets"][0]["file"] = "../model.onnx".into()),
            "field `targets[0].file`",
        ),
        (
            "dtype",
            Box::new(|v| v["inputs"][0]["dtype"] = "int64".into()),
            "field `inputs[0].dtype`",
        ),
    ];
    for (name, edit, expected) in cases {
        let dir = scratch("reflex-demo-vla", &format!("schema-{name}"));
        edit_manifest(&dir, edit);
        let err = PolicyPackage::open(&dir).unwrap_err().to_string();
        assert!(
            err.contains("policy.json") && err.contains(expected),
            "{name}: {err}"
        );
    }
    // Schema 2 (the arm package): state sources, one per state entry, and joint names.
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "v1-joints",
            Box::new(|v| {
                v["schema_version"] = 1.into();
                let inputs = v["inputs"].as_array_mut().unwrap();
                inputs.remove(1);
                inputs[0].as_object_mut().unwrap().remove("preprocess");
            }),
            "field `action_space[0].drives`",
        ),
        (
            "v1-preprocess",
            Box::new(|v| v["schema_version"] = 1.into()),
            "field `inputs[0].preprocess`: needs schema_version 2",
        ),
        (
            "v1-two-cameras",
            Box::new(|v| {
                v["schema_version"] = 1.into();
                for i in 0..2 {
                    v["inputs"][i].as_object_mut().unwrap().remove("preprocess");
                }
            }),
            "field `inputs[1].role`: schema 1 takes one image input",
        ),
        (
            "v2-uint8-mean",
            Box::new(|v| v["inputs"][0]["preprocess"]["mean"] = serde_json::json!([0.5, 0.5, 0.5])),
            "field `inputs[0].preprocess.mean`: a uint8 image input takes the camera's bytes",
        ),
        (
            "v2-layout",
            Box::new(|v| v["inputs"][1]["preprocess"]["layout"] = "nchw".into()),
            "field `inputs[1].shape`: [1, 48, 48, 3]: a Nchw image input has 3 (RGB) channels at axis 1",
        ),
        (
            "v2-std",
            Box::new(|v| v["inputs"][1]["preprocess"]["std"][2] = 0.into()),
            "field `inputs[1].preprocess.std[2]`: must be finite and > 0",
        ),
        (
            "v2-fit",
            Box::new(|v| v["inputs"][1]["preprocess"]["fit"] = "zoom".into()),
            "unknown variant `zoom`",
        ),
        (
            "v2-state-preprocess",
            Box::new(|v| v["inputs"][2]["preprocess"] = serde_json::json!({})),
            "field `inputs[2].preprocess`: only image inputs have a preprocess",
        ),
        (
            "v2-nosources",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("state_sources");
            }),
            "field `state_sources`: schema 2 needs one source per state entry (4 for input `state`)",
        ),
        (
            "v2-short",
            Box::new(|v| v["state_sources"].as_array_mut().unwrap().truncate(3)),
            "has 3 entries, input `state` has 4 state values",
        ),
        (
            "v2-twice",
            Box::new(|v| v["state_sources"][1] = "joint_position/shoulder".into()),
            "field `state_sources[1]`: `joint_position/shoulder` appears twice",
        ),
        (
            "v2-spelling",
            Box::new(|v| v["state_sources"][3] = "gripper".into()),
            "field `state_sources[3]`: `gripper` is not a state source",
        ),
        (
            "v2-relative-velocity",
            Box::new(|v| {
                v["action_space"][0]["drives"] = "joint_velocity/shoulder".into();
                v["action_space"][0]["relative"] = true.into();
            }),
            "field `action_space[0].relative`: `joint_velocity/shoulder` cannot be relative",
        ),
        (
            "v2-relative-unmeasured",
            Box::new(|v| {
                v["action_space"][3]["relative"] = true.into();
                v["state_sources"][3] = "joint_velocity/shoulder".into();
            }),
            "field `action_space[3].relative`: `gripper` is an offset from `gripper_position`, which is not among state_sources",
        ),
        (
            "v3",
            Box::new(|v| v["schema_version"] = 3.into()),
            "reads schemas [1, 2], the package has 3",
        ),
    ];
    for (name, edit, expected) in cases {
        let dir = scratch("reflex-demo-arm-reach", &format!("schema-{name}"));
        edit_manifest(&dir, edit);
        let err = PolicyPackage::open(&dir).unwrap_err().to_string();
        assert!(
            err.contains("policy.json") && err.contains(expected),
            "{name}: {err}"
        );
    }
}

#[test]
fn the_arm_package_binds_to_joints_by_name_and_refuses_a_robot_without_them() {
    use reflex_core::actions::{ActionTarget, RobotShape, StateSource};
    let package = PolicyPackage::open(&repo().join("models/demo/reflex-demo-arm-reach")).unwrap();
    let m = &package.manifest;
    let arm = RobotShape {
        has_base: false,
        joints: ["base_yaw", "shoulder", "elbow", "wrist"]
            .map(String::from)
            .to_vec(),
        has_gripper: true,
    };
    let (targets, sources) = m.resolve(&arm).unwrap();
    assert_eq!(
        targets,
        [
            ActionTarget::JointPosition(1),
            ActionTarget::JointPosition(2),
            ActionTarget::JointPosition(3),
            ActionTarget::Gripper
        ]
    );
    assert_eq!(sources[0], StateSource::JointPosition(1));
    assert_eq!(sources[3], StateSource::GripperPosition);
    let no_gripper = RobotShape {
        has_gripper: false,
        ..arm.clone()
    };
    let e = m.resolve(&no_gripper).unwrap_err().to_string();
    assert!(
        e.contains("action_space[3].drives") && e.contains("no gripper"),
        "{e}"
    );
    let base = RobotShape {
        has_base: true,
        joints: vec![],
        has_gripper: false,
    };
    let e = m.resolve(&base).unwrap_err().to_string();
    assert!(
        e.contains("action_space[0].drives") && e.contains("no arm"),
        "{e}"
    );
    // And the base demo on an arm-only robot: its base axes go nowhere, refused.
    let e = demo().manifest.resolve(&arm).unwrap_err().to_string();
    assert!(
        e.contains("action_space[0].drives") && e.contains("no base"),
        "{e}"
    );
    // The hot-swap contract names the first field that differs.
    let mut other = m.clone();
    other.chunk_horizon_s *= 2.0;
    assert_eq!(m.contract_difference(&other), Some("chunk_horizon_s"));
    let mut other = m.clone();
    other.state_sources.as_mut().unwrap().swap(0, 1);
    assert_eq!(m.contract_difference(&other), Some("state_sources"));
    assert_eq!(m.contract_difference(m), None);
}

/// A uniform `w × h` rgb8 (or bgr8) camera frame of `pixel`.
fn camera(w: usize, h: usize, pixel: u8) -> Vec<u8> {
    vec![pixel; w * h * 3]
}

#[test]
fn two_cameras_of_other_sizes_reach_the_arm_policy_through_their_preprocess() {
    use reflex_policy::image::{RgbFrame, fill_image};
    let package = PolicyPackage::open(&repo().join("models/demo/reflex-demo-arm-reach")).unwrap();
    let m = &package.manifest;
    let specs: Vec<_> = m.image_inputs().collect();
    assert_eq!(
        specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["front", "wrist"]
    );
    let mut backend = OrtBackend::load(&package, &config()).unwrap();
    let mut obs = m.observation();
    obs.state.copy_from_slice(&[0.0, 0.0, 0.0, 0.0]);
    // A 640×480 front camera (letterboxed into 64×64) and a 320×240 bgr8 wrist camera
    // (center-cropped into 48×48 NHWC float32, ImageNet-normalized).
    let run =
        |backend: &mut OrtBackend, obs: &mut reflex_policy::Observation, front: u8, wrist: u8| {
            let f = camera(640, 480, front);
            let w = camera(320, 240, wrist);
            let frames = [
                RgbFrame {
                    width: 640,
                    height: 480,
                    step: 1920,
                    bgr: false,
                    data: &f,
                },
                RgbFrame {
                    width: 320,
                    height: 240,
                    step: 960,
                    bgr: true,
                    data: &w,
                },
            ];
            for (i, frame) in frames.iter().enumerate() {
                assert!(fill_image(frame, specs[i], &mut obs.images[i]));
            }
            let mut chunk = m.action_chunk();
            backend.infer(obs, &mut chunk).unwrap();
            chunk
        };
    let moving = run(&mut backend, &mut obs, 120, 120);
    // Toward the goal [0.8, -0.6, 1.2, 0.06] by 0.5 rad/s at 50 Hz: 0.01 rad in the first step.
    assert!(
        (moving.step(0)[0] - 0.01).abs() < 1e-5,
        "{:?}",
        moving.step(0)
    );
    assert!(
        (moving.step(0)[1] + 0.01).abs() < 1e-5,
        "{:?}",
        moving.step(0)
    );
    // The letterbox's black bars do not make a lit front camera dark.
    let reflex_policy::ImageData::U8(front) = &obs.images[0] else {
        panic!("front is uint8")
    };
    assert_eq!(
        (front[0], front[32 * 64 + 32]),
        (0, 120),
        "bars, then the picture"
    );
    let reflex_policy::ImageData::F32(wrist) = &obs.images[1] else {
        panic!("wrist is float32")
    };
    assert!(
        (wrist[0] - (120.0 / 255.0 - 0.485) / 0.229).abs() < 1e-5,
        "{}",
        wrist[0]
    );
    // Either camera covered: the policy holds where the arm is.
    for (front, wrist) in [(5, 120), (120, 5)] {
        let held = run(&mut backend, &mut obs, front, wrist);
        assert!(
            held.actions.iter().all(|a| a.abs() < 1e-6),
            "front {front}, wrist {wrist}: {:?}",
            held.step(0)
        );
    }
}

#[test]
fn manifest_and_model_disagreeing_is_refused_at_load() {
    // Consistent manifest (H = 20 steps), but it claims an input shape the model does not have.
    let dir = scratch("reflex-demo-vla", "mismatch");
    edit_manifest(&dir, |v| {
        v["inputs"][1]["shape"] = serde_json::json!([1, 4])
    });
    edit_manifest(
        &dir,
        |v| {
            v["normalization"]["state"] =
                serde_json::json!({"mean": [0.0, 0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0, 1.0]})
        },
    );
    let package = PolicyPackage::open(&dir).unwrap();
    let err = OrtBackend::load(&package, &config())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("inputs `state`") && err.contains("[1, 4]") && err.contains("[1, 3]"),
        "{err}"
    );
    // Renamed input.
    let dir = scratch("reflex-demo-vla", "renamed");
    edit_manifest(&dir, |v| v["inputs"][2]["name"] = "prompt".into());
    let package = PolicyPackage::open(&dir).unwrap();
    let err = OrtBackend::load(&package, &config())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`instruction`") && err.contains("does not declare"),
        "{err}"
    );
}

#[test]
fn wrong_observations_at_run_time_are_errors_not_crashes() {
    let package = demo();
    let mut backend = OrtBackend::load(&package, &config()).unwrap();
    let mut chunk = package.manifest.action_chunk();
    let before = chunk.clone();
    let mut obs = package.manifest.observation();
    obs.images = vec![ImageData::F32(vec![0.0; 3 * 96 * 96])];
    let err = backend.infer(&obs, &mut chunk).unwrap_err().to_string();
    assert!(
        err.contains("input `image`") && err.contains("wrong dtype"),
        "{err}"
    );
    let mut obs = package.manifest.observation();
    obs.images = vec![ImageData::U8(vec![0; 10])];
    let err = backend.infer(&obs, &mut chunk).unwrap_err().to_string();
    assert!(
        err.contains("input `image`") && err.contains("27648"),
        "{err}"
    );
    let mut obs = package.manifest.observation();
    obs.state.push(1.0);
    assert!(backend.infer(&obs, &mut chunk).is_err());
    assert_eq!(
        chunk, before,
        "a failed inference leaves the chunk untouched"
    );
}

#[test]
fn relative_actions_are_offsets_from_the_state_at_their_observation() {
    // The arm demo's chunk steps from the measured state toward its pose (absolute targets).
    // Marked relative, the shoulder's and the gripper's values are taken as offsets: the
    // backend adds the state they measure (shoulder position, gripper position) to every step.
    let absolute = PolicyPackage::open(&repo().join("models/demo/reflex-demo-arm-reach")).unwrap();
    let dir = scratch("reflex-demo-arm-reach", "relative");
    edit_manifest(&dir, |v| {
        v["action_space"][0]["relative"] = true.into();
        v["action_space"][3]["relative"] = true.into();
    });
    let relative = PolicyPackage::open(&dir).unwrap();
    assert_eq!(relative.manifest.relative_actions(), [(0, 0), (3, 3)]);
    assert!(absolute.manifest.relative_actions().is_empty());
    assert_eq!(
        absolute.manifest.contract_difference(&relative.manifest),
        Some("action_space"),
        "a hot swap between absolute and relative versions is refused"
    );
    let mut obs = absolute.manifest.observation();
    // Lit cameras (a dark one holds the arm).
    let lit = camera(64, 64, 120);
    let specs: Vec<_> = absolute.manifest.image_inputs().collect();
    for (spec, image) in specs.iter().zip(obs.images.iter_mut()) {
        let frame = reflex_policy::image::RgbFrame {
            width: 64,
            height: 64,
            step: 192,
            bgr: false,
            data: &lit,
        };
        assert!(reflex_policy::image::fill_image(&frame, spec, image));
    }
    obs.state.copy_from_slice(&[0.3, -0.2, 0.5, 0.02]);
    let run = |package: &PolicyPackage, obs: &Observation| {
        let mut backend = OrtBackend::load(package, &config()).unwrap();
        let mut chunk = package.manifest.action_chunk();
        backend.infer(obs, &mut chunk).unwrap();
        chunk
    };
    let a = run(&absolute, &obs);
    let r = run(&relative, &obs);
    assert!(
        a.actions.iter().any(|x| x.abs() > 1e-3),
        "the policy moves: {:?}",
        a.step(0)
    );
    for step in 0..a.horizon {
        let (a, r) = (a.step(step), r.step(step));
        assert!(
            (r[0] - (a[0] + 0.3)).abs() < 1e-6,
            "step {step}: {r:?} vs {a:?}"
        );
        assert!(
            (r[3] - (a[3] + 0.02)).abs() < 1e-6,
            "step {step}: {r:?} vs {a:?}"
        );
        assert_eq!((r[1], r[2]), (a[1], a[2]), "absolute dimensions unchanged");
    }
    // A relative dimension whose measured position is not a number: refused, chunk untouched.
    let mut backend = OrtBackend::load(&relative, &config()).unwrap();
    let mut chunk = relative.manifest.action_chunk();
    let before = chunk.clone();
    obs.state[3] = f32::INFINITY;
    let err = backend.infer(&obs, &mut chunk).unwrap_err().to_string();
    assert!(
        err.contains("state entry 3 (gripper_position) is inf")
            && err.contains("relative action `gripper`"),
        "{err}"
    );
    assert_eq!(chunk, before);
    // A schema 1 policy has no measured position to add to.
    let dir = scratch("reflex-demo-vla", "relative-v1");
    edit_manifest(&dir, |v| v["action_space"][0]["relative"] = true.into());
    let err = PolicyPackage::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("field `action_space[0].relative`: needs schema_version 2"),
        "{err}"
    );
}

#[test]
fn noise_inputs_are_drawn_fresh_for_every_inference_from_the_seed() {
    // tiny-flow: targets = state + 0.05 * noise, the noise drawn by Reflex (seed 0).
    let package = PolicyPackage::open(&repo().join("models/demo/tiny-flow")).unwrap();
    let m = &package.manifest;
    let mut obs = m.observation();
    obs.state.copy_from_slice(&[0.3, -0.2, 0.5, 0.02]);
    let draws = |backend: &mut OrtBackend, obs: &Observation, n: usize| -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let mut chunk = m.action_chunk();
                backend.infer(obs, &mut chunk).unwrap();
                chunk
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (a - obs.state[i % 4]) / 0.05)
                    .collect()
            })
            .collect()
    };
    let mut a = OrtBackend::load(&package, &config()).unwrap();
    let first = draws(&mut a, &obs, 200);
    assert_ne!(first[0], first[1], "every inference draws fresh noise");
    // Another load of the same package, warmed up first: the same sequence (the warm-up's
    // draws do not shift it), within float32 rounding of (a - state) / 0.05.
    let mut b = OrtBackend::load(&package, &config()).unwrap();
    b.warm_up(3).unwrap();
    let again = draws(&mut b, &obs, 2);
    for (x, y) in first[..2].iter().flatten().zip(again.iter().flatten()) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    // Standard normal: 8000 values, mean within 4 standard errors (0.011), variance within
    // 4 × sqrt(2/n) (0.063).
    let all: Vec<f64> = first.iter().flatten().map(|&v| f64::from(v)).collect();
    let n = all.len() as f64;
    let mean = all.iter().sum::<f64>() / n;
    let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    assert!(
        mean.abs() < 0.045 && (var - 1.0).abs() < 0.063,
        "mean {mean}, variance {var}"
    );
    // Another seed, other draws.
    let dir = scratch("tiny-flow", "noise-seed");
    edit_manifest(&dir, |v| v["inputs"][1]["generator"]["seed"] = 1.into());
    let reseeded = PolicyPackage::open(&dir).unwrap();
    let mut c = OrtBackend::load(&reseeded, &config()).unwrap();
    let other = draws(&mut c, &obs, 1);
    assert!(
        other[0]
            .iter()
            .zip(&first[0])
            .any(|(x, y)| (x - y).abs() > 0.1),
        "seed 1 draws as seed 0"
    );
    // The generator is the new model's own (each load makes its own): another seed is the
    // same I/O contract, so a running loop may hot-swap to it; another input shape is not.
    assert_eq!(m.contract_difference(&reseeded.manifest), None);
    let mut wider = m.clone();
    wider.inputs[1].shape[1] += 1;
    assert_eq!(m.contract_difference(&wider), Some("inputs"));
    // The golden pairs carry their own noise: verify reproduces them (not the generator's).
    let report = a.check_golden(&package.golden_pairs().unwrap()).unwrap();
    assert!(report.max_abs_error < 1e-5, "{report:?}");
}

#[test]
fn noise_inputs_and_further_outputs_are_checked() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "no-generator",
            Box::new(|v| {
                v["inputs"][1].as_object_mut().unwrap().remove("generator");
            }),
            "field `inputs[1].generator`: a noise input needs its generator",
        ),
        (
            "generator-on-state",
            Box::new(|v| v["inputs"][0]["generator"] = v["inputs"][1]["generator"].clone()),
            "field `inputs[0].generator`: only noise inputs have a generator",
        ),
        (
            "uint8-noise",
            Box::new(|v| v["inputs"][1]["dtype"] = "uint8".into()),
            "field `inputs[1].dtype`: Uint8 is not allowed for role Noise",
        ),
        (
            "distribution",
            Box::new(|v| v["inputs"][1]["generator"]["distribution"] = "cauchy".into()),
            "unknown variant `cauchy`",
        ),
        (
            "schema-1",
            Box::new(|v| {
                v["schema_version"] = 1.into();
                v.as_object_mut().unwrap().remove("state_sources");
            }),
            "field `inputs[1].role`: `noise` needs schema_version 2",
        ),
        (
            "output-twice",
            Box::new(|v| v["outputs"][1]["name"] = "noise".into()),
            "field `outputs[1].name`: `noise` is already the name of an input or output",
        ),
    ];
    for (name, edit, expected) in cases {
        let dir = scratch("tiny-flow", &format!("noise-{name}"));
        edit_manifest(&dir, edit);
        let err = PolicyPackage::open(&dir).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
    // A further output the model does not have: refused at load, naming it.
    let dir = scratch("tiny-flow", "noise-missing-output");
    edit_manifest(&dir, |v| v["outputs"][1]["name"] = "value".into());
    let package = PolicyPackage::open(&dir).unwrap();
    let err = OrtBackend::load(&package, &config())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("declares output `value`") && err.contains("noise_power"),
        "{err}"
    );
}

/// An `.npy` file of `descr` values (little-endian float32 unless `descr` says otherwise).
fn npy(descr: &str, shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let dims = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in values {
        out.extend(v.to_le_bytes());
    }
    out
}

/// Writes `bytes` as the scratch package's instructions.npy and lists its digest.
fn replace_embeddings(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join("instructions.npy"), bytes).unwrap();
    let digest = sha256_bytes(bytes);
    edit_manifest(dir, |v| {
        v["instruction_embeddings"]["sha256"] = digest.into();
    });
}

#[test]
fn the_instruction_embedding_comes_from_the_package_for_the_instruction_given() {
    // tiny-language: targets ramp from the state to state + embedding @ M over 10 steps, and
    // each instruction's embedding @ M is its offset (make_demo_policies.py LANGUAGE_OFFSETS).
    let package = PolicyPackage::open(&repo().join("models/demo/tiny-language")).unwrap();
    let m = &package.manifest;
    let mut backend = OrtBackend::load(&package, &config()).unwrap();
    backend.warm_up(1).unwrap();
    let state = [0.3f32, -0.2, 0.5, 0.02];
    let mut obs = m.observation();
    obs.state.copy_from_slice(&state);
    let mut chunk = m.action_chunk();
    // No instruction yet: nothing runs (never an embedding the robot was not given).
    assert_eq!(obs.instruction, [-1]);
    let err = backend.infer(&obs, &mut chunk).unwrap_err().to_string();
    assert!(
        err.contains("no instruction the package knows was given")
            && err.contains("\"raise the arm\", \"lower the arm\", \"open the gripper\""),
        "{err}"
    );
    for (text, offset) in [
        ("Raise the arm.", [-0.3f32, 0.2, 0.0, 0.0]),
        ("  lower   THE arm ", [0.3, -0.2, 0.1, 0.0]),
        ("open the gripper!", [0.0, 0.0, 0.0, 0.04]),
    ] {
        assert!(m.encode_instruction(text, &mut obs.instruction), "{text}");
        backend.infer(&obs, &mut chunk).unwrap();
        let last = chunk.step(9);
        for d in 0..4 {
            assert!(
                (last[d] - (state[d] + offset[d])).abs() < 1e-6,
                "{text}: step 9 = {last:?}, want state + {offset:?}"
            );
        }
    }
    // An instruction the package has no embedding for replaces the one before it: the
    // backend refuses to run (the robot stops) instead of reusing "open the gripper".
    assert!(!m.encode_instruction("wave hello", &mut obs.instruction));
    assert_eq!(obs.instruction, [-1]);
    assert!(backend.infer(&obs, &mut chunk).is_err());
    // A row past the table (a corrupted observation) is refused too.
    obs.instruction[0] = 3;
    assert!(backend.infer(&obs, &mut chunk).is_err());
    // The golden pairs carry their embeddings: verify checks the model.
    let report = backend
        .check_golden(&package.golden_pairs().unwrap())
        .unwrap();
    assert!(
        report.pairs == 3 && report.max_abs_error < 1e-6,
        "{report:?}"
    );
    // A hot swap to a package with other instructions (or another order) is refused: the
    // robot's instruction is held as a row of this list.
    let mut other = m.clone();
    other
        .instruction_embeddings
        .as_mut()
        .unwrap()
        .instructions
        .swap(0, 1);
    assert_eq!(
        m.contract_difference(&other),
        Some("instruction_embeddings.instructions")
    );
}

#[test]
fn instruction_embeddings_are_checked_and_refused_naming_the_fix() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "missing",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("instruction_embeddings");
            }),
            "field `instruction_embeddings`: input `instruction` takes an instruction embedding",
        ),
        (
            "no-input",
            Box::new(|v| {
                v["inputs"].as_array_mut().unwrap().pop();
            }),
            "field `instruction_embeddings`: no input has role `instruction_embedding`",
        ),
        (
            "twice",
            Box::new(|v| v["instruction_embeddings"]["instructions"][2] = "Raise the ARM.".into()),
            "field `instruction_embeddings.instructions[2]`: \"Raise the ARM.\" is instruction 0 again",
        ),
        (
            "empty",
            Box::new(|v| v["instruction_embeddings"]["instructions"] = serde_json::json!([])),
            "field `instruction_embeddings.instructions`: is empty",
        ),
        (
            "path",
            Box::new(|v| v["instruction_embeddings"]["file"] = "../instructions.npy".into()),
            "must be a plain file name in the package directory",
        ),
        (
            "golden-file",
            Box::new(|v| v["instruction_embeddings"]["file"] = "golden.json".into()),
            "`golden.json` is already another file of the package",
        ),
        (
            "int64",
            Box::new(|v| v["inputs"][1]["dtype"] = "int64".into()),
            "Int64 is not allowed for role InstructionEmbedding",
        ),
        (
            "schema-1",
            Box::new(|v| {
                v["schema_version"] = 1.into();
                v.as_object_mut().unwrap().remove("state_sources");
            }),
            "field `inputs[1].role`: `instruction_embedding` needs schema_version 2",
        ),
        (
            "with-tokens",
            Box::new(|v| {
                v["inputs"].as_array_mut().unwrap().push(serde_json::json!(
                    {"name": "tokens", "dtype": "int64", "shape": [1, 4], "role": "instruction_tokens"}
                ));
                v["instruction_vocabulary"] = serde_json::json!(["<pad>", "<unk>", "arm"]);
            }),
            "as tokens or as an embedding, not both",
        ),
    ];
    for (name, edit, expected) in cases {
        let dir = scratch("tiny-language", &format!("language-{name}"));
        edit_manifest(&dir, edit);
        let err = PolicyPackage::open(&dir).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
    // The file itself: checked at load against its digest, its dtype and the input's shape.
    let rows = |n: usize| vec![0.5f32; n * 8];
    let files: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "rows",
            npy("<f4", &[2, 8], &rows(2)),
            "holds an array of shape [2, 8]; 3 instructions for input `instruction` [1, 8] need [3, 8]",
        ),
        (
            "float64",
            npy("<f8", &[3, 8], &rows(6)),
            "holds '<f8', not little-endian float32",
        ),
        (
            "truncated",
            {
                let mut b = npy("<f4", &[3, 8], &rows(3));
                b.truncate(b.len() - 4);
                b
            },
            "(truncated?)",
        ),
        (
            "nan",
            {
                let mut values = rows(3);
                values[17] = f32::NAN;
                npy("<f4", &[3, 8], &values)
            },
            "value 17 (instruction 2, \"open the gripper\") is NaN",
        ),
        ("not-npy", b"0.5 0.5 0.5".to_vec(), "not a NumPy .npy file"),
    ];
    for (name, bytes, expected) in files {
        let dir = scratch("tiny-language", &format!("language-file-{name}"));
        replace_embeddings(&dir, &bytes);
        let package = PolicyPackage::open(&dir).unwrap();
        let err = OrtBackend::load(&package, &config())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(expected) && err.contains("instructions.npy"),
            "{name}: {err}"
        );
    }
    // A well-formed file of the right shape loads (the helper writes what numpy writes).
    let dir = scratch("tiny-language", "language-file-ok");
    replace_embeddings(&dir, &npy("<f4", &[3, 8], &rows(3)));
    OrtBackend::load(&PolicyPackage::open(&dir).unwrap(), &config()).unwrap();
    // A file changed after packing: refused by its digest, by verify and at load.
    let dir = scratch("tiny-language", "language-file-tampered");
    let mut bytes = std::fs::read(dir.join("instructions.npy")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join("instructions.npy"), &bytes).unwrap();
    let package = PolicyPackage::open(&dir).unwrap();
    let err = package.verify_files().unwrap_err().to_string();
    assert!(err.contains("instructions.npy"), "{err}");
    let err = OrtBackend::load(&package, &config())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("instructions.npy"), "{err}");
}

#[test]
fn onnx_external_data_loads_only_as_listed_verified_bytes() {
    // tiny-mlp-external: tiny-mlp's weights as initializers in model.onnx.data.
    let plain = PolicyPackage::open(&repo().join("models/demo/tiny-mlp")).unwrap();
    let package = PolicyPackage::open(&repo().join("models/demo/tiny-mlp-external")).unwrap();
    let mut backend = OrtBackend::load(&package, &config()).unwrap();
    let mut reference = OrtBackend::load(&plain, &config()).unwrap();
    let mut obs = package.manifest.observation();
    for (i, s) in obs.state.iter_mut().enumerate() {
        *s = 0.1 * i as f32 - 0.7;
    }
    let (mut a, mut b) = (
        package.manifest.action_chunk(),
        plain.manifest.action_chunk(),
    );
    backend.infer(&obs, &mut a).unwrap();
    reference.infer(&obs, &mut b).unwrap();
    for (x, y) in a.actions.iter().zip(&b.actions) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    assert!(
        a.actions.iter().any(|x| x.abs() > 1e-3),
        "the weights were loaded"
    );
    // The model's identity covers its weights: not the graph file's digest alone.
    let graph = &package.manifest.targets[0].sha256;
    assert_ne!(&package.model_digest(), graph);
    assert_eq!(backend.describe().model_digest, package.model_digest());
    assert_eq!(a.model_digest, package.model_digest());

    // Tampered weights: refused by digest, naming the data file (verify and load).
    let dir = scratch("tiny-mlp-external", "external-tampered");
    let data = dir.join("model.onnx.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&data, &bytes).unwrap();
    let tampered = PolicyPackage::open(&dir).unwrap();
    let err = tampered.verify_files().unwrap_err().to_string();
    assert!(err.contains("model.onnx.data"), "{err}");
    let err = OrtBackend::load(&tampered, &config())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.onnx.data") && err.contains("sha256"),
        "{err}"
    );

    // Missing: a clear error naming it.
    std::fs::remove_file(&data).unwrap();
    let err = OrtBackend::load(&tampered, &config())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.onnx.data"), "{err}");

    // Present beside the model but not listed in policy.json: never read unverified (ORT's
    // external data folder points nowhere, so neither the package directory nor the working
    // directory is searched).
    let dir = scratch("tiny-mlp-external", "external-unlisted");
    edit_manifest(&dir, |v| {
        v["targets"][0]
            .as_object_mut()
            .unwrap()
            .remove("external_data");
    });
    let unlisted = PolicyPackage::open(&dir).unwrap();
    let err = OrtBackend::load(&unlisted, &config())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("external data file that policy.json does not list")
            && err.contains("targets[].external_data"),
        "{err}"
    );

    // And the manifest's own checks.
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "subdir",
            Box::new(|v| {
                v["targets"][0]["external_data"][0]["file"] = "weights/model.onnx.data".into()
            }),
            "field `targets[0].external_data[0].file`: `weights/model.onnx.data` must be a plain file name",
        ),
        (
            "golden",
            Box::new(|v| v["targets"][0]["external_data"][0]["file"] = "golden.json".into()),
            "`golden.json` is already another file of the package",
        ),
        (
            "digest",
            Box::new(|v| v["targets"][0]["external_data"][0]["sha256"] = "abc".into()),
            "field `targets[0].external_data[0].sha256`",
        ),
    ];
    for (name, edit, expected) in cases {
        let dir = scratch("tiny-mlp-external", &format!("external-{name}"));
        edit_manifest(&dir, edit);
        let err = PolicyPackage::open(&dir).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
}

#[test]
fn a_nan_output_is_refused() {
    // NaN state in ⇒ NaN actions out (the chunk blends from the state): refused.
    let package = demo();
    let mut backend = OrtBackend::load(&package, &config()).unwrap();
    let mut obs = package.manifest.observation();
    obs.state[0] = f32::NAN;
    let mut chunk = package.manifest.action_chunk();
    let err = backend.infer(&obs, &mut chunk).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");
}

#[test]
fn golden_mismatch_fails_loudly() {
    let dir = scratch("tiny-mlp", "golden");
    let path = dir.join("golden.json");
    let mut pairs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    pairs[1]["outputs"]["actions"][7] = 123.0.into();
    std::fs::write(&path, serde_json::to_string(&pairs).unwrap()).unwrap();
    let digest = sha256_file(&path).unwrap();
    edit_manifest(&dir, |v| v["golden"]["sha256"] = digest.into());
    let package = PolicyPackage::open(&dir).unwrap();
    let mut backend = OrtBackend::load(&package, &config()).unwrap();
    let err = backend
        .check_golden(&package.golden_pairs().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pair 1") && err.contains("`actions`[7]") && err.contains("expected 123"),
        "{err}"
    );
}

#[test]
fn a_missing_accelerator_is_an_error_unless_fallback_is_allowed() {
    let package = demo();
    for accelerator in [Accelerator::Cuda, Accelerator::Tensorrt] {
        let strict = BackendConfig {
            accelerator,
            ..config()
        };
        let err = OrtBackend::load(&package, &strict).unwrap_err().to_string();
        let name = if accelerator == Accelerator::Cuda {
            "`cuda`"
        } else {
            "`tensorrt`"
        };
        assert!(
            err.contains(name) && (err.contains("feature") || err.contains("cannot start")),
            "{err}"
        );
        let fallback = BackendConfig {
            accelerator,
            allow_cpu_fallback: true,
            ..config()
        };
        let backend = OrtBackend::load(&package, &fallback).unwrap();
        let provider = backend.describe().provider;
        assert!(
            provider.starts_with("cpu (fallback allowed by config:") && provider.contains(name),
            "{provider}"
        );
    }
}
