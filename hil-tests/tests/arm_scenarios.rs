//! Every arm scenario in `hil-tests/scenarios/arm/` runs in real time on the simulated arm
//! (`reflex sim --robot arm`'s, through the production runner) with the shipped launch/arm.toml
//! and all its assertions hold; a summary table is printed. Then five assertions are shown to
//! fail when what they guard is weakened, and the inference faults' when the fault is absent.

use std::path::Path;

use reflex_hil::arm::{ArmScenarioFile, scenario_files};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn load(name: &str) -> ArmScenarioFile {
    ArmScenarioFile::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scenarios/arm/{name}.toml")),
    )
    .unwrap()
}

/// The scenario's checks; a run in which the host starved the RT thread (watchdog trips:
/// Reflex latched its own E-stop, as it must) and a check failed is repeated once.
fn run_checked(s: &ArmScenarioFile) -> Vec<reflex_hil::arm::ArmCheck> {
    for attempt in 1..=2 {
        let (summary, trips) = s.run(repo()).unwrap();
        let checks = s.check(&summary);
        if checks.iter().all(|c| c.passed) || trips == 0 || attempt == 2 {
            return checks;
        }
        println!("HOST {}: {trips} watchdog trips; repeated", s.name);
    }
    unreachable!()
}

#[test]
fn every_arm_scenario_passes_its_assertions() {
    let files = scenario_files();
    assert!(files.len() >= 19, "{files:?}");
    let mut failures = Vec::new();
    println!("{:<36} {:<6} covers / checks", "scenario", "result");
    for file in &files {
        let s = ArmScenarioFile::load(file).unwrap();
        let checks = run_checked(&s);
        let ok = checks.iter().all(|c| c.passed);
        println!(
            "{:<36} {:<6} {}",
            s.name,
            if ok { "pass" } else { "FAIL" },
            s.covers.join(" ")
        );
        for c in &checks {
            println!(
                "    {} {}: {}",
                if c.passed { "ok  " } else { "FAIL" },
                c.what,
                c.detail
            );
            if !c.passed {
                failures.push(format!("{}: {} ({})", s.name, c.what, c.detail));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `name` with `robot` (TOML) merged over launch/arm.toml.
fn weakened(name: &str, robot: &str) -> ArmScenarioFile {
    let mut s = load(name);
    s.robot = toml::from_str(robot).unwrap();
    s
}

/// Runs `s` and asserts that a check whose name satisfies `what` fails.
fn assert_fails(s: &ArmScenarioFile, what: impl Fn(&str) -> bool) {
    let (summary, _) = s.run(repo()).unwrap();
    let checks = s.check(&summary);
    assert!(
        checks.iter().any(|c| !c.passed && what(&c.what)),
        "{}: {checks:#?}",
        s.name
    );
}

#[test]
fn the_arm_assertions_fail_when_their_guard_is_weakened() {
    // SAF-017 with the arm's base placed 20 m from the scanner (a wrong calibration): nobody
    // is near it, and it goes on toward them (not still while they stand, or not held short).
    assert_fails(
        &weakened(
            "arm_person_walks_into_the_cell",
            "[safety.arm.separation]\nbase_from_arm = { x_m = 20.0, y_m = 0.0, yaw_rad = 0.0 }",
        ),
        |w| w.starts_with("short of") || w.starts_with("still from"),
    );
    // SAF-019 untaught: the table legs are people within reach, and the arm never reaches.
    let mut s = load("arm_table_legs_taught_background");
    s.teach_background = false;
    assert_fails(&s, |w| w.starts_with("reaches"));
    // SAF-006 with a gripper range wider than the hand's: it opens past 0.08 m.
    assert_fails(
        &weakened(
            "arm_gripper_limit_attack",
            "[safety.arm]\ngripper = { min_position = 0.0, max_position = 0.2 }",
        ),
        |w| w.starts_with("gripper within"),
    );
    // SAF-006 with the shoulder's range widened to 3 rad: it is driven past 2.5.
    assert_fails(
        &weakened(
            "arm_joint_limit_attack",
            r#"[safety.arm]
joints = [
    { name = "shoulder", min_position = -2.5, max_position = 3.0, max_velocity = 1.0, max_acceleration = 4.0 },
    { name = "elbow", min_position = -2.0, max_position = 2.0, max_velocity = 1.2, max_acceleration = 4.0 },
    { name = "wrist", min_position = -3.0, max_position = 3.0, max_velocity = 2.0, max_acceleration = 8.0 },
]
workspace = { min_m = [-2.0, -2.0, -2.0], max_m = [2.0, 2.0, 2.0] }
keep_out = []"#,
        ),
        |w| w == "joint 0 within [-2.5, 2.5]",
    );
    // SAF-015 with a following-error bound the blocked elbow never reaches: no latched stop.
    assert_fails(
        &weakened(
            "arm_blocked_joint_following_error",
            "[safety.arm]\nmax_following_error = 3.0",
        ),
        |w| w == "vetoed following_error",
    );
    // SAF-018 with a stall taking longer than the run: the held elbow is never noticed.
    assert_fails(
        &weakened(
            "arm_joint_blocked_where_it_is",
            "[safety.arm]\nstall = { min_error = 0.02, time_ms = 100000.0 }",
        ),
        |w| w == "vetoed joint_stalled",
    );
    // The inference faults' checks see motion: the same files without the fault (no guard to
    // weaken in data: the worker's finiteness check and the supervisor are code) fail them.
    for (name, what) in [
        ("arm_policy_outputs_nan", "still from"),
        ("arm_inference_hangs", "still for"),
    ] {
        let mut s = load(name);
        s.inference = Default::default();
        assert_fails(&s, |w| w.starts_with(what));
    }
}

#[test]
fn arm_scenario_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("reflex-arm-scenario-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\ndescription = \"\"\ncovers = []\nduration_s = 1.0\n[[assert]]\nkind = \"moved_after\"\nafter = \"reset\"\nrad = 0.1\n",
    )
    .unwrap();
    let err = format!("{:#}", ArmScenarioFile::load(&bad).unwrap_err());
    assert!(err.contains("\"reset\""), "{err}");
    std::fs::write(
        &bad,
        "name = \"x\"\ndescription = \"\"\ncovers = []\nduration_s = 1.0\n[[events]]\nat_s = 0.5\nkind = \"joint_blocked\"\njoint = \"knee\"\n[[assert]]\nkind = \"no_limit_violations\"\n",
    )
    .unwrap();
    let s = ArmScenarioFile::load(&bad).unwrap();
    let err = format!("{:#}", s.run(repo()).unwrap_err());
    assert!(err.contains("knee") && err.contains("shoulder"), "{err}");
}
