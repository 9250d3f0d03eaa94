//! `reflex-bench`: the latency harness. Times every call (no averaging) and prints the median
//! and full tail; `--json FILE` also writes the results.

use std::time::Instant;

use anyhow::{Context, Result};
use reflex_benches::infer::{InferBench, MODELS};
use reflex_benches::looping::{ARM_DIMS, ARM_HORIZON, ARM_JOINTS, LoopBench, spawn_feeder};
use reflex_benches::{SafetyBench, ScanCase, Tail};
use reflex_rt::ticker::{self as rt, OverrunPolicy, RtConfig, Ticker};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

#[derive(serde::Serialize)]
struct LoopRow {
    period_ms: f64,
    seconds: f64,
    hog: bool,
    grants: String,
    deadline_misses: u64,
    /// Hypervisor steal during the run (ms), from /proc/stat: time this VM's CPUs did not run.
    host_steal_ms: f64,
    lateness: Tail,
    tick_cost: Tail,
    /// The whole sample as a histogram: `[bin start in µs, count]` for every non-empty 1 µs bin.
    lateness_hist_us: Vec<(u64, u64)>,
    /// `[bin start in ns, count]` for every non-empty 100 ns bin.
    tick_cost_hist_100ns: Vec<(u64, u64)>,
}

/// `[bin start, count]` of the non-empty bins of width `bin` over sorted `samples`, in units of
/// `bin`'s unit (`samples / unit`).
fn sparse_hist(sorted: &[u64], bin: u64, unit: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in sorted {
        let start = s / bin * bin / unit;
        match out.last_mut() {
            Some((b, n)) if *b == start => *n += 1,
            _ => out.push((start, 1)),
        }
    }
    out
}

