//! Lockstep closed-loop tests: the demo policy on ONNX Runtime, the control loop, the safety
//! layer and the simulator, faster than real time.

mod common;

use common::setup;
use reflex_sim::lockstep::{SimOptions, default_scenario, run_lockstep};

#[test]
fn the_demo_policy_reaches_the_goal_in_at_least_9_of_10_seeds() {
    let (config, package, backend) = setup();
    let mut reached = 0;
    for seed in 1..=10 {
        let options = SimOptions {
            duration_s: 40.0,
            seed,
            ..SimOptions::default()
        };
        let s = run_lockstep(
            &config.safety,
            &package,
            &backend,
            default_scenario(seed),
            &options,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(s.collisions, 0, "seed {seed}: {s:?}");
        assert!(
            s.run.vetoes.values().sum::<u64>() > 0,
            "seed {seed}: the pedestrian must cause vetoes"
        );
        reached += u32::from(s.goal_reached);
    }
    assert!(reached >= 9, "{reached}/10");
}

#[test]
fn a_dead_inference_worker_stops_the_robot_within_the_action_age_limit() {
    let (config, package, backend) = setup();
    let options = SimOptions {
        duration_s: 14.0,
        kill_inference_at_s: Some(12.0),
        ..SimOptions::default()
    };
    let mut moving_after = 0.0f64;
    let s = run_lockstep(
        &config.safety,
        &package,
        &backend,
        default_scenario(3),
        &options,
        &mut |t| {
            if t.time_s > 12.0 && t.command.vx_mps.abs() > 1e-9 {
                moving_after = t.time_s;
            }
        },
    )
    .unwrap();
    let stopped = s
        .stopped_after_kill_s
        .expect("the loop must stop proposing motion");
    // max_action_age_ms (200) + one tick (10 ms).
    assert!(stopped <= 0.2 + 0.01 + 1e-9, "{stopped}");
    assert!(s.run.actions_dropped_stale > 0 || s.run.ticks_without_action > 0);
    // Then the safety layer brakes it to zero (1.5 m/s² from ≤ 0.6 m/s: < 0.5 s).
    assert!(moving_after < 12.0 + 0.21 + 0.5, "{moving_after}");
}

#[test]
fn the_configs_max_action_age_bounds_what_runs_after_inference_dies() {
    // `[chunks] max_action_age_ms` from the config, not a simulator default: 80 ms here.
    let (_, package, backend) = setup();
    let config = reflex_runner::config::ReflexConfig::load_with(
        &common::repo().join("launch/reflex.example.toml"),
        &[("chunks.max_action_age_ms".into(), "80.0".into())],
    )
    .unwrap();
    let options = SimOptions {
        duration_s: 13.0,
        kill_inference_at_s: Some(12.0),
        chunks: config.chunks,
        arbitration: config.arbitration.clone(),
        ..SimOptions::default()
    };
    let s = run_lockstep(
        &config.safety,
        &package,
        &backend,
        default_scenario(3),
        &options,
        &mut |_| {},
    )
    .unwrap();
    let stopped = s
        .stopped_after_kill_s
        .expect("the loop must stop proposing motion");
    // 80 ms + one tick; the 200 ms default would fail this.
    assert!(stopped <= 0.08 + 0.01 + 1e-9, "{stopped}");
}
