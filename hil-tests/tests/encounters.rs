//! Randomized encounters: zero collisions while moving toward an obstacle. CI runs 300; the full
//! campaign is `REFLEX_ENCOUNTERS=10000 cargo test --release -p reflex-hil --test encounters --
//! --nocapture` (hil-tests/README.md).

use reflex_hil::{Perturbation, demo_safety_config, run_encounter, run_encounter_with_plant_brake};

#[test]
fn randomized_encounters_never_collide_while_moving() {
    let config = demo_safety_config();
    let n: u64 = std::env::var("REFLEX_ENCOUNTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let outcomes: Vec<_> = (0..n).map(|seed| run_encounter(&config, seed)).collect();
    let collisions: Vec<_> = outcomes
        .iter()
        .filter(|o| o.collided_while_moving)
        .collect();
    assert!(collisions.is_empty(), "collisions: {collisions:?}");
    println!(
        "{:<14} {:>6} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "policy", "runs", "collisions", "walked_in", "min_m", "p1_m", "p5_m", "median_m", "p95_m"
    );
    let mut kinds: Vec<Option<Perturbation>> =
        Perturbation::ALL.iter().copied().map(Some).collect();
    kinds.push(None);
    for kind in kinds {
        let mut clearances: Vec<f64> = outcomes
            .iter()
            .filter(|o| kind.is_none_or(|k| o.perturbation == k))
            .map(|o| o.min_clearance_m)
            .collect();
        if clearances.is_empty() {
            continue;
        }
        clearances.sort_by(f64::total_cmp);
        let p = |q: f64| clearances[((clearances.len() - 1) as f64 * q) as usize];
        let hits = outcomes
            .iter()
            .filter(|o| kind.is_none_or(|k| o.perturbation == k) && o.collided_while_moving)
            .count();
        // Contacts in which the robot was not moving toward the obstacle (a pedestrian walking
        // into a stopped or receding robot).
        let walked_in = outcomes
            .iter()
            .filter(|o| {
                kind.is_none_or(|k| o.perturbation == k)
                    && o.min_clearance_m <= 0.0
                    && !o.collided_while_moving
            })
            .count();
        println!(
            "{:<14} {:>6} {:>10} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            kind.map_or("all".to_string(), |k| format!("{k:?}")),
            clearances.len(),
            hits,
            walked_in,
            p(0.0),
            p(0.01),
            p(0.05),
            p(0.5),
            p(0.95)
        );
    }
    // The robot really drove: most encounters covered real distance toward the obstacle.
    let moved = outcomes.iter().filter(|o| o.travelled_m > 0.5).count();
    assert!(moved as u64 > n * 5 / 6, "{moved} of {n}");
}

#[test]
fn an_optimistic_config_does_collide() {
    // Proves the assertion above can fail: the safety layer is told the drive brakes 4× harder
    // than it does, with a 1 mm margin, no reaction time and no slow-down zone, so its
    // protective zone ends long before the robot can stop.
    let config = demo_safety_config();
    let mut optimistic = config.clone();
    let lidar = optimistic.lidar.as_mut().unwrap();
    lidar.margin_m = 0.001;
    lidar.reaction_time_ms = 0.0;
    lidar.slowdown_depth_m = 0.0;
    optimistic.base.as_mut().unwrap().brake_decel_mps2 *= 4.0;
    let real_brake = config.base.as_ref().unwrap().brake_decel_mps2;
    let collisions = (0..100)
        .filter(|&seed| {
            run_encounter_with_plant_brake(&optimistic, seed, real_brake).collided_while_moving
        })
        .count();
    assert!(
        collisions > 0,
        "an optimistic config must collide somewhere"
    );
}
