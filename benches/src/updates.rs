//! Benchmarks of the model pipeline: verified pull throughput of a large package from a real
//! loopback registry (Debian's docker-registry), and the control loop's lateness and tick cost
//! while models are hot-swapped, next to the same run without swaps.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reflex_policy::{BackendConfig, OrtBackend, PolicyPackage};
use reflex_registry::oci::{self, Layout};
use reflex_registry::registry::{self, RegistryOptions, Trust};
use reflex_registry::store::Store;
use reflex_registry::testing::TestRegistry;
use reflex_runner::config::ReflexConfig;
use reflex_runner::swap::{SwapPort, SwapWhen, hand_over};
use reflex_sim::lockstep::{SimOptions, default_scenario};
use reflex_sim::run_realtime;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One verified pull.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullRow {
    pub run: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

/// Everything the pull bench measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullResult {
    pub package_mb: u64,
    pub runs: Vec<PullRow>,
    /// sha256 alone over the same bytes in memory (the ceiling of a verified pull here).
    pub sha256_mb_per_s: f64,
    pub median_mb_per_s: f64,
}

/// Packs a `mb`-MiB package, pushes it to a registry on 127.0.0.1, and times `runs` verified
/// pulls into fresh stores (signature, streaming sha256 of every blob, fsync, rename,
/// materialization): wall time of `registry::pull_to_store`.
pub fn pull_bench(work: &Path, mb: u64, runs: usize) -> Result<PullResult> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let registry = TestRegistry::start(work);
    let package = reflex_policy::derive_package(
        &repo().join("models/demo/reflex-demo-vla"),
        &work.join("package"),
        "9.0.0",
        mb << 20,
    )?;
    let layout = Layout::open_or_create(&work.join("layout"))?;
    oci::pack(&package, &layout, "9.0.0")?;
    let (secret, public) = oci::keygen()?;
    std::fs::write(work.join("bench.key"), secret)?;
    std::fs::create_dir_all(work.join("trusted"))?;
    std::fs::write(work.join("trusted/bench.pub"), public)?;
    oci::sign(&layout, "9.0.0", &work.join("bench.key"))?;
    let url = registry.url("reflex/big:bench");
    registry::push(&layout, "9.0.0", &url, &RegistryOptions::default())?;
    let sha256_mb_per_s = {
        let bytes = std::fs::read(package.onnx_path())?;
        let t = Instant::now();
        std::hint::black_box(reflex_policy::sha256_bytes(&bytes));
        bytes.len() as f64 / 1e6 / t.elapsed().as_secs_f64()
    };
    let mut rows = Vec::new();
    for run in 0..runs {
        let store_dir = work.join(format!("store-{run}"));
        let store = Store::open(&store_dir)?;
        let t = Instant::now();
        let report = registry::pull_to_store(
            &url,
            &store,
            None,
            Trust::Keys(&work.join("trusted")),
            &RegistryOptions::default(),
        )?;
        let seconds = t.elapsed().as_secs_f64();
        rows.push(PullRow {
            run,
            bytes: report.bytes_downloaded,
            seconds,
            mb_per_s: report.bytes_downloaded as f64 / 1e6 / seconds,
        });
        std::fs::remove_dir_all(&store_dir)?;
    }
    let mut speeds: Vec<f64> = rows.iter().map(|r| r.mb_per_s).collect();
    speeds.sort_by(f64::total_cmp);
    drop(registry);
    std::fs::remove_dir_all(work)?;
    Ok(PullResult {
        package_mb: mb,
        median_mb_per_s: speeds[speeds.len() / 2],
        runs: rows,
        sha256_mb_per_s,
    })
}

/// One real-time run, with or without swaps.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwapRow {
    pub swaps: usize,
    pub seconds: f64,
    pub ticks: u64,
    pub deadline_misses: u64,
    pub lateness_p50_us: f64,
    pub lateness_p99_us: f64,
    pub lateness_p999_us: f64,
    pub lateness_max_us: f64,
    pub tick_p50_us: f64,
    pub tick_p99_us: f64,
    pub tick_p999_us: f64,
    pub tick_max_us: f64,
    /// Ticks that merged a new model's first chunk (one per swap the loop saw) and the costliest
    /// of them: the pause a hot swap puts into the loop (µs).
    pub swap_ticks: u64,
    pub swap_tick_max_us: f64,
    /// p99.9 tick of this run without its swap ticks (µs; 1 µs buckets, upper edge): the normal
    /// tick under the same host conditions.
    pub tick_p999_without_swaps_us: f64,
    /// Ticks with no usable policy action (the robot was told to stop): a swap must not add any.
    pub ticks_without_action: u64,
    /// Hand-over to the loop merging the new model's first chunk, ms (median, max).
    pub first_action_p50_ms: f64,
    pub first_action_max_ms: f64,
}

