//! Real-time closed loop on real threads (a few seconds each).

mod common;

use common::setup;
use reflex_sim::lockstep::{SimOptions, default_scenario};
use reflex_sim::run_realtime;

#[test]
fn realtime_run_keeps_its_deadlines_and_drives() {
    let (config, package, backend) = setup();
    let options = SimOptions {
        duration_s: 4.0,
        ..SimOptions::default()
    };
    let (s, report) = run_realtime(
        &config.safety,
        &package,
        &backend,
        &config.runtime,
        default_scenario(1),
        &options,
        &Default::default(),
    )
    .unwrap();
    assert!((380..=401).contains(&s.run.ticks), "{s:?}");
    assert_eq!(s.collisions, 0);
    assert!(s.run.chunks_merged > 20, "{s:?}");
    assert!(s.final_pose[0] > 0.2, "the robot moved: {s:?}");
    assert_eq!(report.watchdog_trips, 0, "{report:?}");
    // Deadline misses at 10 ms are reported, not asserted here (a loaded CI host); the
    // acceptance run in the README's first command shows them.
    println!("{s:?}\n{report:?}");
}

#[test]
fn a_hung_inference_worker_is_a_protective_stop_and_is_replaced() {
    let (config, package, backend) = setup();
    let options = SimOptions {
        duration_s: 3.0,
        kill_inference_at_s: Some(1.0),
        ..SimOptions::default()
    };
    let (s, report) = run_realtime(
        &config.safety,
        &package,
        &backend,
        &config.runtime,
        default_scenario(1),
        &options,
        &Default::default(),
    )
    .unwrap();
    // Actions age out 200 ms after the hang: the loop proposes a stop, never a stale action…
    assert!(
        s.run.ticks_without_action > 0 || s.run.actions_dropped_stale > 0,
        "{s:?}"
    );
    // …and past `[runtime] inference_deadline_ms` (500 ms) the supervisor brings a new worker.
    // A slow or hung policy is not an E-stop: nothing latches, nobody has to reset.
    assert!(report.worker_restarts >= 1, "{report:?}");
    assert_eq!(report.watchdog_trips, 0, "{report:?}");
    assert!(!s.run.vetoes.contains_key("estop_internal"), "{s:?}");
}

/// The `stationary` safe-point rule: a model handed over while the robot stands still is taken
/// at the next chunk boundary; one handed over while it drives waits in the slot.
#[test]
fn the_stationary_rule_defers_a_swap_while_the_robot_moves() {
    use reflex_runner::swap::{Candidate, SwapPort, SwapWhen};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let (config, package, backend) = setup();
    let port = Arc::new(SwapPort::new(SwapWhen::Stationary));
    let candidate = |generation| {
        Some(Arc::new(Candidate {
            generation,
            backend: std::sync::Mutex::new(Some(Box::new(
                reflex_policy::OrtBackend::load(&package, &backend).unwrap(),
            ))),
        }))
    };
    // Before the start: the robot stands still.
    port.slot.store(candidate(1));
    let later = {
        let port = port.clone();
        let second = candidate(2);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let moving = !port.status.stationary.load(Ordering::Acquire);
            port.slot.store(second);
            moving
        })
    };
    let options = SimOptions {
        duration_s: 3.0,
        ..SimOptions::default()
    };
    let (s, _) = run_realtime(
        &config.safety,
        &package,
        &backend,
        &config.runtime,
        default_scenario(1),
        &options,
        &port,
    )
    .unwrap();
    assert!(later.join().unwrap(), "the robot was moving at 1.5 s");
    assert_eq!(
        port.status.loop_generation.load(Ordering::Acquire),
        1,
        "{s:?}"
    );
    assert_eq!(port.status.worker_generation.load(Ordering::Acquire), 1);
    assert!(
        port.slot.load().as_ref().is_some_and(|c| c.generation == 2),
        "the second model must still wait in the slot"
    );
}
