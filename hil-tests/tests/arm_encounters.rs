//! The randomized arm campaign: zero contacts caused by the arm, no joint outside its limits.
//! CI runs a sample (REFLEX_ARM_ENCOUNTERS, default 200); the full campaign is
//! `REFLEX_ARM_ENCOUNTERS=10000 cargo test --release -p reflex-hil --test arm_encounters --
//! --nocapture` (hil-tests/README.md; figures in benches/README.md).

use std::path::Path;

use reflex_hil::arm_campaign::{ArmOutcome, ArmPerturbation, campaign_robot, run_arm_encounter};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn table(outcomes: &[ArmOutcome]) {
    println!(
        "{:<14} {:>6} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} {:>7} {:>6}",
        "policy",
        "runs",
        "contacts",
        "walked_in",
        "min_m",
        "p1_m",
        "p5_m",
        "p50_m",
        "mv_min",
        "mv_p1",
        "mv_p5",
        "mv_p50",
        "moved"
    );
    let mut kinds: Vec<Option<ArmPerturbation>> =
        ArmPerturbation::ALL.iter().copied().map(Some).collect();
    kinds.push(None);
    for kind in kinds {
        let these: Vec<&ArmOutcome> = outcomes
            .iter()
            .filter(|o| kind.is_none_or(|k| o.perturbation == k))
            .collect();
        if these.is_empty() {
            continue;
        }
        let quantiles = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            [0.0, 0.01, 0.05, 0.5].map(|q| v[((v.len() - 1) as f64 * q) as usize])
        };
        let all = quantiles(these.iter().map(|o| o.min_separation_m).collect());
        let moving = quantiles(these.iter().map(|o| o.min_moving_separation_m).collect());
        let caused = these
            .iter()
            .filter(|o| o.contacts_moving_toward > 0)
            .count();
        let walked_in = these
            .iter()
            .filter(|o| o.contact_steps > 0 && o.contacts_moving_toward == 0)
            .count();
        let moved = these.iter().filter(|o| o.moved_rad > 0.3).count();
        println!(
            "{:<14} {:>6} {:>8} {:>9} {:>7.3} {:>7.3} {:>7.3} {:>7.3} | {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>5.0}%",
            kind.map_or("all".to_string(), |k| format!("{k:?}")),
            these.len(),
            caused,
            walked_in,
            all[0],
            all[1],
            all[2],
            all[3],
            moving[0],
            moving[1],
            moving[2],
            moving[3],
            100.0 * moved as f64 / these.len() as f64
        );
    }
}

#[test]
fn randomized_arm_encounters_never_touch_a_person_by_moving() {
    let (config, package) = campaign_robot(repo()).unwrap();
    let n: u64 = std::env::var("REFLEX_ARM_ENCOUNTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let t0 = std::time::Instant::now();
    let outcomes: Vec<ArmOutcome> = (0..n)
        .map(|seed| run_arm_encounter(&config, &package, seed).unwrap())
        .collect();
    println!("{n} arm encounters in {:.1} s", t0.elapsed().as_secs_f64());
    table(&outcomes);
    let caused: Vec<_> = outcomes
        .iter()
        .filter(|o| o.contacts_moving_toward > 0)
        .collect();
    assert!(caused.is_empty(), "the arm moved into a person: {caused:?}");
    let outside: Vec<_> = outcomes
        .iter()
        .filter(|o| o.position_violations > 0)
        .collect();
    assert!(
        outside.is_empty(),
        "joints outside their limits: {outside:?}"
    );
    // Moving, it never touched anyone (sideways sweeps and people walking into a moving arm
    // included); and nothing holds a joint here, so no stall may stop it.
    let touched_moving: Vec<_> = outcomes
        .iter()
        .filter(|o| o.min_moving_separation_m <= 0.0)
        .collect();
    assert!(
        touched_moving.is_empty(),
        "touched while moving: {touched_moving:?}"
    );
    let stalled: Vec<_> = outcomes.iter().filter(|o| o.stalls > 0).collect();
    assert!(stalled.is_empty(), "false stall stops: {stalled:?}");
    // The arm really moved: most encounters swung a joint by more than 0.3 rad.
    let moved = outcomes.iter().filter(|o| o.moved_rad > 0.3).count();
    assert!(moved as u64 > n * 2 / 3, "{moved} of {n} moved");
    // People really came close: some stood within the arm's reach.
    assert!(outcomes.iter().any(|o| o.min_separation_m < 0.3));
}

#[test]
fn an_arm_without_speed_and_separation_monitoring_does_touch_people() {
    // Proves the assertion above can fail: the same campaign with `[safety.arm.separation]`
    // removed (and the cell scanner that feeds it: a config without either is valid, an
    // arm in a fenced cell) swings into people who stand within its reach.
    let (mut config, package) = campaign_robot(repo()).unwrap();
    config.safety.arm.as_mut().unwrap().separation = None;
    config.safety.lidar = None;
    let caused = (0..100)
        .filter(|&seed| {
            run_arm_encounter(&config, &package, seed)
                .unwrap()
                .contacts_moving_toward
                > 0
        })
        .count();
    println!("{caused} of 100 encounters touched a person by moving");
    assert!(caused > 0, "an arm blind to people must touch someone");
}