/// The real-time loop on the built-in simulator for `seconds`, swapping between the demo policy
/// and a copy of it every `every_s` (0: never). Same config as `reflex sim --realtime`.
pub fn swap_bench(seconds: f64, every_s: f64) -> Result<SwapRow> {
    let mut config = ReflexConfig::load(&repo().join("launch/reflex.example.toml"))?;
    // As a production config does: the RT thread on its own CPU (the last), and everything else
    // — here the swapper standing in for the model manager — kept off it, as `reflex run` does.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > 1 {
        config.runtime.cpu = Some(cpus - 1);
    }
    let off_rt_cpu = config.runtime.cpu;
    let a = PolicyPackage::open(&repo().join("models/demo/reflex-demo-vla"))?;
    let b_dir = std::env::temp_dir().join(format!("reflex-swap-bench-{}", std::process::id()));
    let b = reflex_policy::derive_package(&a.dir, &b_dir, "0.2.0", 0)?;
    let backend = BackendConfig {
        ort_library: Some(crate::infer::ort_library()?),
        ..BackendConfig::default()
    };
    let port = Arc::new(SwapPort::new(SwapWhen::ChunkBoundary));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = (every_s > 0.0).then(|| {
        let (port, stop, backend) = (port.clone(), stop.clone(), backend.clone());
        let packages = [a.clone(), b.clone()];
        std::thread::spawn(move || -> Result<Vec<f64>> {
            if let Some(cpu) = off_rt_cpu {
                reflex_rt::ticker::keep_off_cpu(cpu).map_err(anyhow::Error::msg)?;
            }
            let mut firsts = Vec::new();
            let mut generation = 0u32;
            std::thread::sleep(Duration::from_secs(1));
            while !stop.load(Ordering::Acquire) {
                let next = Instant::now() + Duration::from_secs_f64(every_s);
                generation += 1;
                let package = &packages[generation as usize % 2];
                let mut model = OrtBackend::load(package, &backend)?;
                model.warm_up(3)?;
                match hand_over(&port, generation, Box::new(model), package, &stop) {
                    Ok(ms) => firsts.push(ms),
                    Err(_) if stop.load(Ordering::Acquire) => break,
                    Err(e) => return Err(e),
                }
                while Instant::now() < next && !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Ok(firsts)
        })
    });
    let options = SimOptions {
        duration_s: seconds,
        ..SimOptions::default()
    };
    let result = run_realtime(
        &config.safety,
        &a,
        &backend,
        &config.runtime,
        default_scenario(1),
        &options,
        &port,
    );
    stop.store(true, Ordering::Release);
    let mut firsts = match swapper {
        Some(h) => h
            .join()
            .map_err(|_| anyhow::anyhow!("the swapper thread panicked"))??,
        None => Vec::new(),
    };
    let _ = std::fs::remove_dir_all(&b_dir);
    let (summary, report) = result?;
    firsts.sort_by(f64::total_cmp);
    Ok(SwapRow {
        swaps: firsts.len(),
        seconds,
        ticks: summary.run.ticks,
        deadline_misses: summary.run.deadline_misses,
        lateness_p50_us: report.lateness_p50_us,
        lateness_p99_us: report.lateness_p99_us,
        lateness_p999_us: report.lateness_p999_us,
        lateness_max_us: report.lateness_max_us,
        tick_p50_us: summary.run.tick_p50_us,
        tick_p99_us: summary.run.tick_p99_us,
        tick_p999_us: summary.run.tick_p999_us,
        tick_max_us: summary.run.tick_max_us,
        swap_ticks: report.swap_ticks,
        swap_tick_max_us: report.swap_tick_max_us,
        tick_p999_without_swaps_us: report.tick_p999_without_swaps_us,
        ticks_without_action: summary.run.ticks_without_action,
        first_action_p50_ms: firsts.get(firsts.len() / 2).copied().unwrap_or(0.0),
        first_action_max_ms: firsts.last().copied().unwrap_or(0.0),
    })
}
