//! Smoke tests of the performance harness (`bash scripts/bench-report` runs it for real): the
//! loop bench writes whole-sample histograms that add up, refuses bad arguments by name, and
//! the report's own checks (`benches/test_report.py`) flag a missed target.

use std::path::Path;
use std::process::Command;

fn bench(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reflex-bench"))
        .args(args)
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
fn the_loop_bench_keeps_every_tick_in_its_histograms() {
    let json = std::env::temp_dir().join(format!("reflex-loop-smoke-{}.json", std::process::id()));
    let (ok, text) = bench(&[
        "loop",
        "--seconds",
        "0.5",
        "--period-ms",
        "10",
        "--hog",
        "off",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "one period, one hog setting: {rows:?}");
    let row = &rows[0];
    assert_eq!(row["period_ms"], 10.0);
    assert_eq!(row["hog"], false);
    let total = |key: &str| -> u64 {
        row[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[1].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total("lateness_hist_us"), 50, "{row}");
    assert_eq!(total("tick_cost_hist_100ns"), 50, "{row}");
    assert_eq!(row["lateness"]["samples"], 50);
    // The histogram's last bin holds the maximum.
    let last = row["lateness_hist_us"].as_array().unwrap().last().unwrap()[0]
        .as_u64()
        .unwrap();
    assert_eq!(last, row["lateness"]["max_ns"].as_u64().unwrap() / 1000);
}

#[test]
fn the_arm_tick_bench_measures_a_moving_arm_with_chunks_and_cameras() {
    // A bench of a stopped arm (a stop on every tick, no merge) would measure the wrong thing.
    let json = std::env::temp_dir().join(format!("reflex-arm-smoke-{}.json", std::process::id()));
    let (ok, text) = bench(&[
        "arm-tick",
        "--seconds",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let row: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(
        (row["horizon"].as_u64(), row["dims"].as_u64()),
        (Some(100), Some(14))
    );
    assert_eq!(row["tick_cost"]["samples"], 100);
    assert!(row["merges"].as_u64().unwrap() >= 5, "{row}");
    // The first ticks wait for the first chunk; every later one drives the joints.
    assert!(row["ticks_driving"].as_u64().unwrap() >= 80, "{row}");
    assert!(
        row["camera_handoff_cost"]["samples"].as_u64().unwrap() >= 10,
        "{row}"
    );
}

#[test]
fn the_loop_bench_names_a_bad_argument() {
    let (ok, text) = bench(&["loop", "--period-ms", "0"]);
    assert!(!ok);
    assert!(text.contains("--period-ms 0"), "{text}");
    let (ok, text) = bench(&["loop", "--hog", "maybe"]);
    assert!(!ok);
    assert!(
        text.contains("--hog") && text.contains("on, off or both"),
        "{text}"
    );
    let (ok, text) = bench(&["hog", "--cpus", "0"]);
    assert!(!ok);
    assert!(text.contains("usage: reflex-bench hog"), "{text}");
}

#[test]
fn the_report_checks_its_targets_and_can_fail() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(repo.join(".venv/bin/python"))
        .arg(repo.join("benches/test_report.py"))
        .output()
        .expect(".venv/bin/python (bash scripts/test sets it up)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("report checks: ok"), "{text}");
}
