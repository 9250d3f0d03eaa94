//! Randomized encounters: zero collisions while moving toward an obstacle. CI runs 300; the full
//! campaign is `REFLEX_ENCOUNTERS=10000 cargo test --release -p reflex-hil --test encounters --
//! --nocapture` (hil-tests/README.md).

use reflex_hil::{demo_safety_config, run_encounter, run_encounter_with_plant_brake};

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
    let mut clearances: Vec<f64> = outcomes.iter().map(|o| o.min_clearance_m).collect();
    clearances.sort_by(f64::total_cmp);
    let p = |q: f64| clearances[((clearances.len() - 1) as f64 * q) as usize];
    println!(
        "min clearance over {} encounters: min {:.3} m, p1 {:.3} m, p5 {:.3} m, median {:.3} m, p95 {:.3} m",
        clearances.len(),
        p(0.0),
        p(0.01),
        p(0.05),
        p(0.5),
        p(0.95)
    );
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
