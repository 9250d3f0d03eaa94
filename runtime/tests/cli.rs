//! The `reflex` binary as a user runs it: exit codes and messages.

mod common;

use common::{ort_library, repo};
use std::process::{Command, Output};

fn reflex(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(args)
        .current_dir(repo())
        .env_remove("ORT_DYLIB_PATH")
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

#[test]
fn verify_passes_on_the_demo_packages() {
    let lib = ort_library();
    for pkg in ["models/demo/reflex-demo-vla", "models/demo/tiny-mlp"] {
        let out = reflex(&["verify", pkg, "--ort-library", lib.to_str().unwrap()]);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(
            t.contains("sha256 ok") && t.contains("within tolerance") && t.contains("verified:"),
            "{t}"
        );
    }
}

#[test]
fn verify_explains_a_missing_or_wrong_library() {
    let pkg = "models/demo/tiny-mlp";
    let out = reflex(&["verify", pkg]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("ORT_DYLIB_PATH") && text(&out).contains("scripts/setup-python"),
        "{}",
        text(&out)
    );

    let out = reflex(&[
        "verify",
        pkg,
        "--ort-library",
        "/nonexistent/libonnxruntime.so.1.31.1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("library not found at /nonexistent/libonnxruntime.so.1.31.1"),
        "{}",
        text(&out)
    );

    let old = repo().join(".venv/old-ort/libonnxruntime.so.1.20.1");
    assert!(
        old.is_file(),
        "{} missing: run `bash scripts/setup-python`",
        old.display()
    );
    let out = reflex(&["verify", pkg, "--ort-library", old.to_str().unwrap()]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains("1.20.1") && t.contains("1.24 or newer") && t.contains("scripts/setup-python"),
        "{t}"
    );
}

#[test]
fn verify_refuses_a_missing_accelerator_unless_fallback_is_allowed() {
    let lib = ort_library();
    let lib = lib.to_str().unwrap();
    let out = reflex(&[
        "verify",
        "models/demo/tiny-mlp",
        "--ort-library",
        lib,
        "--accelerator",
        "cuda",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("accelerator `cuda` requested"),
        "{}",
        text(&out)
    );
    let out = reflex(&[
        "verify",
        "models/demo/tiny-mlp",
        "--ort-library",
        lib,
        "--accelerator",
        "tensorrt",
        "--allow-cpu-fallback",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: cpu (fallback allowed by config")
    );
}

#[test]
fn inspect_prints_the_package_and_json() {
    let out = reflex(&["inspect", "models/demo/reflex-demo-vla"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for want in [
        "reflex-demo-vla 0.1.0",
        "instruction tokens",
        "drives base_wz",
        "50 Hz",
        "20 steps",
        "std [0.5, 0.5, 1.0]",
        "4 pairs",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    let out = reflex(&["inspect", "models/demo/reflex-demo-vla", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["horizon_steps"], 20);
    assert_eq!(v["inputs"][0]["dtype"], "uint8");
}

#[test]
fn inspect_names_a_bad_manifest() {
    let dir = std::env::temp_dir().join(format!("reflex-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.json"),
        "{\"schema_version\": 1, \"name\": \"x\"",
    )
    .unwrap();
    let out = reflex(&["inspect", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("policy.json is not valid"),
        "{}",
        text(&out)
    );
}

#[test]
fn safety_demo_runs_and_check_config_names_bad_keys() {
    let out = reflex(&["safety-demo", "--seconds", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("collisions: 0"));
    let bad = std::env::temp_dir().join(format!("reflex-cli-bad-{}.toml", std::process::id()));
    let example = std::fs::read_to_string(repo().join("launch/reflex.example.toml")).unwrap();
    std::fs::write(&bad, example.replace("min_points = 3", "min_points = 0")).unwrap();
    let out = reflex(&["check-config", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("safety.lidar.min_points"),
        "{}",
        text(&out)
    );
}

#[test]
fn preflight_reports_onnxruntime_and_gpus_plainly() {
    let lib = ort_library();
    let out = reflex(&[
        "preflight",
        "--json",
        "--ort-library",
        lib.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["onnxruntime"]["status"], "loaded");
    let gpu = v["gpu"]["status"].as_str().unwrap().to_string();
    let expected = if reflex_policy::CUDA_BUILT.is_none() {
        "not_built"
    } else if std::path::Path::new("/proc/driver/nvidia").exists() {
        "devices"
    } else {
        "no_driver"
    };
    assert_eq!(gpu, expected);
    let rt = &v["realtime"];
    assert!(rt["cpus"].as_u64().unwrap() >= 1);
    assert!(
        rt["sched_fifo"].as_str().is_some() && rt["advice"].is_array(),
        "{rt}"
    );
    let out = reflex(&["preflight"]);
    assert!(out.status.success());
    assert!(
        text(&out).contains("onnxruntime: unavailable") && text(&out).contains("ORT_DYLIB_PATH"),
        "{}",
        text(&out)
    );
}

/// `reflex preflight --jetson-root` on captured Jetson files and tool outputs
/// (tests/fixtures/jetson): an AGX Orin on JetPack 6.2 in 50 W with DVFS clocks, and an AGX Thor on
/// JetPack 7.0 in MAXN with locked clocks; this host itself is not a Jetson and says so.
#[test]
fn preflight_reads_a_jetson_and_says_what_to_change() {
    let lib = ort_library();
    let fixture = |name: &str| {
        let root = repo().join("runtime/tests/fixtures/jetson").join(name);
        let out = reflex(&[
            "preflight",
            "--json",
            "--ort-library",
            lib.to_str().unwrap(),
            "--jetson-root",
            root.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v
    };
    let v = fixture("orin-jp62");
    let j = &v["jetson"];
    assert_eq!(j["is_jetson"], true, "{j}");
    assert_eq!(j["model"], "NVIDIA Jetson AGX Orin Developer Kit");
    assert_eq!(j["l4t"]["version"], "36.4.3");
    assert_eq!(j["l4t"]["jetpack"], "6.2");
    assert_eq!(j["power_mode"]["name"], "MODE_50W");
    assert_eq!(j["power_mode"]["id"], 3);
    assert_eq!(j["clocks"]["locked"], false);
    assert_eq!(j["clocks"]["cpus"].as_array().unwrap().len(), 12);
    assert_eq!(j["tensorrt"], "10.3.0");
    // The PyPI CPU build of ONNX Runtime: its real provider list, without TensorRT.
    let providers = v["onnxruntime"]["providers"].as_array().unwrap();
    assert!(providers.iter().any(|p| p == "CPUExecutionProvider"), "{v}");
    assert_eq!(v["onnxruntime"]["version"], "1.31.1", "{v}");
    assert!(
        v["onnxruntime"]["build"]
            .as_str()
            .unwrap()
            .starts_with("ORT Build Info"),
        "{v}"
    );
    let advice: Vec<String> = v["jetson_advice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let has = |s: &str| advice.iter().any(|a| a.contains(s));
    assert!(
        has("power mode is MODE_50W") && has("nvpmodel -m 0"),
        "{advice:?}"
    );
    assert!(
        has("clocks are not locked") && has("sudo jetson_clocks"),
        "{advice:?}"
    );
    assert!(
        has("12 of 12 CPUs scale") && has("GPU 306–828 MHz"),
        "{advice:?}"
    );
    assert!(has("no TensorrtExecutionProvider"), "{advice:?}");
    if reflex_policy::CUDA_BUILT.is_none() {
        assert!(has("--features jetpack6"), "{advice:?}");
    }

    let v = fixture("thor-jp70");
    let j = &v["jetson"];
    assert_eq!(j["l4t"]["version"], "38.2.0");
    assert_eq!(j["l4t"]["jetpack"], "7.0");
    assert_eq!(j["power_mode"]["name"], "MAXN");
    assert_eq!(j["clocks"]["locked"], true);
    assert_eq!(j["tensorrt"], "10.13.3");
    let advice = v["jetson_advice"].to_string();
    assert!(
        !advice.contains("power mode") && !advice.contains("not locked"),
        "{advice}"
    );
    if reflex_policy::CUDA_BUILT.is_none() {
        assert!(advice.contains("--features jetpack7"), "{advice}");
    }

    // This host: not a Jetson, said plainly, no Jetson advice.
    let out = reflex(&["preflight", "--ort-library", lib.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    if !std::path::Path::new("/etc/nv_tegra_release").exists() {
        assert!(
            text(&out).contains("jetson: not a Jetson (no /etc/nv_tegra_release)"),
            "{}",
            text(&out)
        );
    }
    // A text run on the Orin fixture lists what to change.
    let root = repo().join("runtime/tests/fixtures/jetson/orin-jp62");
    let out = reflex(&[
        "preflight",
        "--ort-library",
        lib.to_str().unwrap(),
        "--jetson-root",
        root.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(
        t.contains("jetson: NVIDIA Jetson AGX Orin Developer Kit, L4T 36.4.3 (JetPack 6.2)"),
        "{t}"
    );
    assert!(
        t.contains("clocks: not locked (DVFS)") && t.contains("to do: clocks are not locked"),
        "{t}"
    );
}

#[test]
fn sim_json_last_line_and_report() {
    let lib = ort_library();
    let dir = std::env::temp_dir().join(format!("reflex-cli-report-{}", std::process::id()));
    let out = reflex(&[
        "sim",
        "--duration",
        "20",
        "--json",
        "--ort-library",
        lib.to_str().unwrap(),
        "--report",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for key in [
        "ticks",
        "deadline_misses",
        "collisions",
        "min_clearance_m",
        "goal_reached",
        "vetoes",
        "tick_p50_us",
        "tick_p99_us",
        "tick_max_us",
        "inference_p50_ms",
        "actions_dropped_stale",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["ticks"], 2000);
    assert_eq!(v["goal_reached"], true);
    let csv = std::fs::read_to_string(dir.join("ticks.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2001);
    let svg = std::fs::read_to_string(dir.join("trajectory.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

#[test]
fn pack_keygen_sign_verify_an_artifact() {
    let dir = std::env::temp_dir().join(format!("reflex-cli-oci-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("trusted")).unwrap();
    let reference = format!("oci-layout:{}:0.1.0", dir.join("layout").display());
    let out = reflex(&["pack", "models/demo/reflex-demo-vla", "--out", &reference]);
    assert!(out.status.success(), "{}", text(&out));
    let prefix = dir.join("release");
    let out = reflex(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("release.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::copy(dir.join("release.pub"), dir.join("trusted/release.pub")).unwrap();
    let trusted = dir.join("trusted");
    let verify = || {
        reflex(&[
            "verify",
            &reference,
            "--trusted-keys",
            trusted.to_str().unwrap(),
        ])
    };
    let out = verify();
    assert!(
        !out.status.success() && text(&out).contains("unsigned"),
        "{}",
        text(&out)
    );
    let out = reflex(&[
        "sign",
        &reference,
        "--key",
        dir.join("release.key").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = verify();
    assert!(
        out.status.success() && text(&out).contains("signed by key"),
        "{}",
        text(&out)
    );
    // Keys are never overwritten.
    let out = reflex(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(!out.status.success() && text(&out).contains("never overwritten"));
}

#[test]
fn run_refuses_to_start_without_an_explicit_robot_io() {
    // No --io and no [robot] io: refused before anything starts (it used to drive the simulator).
    for config in ["launch/mobile_base.toml", "launch/arm.toml"] {
        let out = reflex(&[
            "run",
            "--config",
            config,
            "--policy",
            "models/demo/reflex-demo-vla",
            "--duration",
            "1",
        ]);
        let t = text(&out);
        assert!(!out.status.success(), "{config}: {t}");
        assert!(
            t.contains("no robot I/O") && t.contains("--io") && t.contains("[robot] io"),
            "{config}: {t}"
        );
        assert!(!t.contains("\"ticks\""), "{config}: it ran: {t}");
    }
    let out = reflex(&[
        "run",
        "--config",
        "launch/mobile_base.toml",
        "--io",
        "simulator",
    ]);
    assert!(text(&out).contains("--io \"simulator\": use dds, ros2 or sim"));
}

#[test]
#[cfg(not(feature = "dds"))]
fn the_systemd_unit_names_a_robot_io_and_never_the_simulator() {
    // launch/reflex.service exactly as shipped: its ExecStart, with the config path pointed at
    // this checkout. This build has no `dds` feature, so it must stop with that error before
    // anything starts, never fall back to the simulator.
    let unit = std::fs::read_to_string(repo().join("launch/reflex.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart in reflex.service");
    let mut args: Vec<String> = exec.split_whitespace().skip(1).map(String::from).collect();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{exec}");
    let io = args
        .iter()
        .position(|a| a == "--io")
        .expect("--io in ExecStart");
    assert!(
        matches!(args[io + 1].as_str(), "dds" | "ros2"),
        "the unit drives {:?}",
        args[io + 1]
    );
    let c = args.iter().position(|a| a == "--config").unwrap();
    let shipped = std::path::Path::new(&args[c + 1])
        .file_name()
        .unwrap()
        .to_owned();
    args[c + 1] = repo()
        .join("launch")
        .join(shipped)
        .to_string_lossy()
        .into_owned();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = reflex(&refs);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("built without the `dds` feature"), "{t}");
}

/// SAF-019: `reflex teach-background` reads a rosbag2-style recording written by
/// mcap-ros2-support's own writer, prints a table that launch/arm.toml accepts with it appended,
/// and refuses a recording with someone walking through the cell (or without the topic), naming
/// what moved.
#[test]
fn teach_background_teaches_a_recorded_empty_cell_and_refuses_a_moving_one() {
    let dir = std::env::temp_dir().join(format!("reflex-teach-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, extra: &[&str]| {
        let path = dir.join(name);
        let out = Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("runtime/tests/recorder/write_scan_bag.py"))
            .arg(&path)
            .args(extra)
            .output()
            .expect("run python");
        assert!(out.status.success(), "{}", text(&out));
        path.to_str().unwrap().to_string()
    };
    // 4 s at 20 Hz, every range off by up to 5 mm.
    let empty = write("empty.mcap", &["--noise-m", "0.005"]);
    let teach = |recording: &str, extra: &[&str]| {
        let mut args = vec![
            "teach-background",
            "--recording",
            recording,
            "--config",
            "launch/arm.toml",
        ];
        args.extend_from_slice(extra);
        reflex(&args)
    };
    let out = teach(&empty, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("80 scans over 4.0 s, 720 beams") && t.contains("accepts it"),
        "{t}"
    );
    // The four legs, listed for the operator to confirm.
    assert!(t.contains("4 taught objects nearer than 2 m"), "{t}");
    let table = String::from_utf8(out.stdout.clone()).unwrap();
    let parsed: toml::Table = toml::from_str(&table).unwrap();
    let b = &parsed["safety"]["lidar"]["background"];
    let ranges: Vec<f64> = b["ranges_m"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_float().unwrap())
        .collect();
    assert_eq!(ranges.len(), 720);
    // The legs (0.36–0.45 m, 5 cm thick: 12–16 beams of 0.5° each), the wall (4 m) on the rest,
    // each the nearest of its noisy returns.
    let legs = ranges.iter().filter(|r| **r < 0.5).count();
    assert!((40..=70).contains(&legs), "{legs} leg beams");
    assert!(ranges.iter().all(|r| *r > 0.3 && *r <= 4.0), "{ranges:?}");
    assert!(
        ranges.iter().filter(|r| **r > 3.9).all(|r| *r < 3.999),
        "{ranges:?}"
    );
    assert_eq!(b["tolerance_m"].as_float(), Some(0.03));
    // The pose it was taught from is recorded with it.
    assert_eq!(b["base_from_lidar"]["yaw_rad"].as_float(), Some(0.0));
    // Appended to the shipped arm config, as the README says to.
    let arm = std::fs::read_to_string(repo().join("launch/arm.toml")).unwrap();
    let config = reflex_runner::config::ReflexConfig::parse(&format!("{arm}\n{table}")).unwrap();
    let taught = config.safety.lidar.unwrap().background.unwrap();
    assert_eq!(taught.ranges_m, ranges);

    let walking = write("walking.mcap", &["--person"]);
    let out = teach(&walking, &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("walking.mcap") && t.contains("something moved") && t.contains("beams "),
        "{t}"
    );
    assert!(out.stdout.is_empty(), "nothing printed to paste: {t}");

    // A second of recording is too short; a noise wider than the band looks like motion.
    let short = write("short.mcap", &["--scans", "20"]);
    let t = text(&teach(&short, &[]));
    assert!(t.contains("0.95 s") && t.contains("at least 3 s"), "{t}");
    let noisy = write("noisy.mcap", &["--noise-m", "0.03"]);
    let t = text(&teach(&noisy, &[]));
    assert!(t.contains("--tolerance-m"), "{t}");

    let out = teach(&empty, &["--topic", "/front/scan"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("no messages on /front/scan") && t.contains("/scan"),
        "{t}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
