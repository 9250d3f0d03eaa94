//! The fleet simulation at CI size (24 robots, 1 s polls): the staged rollout completes, the bad
//! v3 is rolled back on every canary robot, no stable robot runs it, no robot runs a mix, every
//! blob is fetched once per robot. The 200-robot run is `bash scripts/bench-fleet`.

use std::path::Path;
use std::process::Command;

use reflex_benches::fleet::{FleetOptions, fleet_bench};

#[test]
fn a_staged_rollout_and_a_rollback_across_a_small_fleet() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = std::env::temp_dir().join(format!("reflex-fleet-test-{}", std::process::id()));
    let trap = work.with_extension("trap");
    let out = Command::new(repo.join(".venv/bin/python"))
        .arg(repo.join("benches/fleet_trap.py"))
        .args(["--src", repo.join("models/demo/tiny-mlp").to_str().unwrap()])
        .args(["--out", trap.to_str().unwrap()])
        .output()
        .expect(".venv/bin/python (bash scripts/test sets it up)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = fleet_bench(&FleetOptions {
        robots: 24,
        canary_percent: 25.0,
        poll_interval_s: 1.0,
        health_window_s: 1.5,
        model_pad_bytes: 64 << 10,
        trap_package: trap.clone(),
        work: work.clone(),
        phase_timeout_s: 60.0,
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&trap);
    println!("{}", serde_json::to_string(&r.phases).unwrap());
    assert!(r.canary_robots >= 1 && r.canary_robots < r.robots, "{r:?}");
    assert_eq!(r.phases.len(), 4, "{r:?}");
    assert_eq!(r.stable_robots_that_ran_v3, 0);
    assert_eq!(r.robots_with_foreign_model, 0);
    assert_eq!(r.robots_inconsistent_at_end, 0);
    assert_eq!(r.blobs_fetched_twice, 0);
    // Each needed blob once per robot: within the signature blobs' few hundred bytes each.
    assert!(r.blob_bytes_transferred >= r.blob_bytes_minimum, "{r:?}");
    assert!(
        r.blob_bytes_transferred <= r.blob_bytes_minimum + 4096 * r.robots as u64,
        "{r:?}"
    );
    // Unchanged tags cost the HEAD of the tag (and the auth probe of a fresh client).
    assert!(
        (0.8..=2.5).contains(&r.idle_requests_per_robot_per_poll),
        "{r:?}"
    );
    assert_eq!(
        r.idle_window.blob_get + r.idle_window.manifest_get,
        0,
        "{r:?}"
    );
    // v3 reached the canary robots and drove before its health window failed.
    assert!(r.timeline.iter().any(|(_, n)| n[3] > 0), "v3 never ran");
}
