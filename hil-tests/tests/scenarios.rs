//! Every scenario file in `hil-tests/scenarios/` runs in lockstep with the real safety layer
//! and all its assertions hold; a summary table is printed. Then the assertions are shown to be
//! able to fail, by breaking what they guard.

use std::path::{Path, PathBuf};

use reflex_hil::demo_safety_config;
use reflex_hil::scenario::Scenario;

// SAF-010 in scenarios: allocations inside `Safety::evaluate` are counted.
#[global_allocator]
static ALLOC: reflex_hil::alloc::Counting = reflex_hil::alloc::Counting;

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn load(name: &str) -> Scenario {
    Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(format!("{name}.toml")),
    )
    .unwrap()
}

#[test]
fn every_scenario_passes_its_assertions() {
    let files = scenario_files();
    assert!(files.len() >= 20, "{files:?}");
    let mut failures = Vec::new();
    // REFLEX_SCENARIO_REPORTS=DIR writes a report folder per scenario.
    let reports = std::env::var_os("REFLEX_SCENARIO_REPORTS").map(PathBuf::from);
    println!(
        "{:<32} {:<7} {:>6} {:>9} {:>9}  covers",
        "scenario", "result", "ticks", "min_clr_m", "max_v"
    );
    for file in &files {
        let s = Scenario::load(file).unwrap();
        let report = s.run(&s.safety_config().unwrap()).unwrap();
        let checks = s.check(&report);
        if let Some(dir) = &reports {
            s.write_report(&dir.join(&s.name), &report, &checks)
                .unwrap();
        }
        let ok = checks.iter().all(|c| c.passed);
        println!(
            "{:<32} {:<7} {:>6} {:>9.3} {:>9.3}  {}",
            s.name,
            if ok { "pass" } else { "FAIL" },
            report.ticks,
            report.min_clearance_m,
            report.max_speed_mps,
            s.covers.join(" ")
        );
        for c in checks.iter().filter(|c| !c.passed) {
            failures.push(format!("{}: {} — {}", s.name, c.assertion, c.detail));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_assertions_can_fail() {
    let config = demo_safety_config();
    // no_collision / min_clearance: the safety layer is told the drive brakes 4× harder than it
    // does, with a 1 mm margin, no reaction time and no slow-down zone.
    let wall = load("corridor_wall_adversarial");
    let mut optimistic = config.clone();
    let lidar = optimistic.lidar.as_mut().unwrap();
    lidar.margin_m = 0.001;
    lidar.reaction_time_ms = 0.0;
    lidar.slowdown_depth_m = 0.0;
    optimistic.base.as_mut().unwrap().brake_decel_mps2 *= 4.0;
    let real_brake = config.base.as_ref().unwrap().brake_decel_mps2;
    let report = wall.run_with_brakes(&optimistic, Some(real_brake)).unwrap();
    let failed: Vec<_> = wall
        .check(&report)
        .into_iter()
        .filter(|c| !c.passed)
        .collect();
    assert!(
        failed.iter().any(|c| c.assertion == "NoCollision"),
        "{failed:?}"
    );
    // stopped_within: an E-stop that the robot never sees (the event removed).
    let mut estop = load("estop_category_1");
    let report = {
        let mut blind = estop.clone();
        blind
            .events
            .retain(|e| e.kind != reflex_hil::scenario::EventKind::EstopPressed);
        blind.run(&config).unwrap()
    };
    let failed: Vec<_> = estop
        .check(&report)
        .into_iter()
        .filter(|c| !c.passed)
        .collect();
    assert!(
        failed
            .iter()
            .any(|c| c.assertion.starts_with("StoppedWithin")),
        "{failed:?}"
    );
    // never_faster_than / vetoed: a limit below what the layer allows, a reason that never
    // happens on this run.
    estop.assertions = toml::from_str::<toml::Table>(
        "[[assert]]\nkind = \"never_faster_than\"\nmps = 0.5\n[[assert]]\nkind = \"vetoed\"\nreason = \"scan_stale\"\n",
    )
    .unwrap()["assert"]
        .clone()
        .try_into()
        .unwrap();
    let report = estop.run(&config).unwrap();
    assert!(estop.check(&report).iter().all(|c| !c.passed));
    // no_allocations / vetoes_counted: one allocation inside evaluate, one veto not counted.
    let busy = load("saf_010_every_veto_counted_no_allocations");
    let mut report = busy.run(&busy.safety_config().unwrap()).unwrap();
    assert_eq!(report.evaluate_allocations, Some(0));
    report.evaluate_allocations = Some(1);
    let (reason, n) = report.counted_reasons.pop_last().unwrap();
    report.counted_reasons.insert(reason, n - 1);
    let failed: Vec<_> = busy
        .check(&report)
        .into_iter()
        .filter(|c| !c.passed)
        .map(|c| c.assertion)
        .collect();
    assert_eq!(failed, ["NoAllocations", "VetoesCounted"]);
    // no_deadline_misses: one miss fails the check, unless the VM's host took the CPU for at
    // least that period (the hypervisor's steal counter), which the detail then says.
    let rt = load("realtime_inference_worker_crash");
    let verdict = |steal_ms: f64| {
        let report = reflex_hil::scenario::RunReport {
            deadline_misses: 1,
            period_ms: 10.0,
            host_steal_ms: Some(steal_ms),
            ..Default::default()
        };
        rt.check(&report)
            .into_iter()
            .find(|c| c.assertion == "NoDeadlineMisses")
            .unwrap()
    };
    assert!(!verdict(0.0).passed);
    assert!(!verdict(4.0).passed);
    let host = verdict(10.0);
    assert!(host.passed && host.detail.contains("stole"), "{host:?}");
    // stopped_within after a cloud link drop: a local policy that keeps driving when the
    // cloud goes away (the robot then legitimately does not stop, and the check says so).
    let mut drop = load("cloud_link_drops");
    drop.policy = reflex_hil::scenario::Policy::Straight {
        speed_mps: 0.3,
        vy_mps: 0.0,
        wz_radps: 0.0,
    };
    let report = drop.run(&config).unwrap();
    assert!(
        drop.check(&report)
            .iter()
            .any(|c| !c.passed && c.assertion.starts_with("StoppedWithin")),
    );
}

#[test]
fn scenarios_are_deterministic() {
    // SAF-009 at system level: the same scenario gives bit-identical speeds.
    let config = demo_safety_config();
    let s = load("pedestrian_crossing");
    let a = s.run(&config).unwrap();
    let b = s.run(&config).unwrap();
    assert_eq!(a.speeds.len(), b.speeds.len());
    assert!(
        a.speeds
            .iter()
            .zip(&b.speeds)
            .all(|(x, y)| x.0.to_bits() == y.0.to_bits() && x.1.to_bits() == y.1.to_bits())
    );
}

#[test]
fn a_scenario_writes_its_report_folder() {
    let config = demo_safety_config();
    let s = load("estop_category_1");
    let report = s.run(&config).unwrap();
    let checks = s.check(&report);
    let dir = std::env::temp_dir().join(format!("reflex-hil-report-{}", std::process::id()));
    s.write_report(&dir, &report, &checks).unwrap();
    let csv = std::fs::read_to_string(dir.join("ticks.csv")).unwrap();
    assert_eq!(csv.lines().count(), report.ticks_log.len() + 1);
    assert!(csv.contains("estop_latched"));
    let svg = std::fs::read_to_string(dir.join("trajectory.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"));
    let text = std::fs::read_to_string(dir.join("checks.txt")).unwrap();
    assert!(text.contains("PASS StoppedWithin"), "{text}");
    // The MCAP of the run reads in PyPI mcap: every tick, the poses, the checks as metadata.
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, json\nfrom mcap.reader import make_reader\n\
             r = make_reader(open(sys.argv[1], 'rb'))\n\
             n = {}\n\
             for s, c, m in r.iter_messages():\n    n[c.topic] = n.get(c.topic, 0) + 1\n    json.loads(m.data)\n\
             md = {m.name: dict(m.metadata) for m in r.iter_metadata()}\n\
             print(json.dumps({'n': n, 'md': md}))",
        ])
        .arg(dir.join("run.mcap"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n"]["/sim/ticks"], report.ticks_log.len(), "{v}");
    assert_eq!(v["n"]["/sim/robot_pose"], report.ticks_log.len(), "{v}");
    assert_eq!(v["md"]["run"]["scenario"], "estop_category_1", "{v}");
    assert!(
        v["md"]["run"]["check_00"]
            .as_str()
            .unwrap()
            .starts_with("PASS"),
        "{v}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