/// A busy loop pinned to `cpu` until `stop`: the "CPU hog" of the loop benches.
fn hog(cpu: usize, stop: &AtomicBool) -> u64 {
    let _pin = rt::apply(&RtConfig {
        cpu: Some(cpu),
        ..RtConfig::default()
    });
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

#[derive(serde::Serialize)]
struct ArmTickRow {
    horizon: usize,
    dims: usize,
    period_ms: f64,
    seconds: f64,
    grants: String,
    deadline_misses: u64,
    host_steal_ms: f64,
    /// Chunks merged on the RT thread (one every 100 ms: a 10 Hz policy).
    merges: u64,
    /// Ticks whose verdict drove the joints (not a stop): the measurement is of a moving arm.
    ticks_driving: u64,
    lateness: Tail,
    tick_cost: Tail,
    /// The costliest ticks were merge ticks: cost of the ticks that merged a chunk.
    merge_tick_cost: Tail,
    /// The same ticks back to back with warm caches (a merge every 10th): the algorithm's cost
    /// without the cold-cache wake-up of a 100 Hz tick.
    warm_tick_cost: Tail,
    /// The robot I/O thread's two-camera observation hand-off at 30 Hz: a 640×480 rgb8 front
    /// frame and a 320×240 bgr8 wrist frame into the arm demo's inputs (letterboxed 64×64
    /// uint8 NCHW, center-cropped 48×48 float32 NHWC normalized), then the triple-buffer publish.
    camera_handoff_cost: Tail,
    tick_cost_hist_100ns: Vec<(u64, u64)>,
}

/// The arm control loop: H = 100, A = 14 chunks merged at 10 Hz, 100 Hz ticks on absolute
/// deadlines (RT-pinned as `reflex run`), while another thread hands off two-camera
/// observations at 30 Hz as the robot I/O thread does.
fn arm_tick_bench(seconds: f64) -> Result<ArmTickRow> {
    let warm_tick_cost = {
        let mut warm = LoopBench::arm()?;
        let mut actions = vec![0.0f32; ARM_HORIZON * ARM_DIMS];
        let mut now = 1_000_000_000u64;
        let mut i = 0u64;
        time_calls(20_000, || {
            now += 10_000_000;
            i += 1;
            if i.is_multiple_of(10) {
                let from = (now as f64 * 1e-9 * 0.3 % 2.0) as f32;
                LoopBench::feed_arm(&warm.channel, now - 40_000_000, from, &mut actions);
            }
            std::hint::black_box(warm.tick_arm(now, &|| 0));
        })
    };
    let mut bench = LoopBench::arm()?;
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    rt::keep_off_cpu(cpus - 1).map_err(anyhow::Error::msg)?;
    let channel = bench.channel.clone();
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut actions = vec![0.0f32; ARM_HORIZON * ARM_DIMS];
            let t0 = rt::now_ns();
            while !stop.load(Ordering::Acquire) {
                let t_obs = rt::now_ns().saturating_sub(40_000_000);
                // Where a 0.3 rad/s reach is now (wrapping every 2 rad).
                let from = ((t_obs.saturating_sub(t0)) as f64 * 1e-9 * 0.3 % 2.0) as f32;
                LoopBench::feed_arm(&channel, t_obs, from, &mut actions);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    let package = reflex_policy::PolicyPackage::open(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/demo/reflex-demo-arm-reach"),
    )?;
    let manifest = package.manifest.clone();
    let cameras = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use reflex_policy::image::{RgbFrame, fill_image};
            let (mut obs_in, _obs_out) = triple_buffer::triple_buffer(&manifest.observation());
            let specs: Vec<_> = manifest.image_inputs().cloned().collect();
            let front: Vec<u8> = (0..640 * 480 * 3).map(|i| (i * 7 % 251) as u8).collect();
            let wrist: Vec<u8> = (0..320 * 240 * 3).map(|i| (i * 13 % 251) as u8).collect();
            let frames = [
                RgbFrame {
                    width: 640,
                    height: 480,
                    step: 1920,
                    bgr: false,
                    data: &front,
                },
                RgbFrame {
                    width: 320,
                    height: 240,
                    step: 960,
                    bgr: true,
                    data: &wrist,
                },
            ];
            let mut cost = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let start = rt::now_ns();
                let o = obs_in.input_buffer_mut();
                for (i, frame) in frames.iter().enumerate() {
                    assert!(
                        fill_image(frame, &specs[i], &mut o.images[i]),
                        "camera {i} refused"
                    );
                }
                o.t_obs_ns = start;
                obs_in.publish();
                cost.push(rt::now_ns() - start);
                std::thread::sleep(std::time::Duration::from_micros(33_333));
            }
            cost
        })
    };
    let steal_before = rt::host_steal_ms();
    let period_ns = 10_000_000u64;
    let n = (seconds * 100.0).round() as usize;
    let rt_thread = std::thread::spawn(move || {
        let grants = rt::apply(&RtConfig {
            fifo_priority: Some(80),
            lock_memory: true,
            cpu: Some(cpus - 1),
            cpu_dma_latency_us: Some(0),
            ..RtConfig::default()
        });
        let (mut lateness, mut cost, mut merge_cost) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
        let mut driving = 0u64;
        let mut ticker = Ticker::new(period_ns, OverrunPolicy::Skip, rt::now_ns());
        for _ in 0..n {
            let tick = ticker.wait();
            lateness.push(tick.lateness_ns());
            let merges = bench.control.queue.stats.merges;
            let start = rt::now_ns();
            let verdict = std::hint::black_box(bench.tick_arm(tick.woke_ns, &rt::now_ns));
            let c = rt::now_ns() - start;
            cost.push(c);
            if bench.control.queue.stats.merges != merges {
                merge_cost.push(c);
            }
            if verdict.command.joints[..ARM_JOINTS]
                .iter()
                .any(|j| j.position.is_some())
                && verdict.power_enabled
                && verdict.stop_category.is_none()
                && !verdict.reasons.iter().any(|r| {
                    matches!(
                        r,
                        reflex_safety::Reason::ArmWorkspace | reflex_safety::Reason::ArmKeepOut
                    )
                })
            {
                driving += 1;
            }
        }
        let merges = bench.control.queue.stats.merges;
        (
            lateness,
            cost,
            merge_cost,
            driving,
            merges,
            ticker.misses,
            grants.summary(),
        )
    });
    let (mut lateness, mut cost, mut merge_cost, driving, merges, misses, grants) = rt_thread
        .join()
        .map_err(|_| anyhow::anyhow!("RT thread panicked"))?;
    stop.store(true, Ordering::Release);
    let _ = feeder.join();
    let mut handoff = cameras
        .join()
        .map_err(|_| anyhow::anyhow!("camera thread panicked"))?;
    let host_steal_ms = rt::host_steal_ms()
        .zip(steal_before)
        .map_or(0.0, |(after, before)| (after - before).max(0.0));
    let tick_cost = Tail::of(&mut cost);
    Ok(ArmTickRow {
        horizon: ARM_HORIZON,
        dims: ARM_DIMS,
        period_ms: 10.0,
        seconds,
        grants,
        deadline_misses: misses,
        host_steal_ms,
        merges,
        ticks_driving: driving,
        warm_tick_cost,
        lateness: Tail::of(&mut lateness),
        merge_tick_cost: if merge_cost.is_empty() {
            anyhow::bail!("no chunk was merged: the feeder did not reach the loop")
        } else {
            Tail::of(&mut merge_cost)
        },
        camera_handoff_cost: if handoff.is_empty() {
            anyhow::bail!("no camera hand-off ran")
        } else {
            Tail::of(&mut handoff)
        },
        tick_cost_hist_100ns: sparse_hist(&cost, 100, 1),
        tick_cost,
    })
}

