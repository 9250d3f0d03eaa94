//! `reflex-fleet`: the fleet simulation (see `reflex_benches::fleet`). Prints a summary table,
//! writes the results as JSON and the robots-per-version timeline as SVG.
//!
//! usage: reflex-fleet --trap DIR [--robots 200] [--canary-percent 10] [--poll-s 2]
//!        [--health-s 3] [--pad-kib 256] [--work DIR] [--json FILE] [--svg FILE]

use std::path::PathBuf;

use anyhow::{Context, Result};
use reflex_benches::fleet::{FleetOptions, fleet_bench, timeline_svg};

fn main() -> Result<()> {
    let mut o = FleetOptions {
        robots: 200,
        canary_percent: 10.0,
        poll_interval_s: 2.0,
        health_window_s: 3.0,
        model_pad_bytes: 256 << 10,
        trap_package: PathBuf::new(),
        work: std::env::temp_dir().join(format!("reflex-fleet-{}", std::process::id())),
        phase_timeout_s: 120.0,
    };
    let (mut json, mut svg) = (None, None);
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<f64> {
        v.with_context(|| format!("{what} needs a value"))?
            .parse::<f64>()
            .with_context(|| format!("{what} takes a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--robots" => o.robots = num(args.next(), "--robots")? as usize,
            "--canary-percent" => o.canary_percent = num(args.next(), "--canary-percent")?,
            "--poll-s" => o.poll_interval_s = num(args.next(), "--poll-s")?,
            "--health-s" => o.health_window_s = num(args.next(), "--health-s")?,
            "--pad-kib" => o.model_pad_bytes = num(args.next(), "--pad-kib")? as u64 * 1024,
            "--trap" => o.trap_package = args.next().context("--trap needs a package dir")?.into(),
            "--work" => o.work = args.next().context("--work needs a dir")?.into(),
            "--json" => json = Some(args.next().context("--json needs a file")?),
            "--svg" => svg = Some(args.next().context("--svg needs a file")?),
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: reflex-fleet --trap DIR [--robots 200] [--canary-percent 10] [--poll-s 2] [--health-s 3] [--pad-kib 256] [--work DIR] [--json FILE] [--svg FILE]"
            ),
        }
    }
    anyhow::ensure!(
        o.trap_package.join("policy.json").is_file(),
        "--trap {}: no package there; make it with `.venv/bin/python benches/fleet_trap.py --src models/demo/tiny-mlp --out DIR` (scripts/bench-fleet does)",
        o.trap_package.display()
    );
    anyhow::ensure!(o.robots >= 1, "--robots must be at least 1");
    let r = fleet_bench(&o)?;
    let _ = std::fs::remove_dir_all(&o.work);
    println!(
        "fleet: {} robots ({} canary), poll {} s, health window {} s; first install of v1 {:.1} s",
        r.robots, r.canary_robots, r.poll_interval_s, r.health_window_s, r.first_install_s
    );
    println!(
        "{:<58} {:>8} {:>8} {:>8}",
        "phase", "robots", "p50 s", "all s"
    );
    for p in &r.phases {
        println!(
            "{:<58} {:>8} {:>8.1} {:>8.1}",
            p.name, p.robots, p.p50_s, p.seconds
        );
    }
    println!(
        "idle: {:.2} registry requests per robot per poll interval ({} HEAD, {} GET manifest, {} GET blob in the window)",
        r.idle_requests_per_robot_per_poll,
        r.idle_window.manifest_head,
        r.idle_window.manifest_get,
        r.idle_window.blob_get
    );
    println!(
        "rollout: {} requests ({:.1} per robot); blob bytes {} transferred vs {} minimum ({:.3}×); {} (robot, blob) pairs fetched twice",
        r.rollout_requests.total,
        r.rollout_requests.total as f64 / r.robots as f64,
        r.blob_bytes_transferred,
        r.blob_bytes_minimum,
        r.blob_bytes_transferred as f64 / r.blob_bytes_minimum.max(1) as f64,
        r.blobs_fetched_twice
    );
    println!(
        "consistency: {} stable robots ran v3, {} robots ran a model of no published version, {} stores not on a verified v2 at the end; {:.1} polls per robot",
        r.stable_robots_that_ran_v3,
        r.robots_with_foreign_model,
        r.robots_inconsistent_at_end,
        r.polls_per_robot
    );
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("cannot write {path}"))?;
    }
    if let Some(path) = svg {
        std::fs::write(&path, timeline_svg(&r)).with_context(|| format!("cannot write {path}"))?;
    }
    anyhow::ensure!(
        r.stable_robots_that_ran_v3 == 0
            && r.robots_with_foreign_model == 0
            && r.robots_inconsistent_at_end == 0,
        "the rollout was not clean (see above)"
    );
    Ok(())
}
