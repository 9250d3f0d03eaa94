//! `reflex-bench`: the latency harness. Times every call (no averaging) and prints the median
//! and full tail; `--json FILE` also writes the results.

use std::time::Instant;

use anyhow::{Context, Result};
use reflex_benches::infer::{InferBench, MODELS};
use reflex_benches::{SafetyBench, ScanCase, Tail};

#[derive(serde::Serialize)]
struct Row {
    bench: &'static str,
    beams: usize,
    case: &'static str,
    #[serde(flatten)]
    tail: Tail,
}

#[derive(serde::Serialize)]
struct InferRow {
    model: &'static str,
    path: &'static str,
    #[serde(flatten)]
    tail: Tail,
}

/// Per-call timing of `f` after a warm-up.
fn time_calls(calls: usize, mut f: impl FnMut()) -> Tail {
    for _ in 0..(calls / 10).max(100) {
        f();
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        f();
        samples.push(start.elapsed().as_nanos() as u64);
    }
    Tail::of(&mut samples)
}

fn infer(calls: usize, json: Option<String>) -> Result<()> {
    let mut rows = Vec::new();
    println!(
        "{:<16} {:<8} {:>9} {:>9} {:>9} {:>9}",
        "model", "path", "p50_ns", "p99_ns", "p99.9_ns", "max_ns"
    );
    for name in MODELS {
        let mut bench = InferBench::new(name)?;
        for path in ["reflex", "bare_ort"] {
            let tail = if path == "reflex" {
                time_calls(calls, || bench.reflex_infer().expect("infer"))
            } else {
                time_calls(calls, || {
                    std::hint::black_box(bench.bare_infer().expect("infer"));
                })
            };
            println!(
                "{:<16} {:<8} {:>9} {:>9} {:>9} {:>9}",
                name, path, tail.p50_ns, tail.p99_ns, tail.p999_ns, tail.max_ns
            );
            rows.push(InferRow {
                model: name,
                path,
                tail,
            });
        }
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("cannot write {path}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let infer_mode = args.peek().is_some_and(|a| a == "infer");
    if infer_mode {
        args.next();
    }
    let mut calls = if infer_mode { 20_000usize } else { 200_000 };
    let mut json = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--calls" => {
                calls = args
                    .next()
                    .context("--calls needs a number")?
                    .parse()
                    .context("--calls needs a whole number, e.g. --calls 200000")?
            }
            "--json" => json = Some(args.next().context("--json needs a file path")?),
            "-h" | "--help" => {
                println!(
                    "usage: reflex-bench [--calls N] [--json FILE]\n  times Safety::evaluate per call over 360/1081/2048-beam scans"
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}; see reflex-bench --help"),
        }
    }
    anyhow::ensure!(calls >= 1_000, "--calls must be at least 1000, got {calls}");
    if infer_mode {
        return infer(calls, json);
    }
    let mut rows = Vec::new();
    println!(
        "{:<18} {:>5} {:>20} {:>9} {:>9} {:>9} {:>9}",
        "bench", "beams", "case", "p50_ns", "p99_ns", "p99.9_ns", "max_ns"
    );
    for beams in [360usize, 1081, 2048] {
        for case in ScanCase::ALL {
            let mut bench = SafetyBench::new(beams, case);
            for _ in 0..1_000 {
                std::hint::black_box(bench.tick());
            }
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                std::hint::black_box(bench.tick());
                samples.push(start.elapsed().as_nanos() as u64);
            }
            let tail = Tail::of(&mut samples);
            println!(
                "{:<18} {:>5} {:>20} {:>9} {:>9} {:>9} {:>9}",
                "safety_evaluate",
                beams,
                case.name(),
                tail.p50_ns,
                tail.p99_ns,
                tail.p999_ns,
                tail.max_ns
            );
            rows.push(Row {
                bench: "safety_evaluate",
                beams,
                case: case.name(),
                tail,
            });
        }
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("cannot write {path}"))?;
        println!("wrote {path}");
    }
    Ok(())
}