/// The control loop (no inference) on absolute deadlines for `seconds`, optionally with a CPU
/// hog pinned to the other core; every tick's lateness and cost recorded.
fn loop_bench(period_ms: f64, seconds: f64, hog: bool) -> Result<LoopRow> {
    let mut bench = LoopBench::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // As `reflex run` does: the feeder (standing in for the inference worker) keeps off the RT
    // CPU; the RT thread pins itself to it below, the hog to CPU 0.
    rt::keep_off_cpu(cpus - 1).map_err(anyhow::Error::msg)?;
    let feeder = spawn_feeder(bench.channel.clone(), stop.clone());
    let hog_thread = hog.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || self::hog(0, &stop))
    });
    let steal_before = rt::host_steal_ms();
    let period_ns = (period_ms * 1e6).round() as u64;
    let n = (seconds * 1e3 / period_ms).round() as usize;
    let rt_thread = std::thread::spawn(move || {
        let grants = rt::apply(&RtConfig {
            fifo_priority: Some(80),
            lock_memory: true,
            cpu: Some(cpus - 1),
            // No deep C-states while measuring: the wake-up and the cold tick both suffer.
            cpu_dma_latency_us: Some(0),
            ..RtConfig::default()
        });
        let mut lateness = Vec::with_capacity(n);
        let mut cost = Vec::with_capacity(n);
        let mut ticker = Ticker::new(period_ns, OverrunPolicy::Skip, rt::now_ns());
        for _ in 0..n {
            let tick = ticker.wait();
            lateness.push(tick.lateness_ns());
            let start = rt::now_ns();
            std::hint::black_box(bench.tick(tick.woke_ns, &rt::now_ns));
            cost.push(rt::now_ns() - start);
        }
        (lateness, cost, ticker.misses, grants.summary())
    });
    let (mut lateness, mut cost, misses, grants) = rt_thread
        .join()
        .map_err(|_| anyhow::anyhow!("RT thread panicked"))?;
    stop.store(true, Ordering::Release);
    let _ = feeder.join();
    if let Some(h) = hog_thread {
        let _ = h.join();
    }
    let host_steal_ms = rt::host_steal_ms()
        .zip(steal_before)
        .map_or(0.0, |(after, before)| (after - before).max(0.0));
    let (lateness_tail, cost_tail) = (Tail::of(&mut lateness), Tail::of(&mut cost));
    Ok(LoopRow {
        period_ms,
        seconds,
        hog,
        grants,
        deadline_misses: misses,
        host_steal_ms,
        lateness: lateness_tail,
        tick_cost: cost_tail,
        lateness_hist_us: sparse_hist(&lateness, 1_000, 1_000),
        tick_cost_hist_100ns: sparse_hist(&cost, 100, 1),
    })
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
    if args.peek().is_some_and(|a| a == "hog") {
        // The same CPU hog as `loop --hog on`, as its own process (for cyclictest and the Python
        // peer): pinned to `--cpu` (default 0) until killed.
        args.next();
        let cpu = match (args.next().as_deref(), args.next()) {
            (None, _) => 0,
            (Some("--cpu"), Some(n)) => n.parse().context("--cpu: a CPU number, e.g. 0")?,
            (other, _) => {
                anyhow::bail!("unknown argument {other:?}; usage: reflex-bench hog [--cpu N]")
            }
        };
        hog(cpu, &AtomicBool::new(false));
        return Ok(());
    }
    if args.peek().is_some_and(|a| a == "arm-tick") {
        args.next();
        let (mut seconds, mut json) = (30.0f64, None);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--seconds" => {
                    seconds = args
                        .next()
                        .context("--seconds needs a number")?
                        .parse()
                        .context("--seconds: a number, e.g. 30")?
                }
                "--json" => json = Some(args.next().context("--json needs a file path")?),
                other => anyhow::bail!(
                    "unknown argument {other:?}; usage: reflex-bench arm-tick [--seconds S] [--json FILE]"
                ),
            }
        }
        let row = arm_tick_bench(seconds)?;
        let us = |t: &Tail| {
            format!(
                "p50 {:.1} / p99 {:.1} / max {:.1} µs",
                t.p50_ns as f64 / 1e3,
                t.p99_ns as f64 / 1e3,
                t.max_ns as f64 / 1e3
            )
        };
        println!(
            "arm tick H={} A={} at 100 Hz for {} s ({}): tick {}; merge ticks ({}) {}; lateness {}; misses {}; steal {:.1} ms; ticks driving {} of {}; warm back to back: {}",
            row.horizon,
            row.dims,
            row.seconds,
            row.grants,
            us(&row.tick_cost),
            row.merges,
            us(&row.merge_tick_cost),
            us(&row.lateness),
            row.deadline_misses,
            row.host_steal_ms,
            row.ticks_driving,
            row.tick_cost.samples,
            us(&row.warm_tick_cost)
        );
        println!(
            "two-camera observation hand-off at 30 Hz: {}",
            us(&row.camera_handoff_cost)
        );
        if let Some(path) = json {
            std::fs::write(&path, serde_json::to_string_pretty(&row)?)
                .with_context(|| format!("cannot write {path}"))?;
            println!("wrote {path}");
        }
        return Ok(());
    }
    if args.peek().is_some_and(|a| a == "loop") {
        args.next();
        let (mut seconds, mut json) = (60.0f64, None);
        let (mut periods, mut hogs) = (vec![10.0, 1.0], vec![false, true]);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--period-ms" => {
                    let p: f64 = args
                        .next()
                        .context("--period-ms needs a number")?
                        .parse()
                        .context("--period-ms: a number of ms, e.g. 10")?;
                    anyhow::ensure!(
                        (0.1..=1000.0).contains(&p),
                        "--period-ms {p}: use 0.1 to 1000 ms"
                    );
                    periods = vec![p];
                }
                "--hog" => {
                    hogs = match args.next().as_deref() {
                        Some("on") => vec![true],
                        Some("off") => vec![false],
                        Some("both") => vec![false, true],
                        other => anyhow::bail!("--hog {other:?}: use on, off or both"),
                    }
                }
                "--seconds" => {
                    seconds = args
                        .next()
                        .context("--seconds needs a number")?
                        .parse()
                        .context("--seconds: a number, e.g. 60")?
                }
                "--json" => json = Some(args.next().context("--json needs a file path")?),
                other => anyhow::bail!(
                    "unknown argument {other:?}; usage: reflex-bench loop [--seconds S] [--period-ms P] [--hog on|off|both] [--json FILE]"
                ),
            }
        }
        let mut rows = Vec::new();
        println!(
            "{:>9} {:>5} {:>7} {:>10} {:>10} {:>10} {:>10}   {:>8} {:>8} {:>8}",
            "period_ms",
            "hog",
            "misses",
            "late_p50",
            "late_p99",
            "late_p999",
            "late_max",
            "tick_p50",
            "tick_p99",
            "tick_max"
        );
        for &period_ms in &periods {
            for &hog in &hogs {
                let row = loop_bench(period_ms, seconds, hog)?;
                println!(
                    "{:>9} {:>5} {:>7} {:>10} {:>10} {:>10} {:>10}   {:>8} {:>8} {:>8}   (ns; {})",
                    period_ms,
                    hog,
                    row.deadline_misses,
                    row.lateness.p50_ns,
                    row.lateness.p99_ns,
                    row.lateness.p999_ns,
                    row.lateness.max_ns,
                    row.tick_cost.p50_ns,
                    row.tick_cost.p99_ns,
                    row.tick_cost.max_ns,
                    row.grants
                );
                rows.push(row);
            }
        }
        if let Some(path) = json {
            std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
                .with_context(|| format!("cannot write {path}"))?;
            println!("wrote {path}");
        }
        return Ok(());
    }
    if args.peek().is_some_and(|a| a == "pull" || a == "swap") {
        let mode = args.next().unwrap_or_default();
        let (mut mb, mut runs, mut seconds, mut json) = (512u64, 3usize, 30.0f64, None);
        while let Some(arg) = args.next() {
            let mut num = |name: &str| -> Result<f64> {
                args.next()
                    .with_context(|| format!("{name} needs a number"))?
                    .parse()
                    .with_context(|| format!("{name}: a number"))
            };
            match arg.as_str() {
                "--mb" => mb = num("--mb")? as u64,
                "--runs" => runs = num("--runs")? as usize,
                "--seconds" => seconds = num("--seconds")?,
                "--json" => json = Some(args.next().context("--json needs a file path")?),
                other => anyhow::bail!(
                    "unknown argument {other:?}; usage: reflex-bench pull [--mb 512] [--runs 3] [--json FILE] | swap [--seconds 30] [--json FILE]"
                ),
            }
        }
        let value = if mode == "pull" {
            let work =
                std::env::temp_dir().join(format!("reflex-pull-bench-{}", std::process::id()));
            let result = reflex_benches::updates::pull_bench(&work, mb, runs.max(1))?;
            for r in &result.runs {
                println!(
                    "pull run {}: {} bytes in {:.3} s = {:.0} MB/s (verified: signature, sha256 of every blob, fsync, rename)",
                    r.run, r.bytes, r.seconds, r.mb_per_s
                );
            }
            println!(
                "median {:.0} MB/s; sha256 alone in memory {:.0} MB/s",
                result.median_mb_per_s, result.sha256_mb_per_s
            );
            serde_json::to_value(&result)?
        } else {
            let mut rows = Vec::new();
            for every in [0.0, 0.5] {
                let row = reflex_benches::updates::swap_bench(seconds, every)?;
                println!(
                    "swaps {:>3} (loop saw {}, costliest swap tick {:.1} µs, p99.9 of the other ticks {:.0} µs): ticks {} misses {} lateness p50/p99/p99.9/max {}/{}/{}/{} µs, tick p50/p99/p99.9/max {}/{}/{}/{:.1} µs, first action p50/max {:.1}/{:.1} ms",
                    row.swaps,
                    row.swap_ticks,
                    row.swap_tick_max_us,
                    row.tick_p999_without_swaps_us,
                    row.ticks,
                    row.deadline_misses,
                    row.lateness_p50_us,
                    row.lateness_p99_us,
                    row.lateness_p999_us,
                    row.lateness_max_us,
                    row.tick_p50_us,
                    row.tick_p99_us,
                    row.tick_p999_us,
                    row.tick_max_us,
                    row.first_action_p50_ms,
                    row.first_action_max_ms
                );
                rows.push(row);
            }
            serde_json::to_value(&rows)?
        };
        if let Some(path) = json {
            std::fs::write(&path, serde_json::to_string_pretty(&value)?)
                .with_context(|| format!("cannot write {path}"))?;
            println!("wrote {path}");
        }
        return Ok(());
    }
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
                    "usage: reflex-bench [--calls N] [--json FILE]\n  times Safety::evaluate per call over 360/720/1081/1440/2048-beam scans"
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
    for beams in [360usize, 720, 1081, 1440, 2048] {
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
