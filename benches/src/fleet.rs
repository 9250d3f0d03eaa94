//! The fleet simulation: N robots, each a real Reflex model manager (`updates::Updater`: poll
//! with jitter, rollout check, signed pull into its own `Store`, the activation transaction,
//! health window, rollback, GC) following `stable` or `canary` of one Debian `docker-registry`
//! on 127.0.0.1, all in this process. A staged rollout is scripted against them: v2 to canary,
//! health windows pass, stable moves to v2; then a bad v3 on canary fails its health window and
//! rolls back on every canary robot.
//!
//! What stands in for each robot's control loop and inference worker is [`Body`]: a thread that
//! takes hand-overs from the model manager exactly as the worker does (the `SwapPort` slot, at
//! a chunk boundary), runs the model it holds on ONNX Runtime at 10 Hz on the robot's state
//! (alternately near its start and 12 m away), drops non-finite chunks and reports inferences, NaN chunks
//! and latency through the same port counters the health window reads. There is no simulated
//! world or safety layer per robot: 200 of them would measure this 2-core host, not the
//! rollout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reflex_policy::{BackendConfig, OrtBackend, PolicyBackend, PolicyPackage};
use reflex_registry::oci::{self, Layout};
use reflex_registry::registry::{self, RegistryOptions};
use reflex_registry::testing::TestRegistry;
use reflex_runner::swap::{SwapPort, SwapWhen};
use reflex_runner::updates::{self, Updater, UpdatesConfig};
use serde::Serialize;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub robots: usize,
    /// Robots whose id hashes below this share (0–100) follow `canary`, the rest `stable`.
    pub canary_percent: f64,
    pub poll_interval_s: f64,
    pub health_window_s: f64,
    /// Bytes added to each version's model file (distinct sizes keep the blobs distinct).
    pub model_pad_bytes: u64,
    /// The bad v3 package (`benches/fleet_trap.py`).
    pub trap_package: PathBuf,
    pub work: PathBuf,
    /// Give up a phase after this long.
    pub phase_timeout_s: f64,
}

/// Which version a robot's body runs, sampled over time.
const VERSIONS: [&str; 4] = ["none", "1.0.0", "2.0.0", "3.0.0"];

/// One robot's stand-in loop and worker.
struct Body {
    /// Index into `VERSIONS` of the model it runs now.
    running: Arc<AtomicU8>,
    /// Set when the body ran a model whose digest is none of the published versions'.
    foreign: Arc<AtomicBool>,
}

impl Body {
    fn spawn(
        port: Arc<SwapPort>,
        backend: OrtBackend,
        manifest: reflex_policy::PolicyManifest,
        digests: Arc<BTreeMap<String, u8>>,
        stop: Arc<AtomicBool>,
    ) -> Result<(Self, std::thread::JoinHandle<Result<()>>)> {
        let running = Arc::new(AtomicU8::new(0));
        let foreign = Arc::new(AtomicBool::new(false));
        let body = Self {
            running: running.clone(),
            foreign: foreign.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("fleet-body".into())
            .stack_size(256 << 10)
            .spawn(move || -> Result<()> {
                let mut backend: Box<dyn PolicyBackend> = Box::new(backend);
                let mut generation = 0u32;
                let mut obs = manifest.observation();
                let mut chunk = manifest.action_chunk();
                let version_of = |b: &dyn PolicyBackend| -> u8 {
                    *digests.get(&b.describe().model_digest).unwrap_or(&0)
                };
                let v = version_of(&*backend);
                running.store(v, Ordering::Release);
                if v == 0 {
                    foreign.store(true, Ordering::Release);
                }
                let mut k = 0u64;
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(100));
                    // Chunk boundary: take a waiting candidate, as the inference worker does.
                    if let Some((g, next)) = port.take_candidate() {
                        backend = next;
                        generation = g;
                        let v = version_of(&*backend);
                        running.store(v, Ordering::Release);
                        if v == 0 {
                            foreign.store(true, Ordering::Release);
                        }
                    }
                    // Near home, then 12 m away (state[0] is the distance), then near home…
                    k += 1;
                    for (i, s) in obs.state.iter_mut().enumerate() {
                        *s = 0.1 + 0.01 * i as f32;
                    }
                    obs.state[0] = if k % 2 == 1 { 1.0 } else { 12.0 };
                    obs.t_obs_ns = reflex_rt::ticker::now_ns();
                    let t0 = Instant::now();
                    // The backend refuses a NaN/inf output (an error): like a non-finite chunk,
                    // it never reaches the loop, and the health window counts it.
                    let ok = backend.infer(&obs, &mut chunk).is_ok();
                    let took = t0.elapsed().as_nanos() as u64;
                    port.status.inferences.fetch_add(1, Ordering::Relaxed);
                    port.status
                        .inference_max_ns
                        .fetch_max(took, Ordering::Relaxed);
                    port.status.ticks.fetch_add(1, Ordering::Relaxed);
                    if !ok || chunk.actions.iter().any(|a| !a.is_finite()) {
                        // Dropped: it never reaches the loop.
                        port.status.nonfinite_chunks.fetch_add(1, Ordering::Relaxed);
                    } else if port.status.loop_generation.load(Ordering::Acquire) != generation {
                        port.status
                            .generation_since_ns
                            .store(reflex_rt::ticker::now_ns(), Ordering::Release);
                        port.status
                            .loop_generation
                            .store(generation, Ordering::Release);
                    }
                }
                Ok(())
            })
            .context("cannot start a body thread")?;
        Ok((body, handle))
    }
}

/// One robot of the fleet.
struct Robot {
    id: String,
    canary: bool,
    store: PathBuf,
    body: Body,
}

/// Counts of registry requests in a time window, from the registry's own log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    pub total: u64,
    pub manifest_head: u64,
    pub manifest_get: u64,
    pub blob_get: u64,
    pub other: u64,
    pub blob_bytes: u64,
    pub manifest_bytes: u64,
}

/// What a phase of the rollout took.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    /// From publishing the tag to the last robot concerned done, s.
    pub seconds: f64,
    /// Per robot concerned: seconds from publish to done (p50, max).
    pub p50_s: f64,
    pub max_s: f64,
    pub robots: usize,
}

/// The whole simulation's results.
#[derive(Debug, Clone, Serialize)]
pub struct FleetResult {
    pub robots: usize,
    pub canary_robots: usize,
    pub poll_interval_s: f64,
    pub health_window_s: f64,
    pub first_install_s: f64,
    pub phases: Vec<Phase>,
    /// Steady state (no tag moves): requests per robot per poll interval.
    pub idle_requests_per_robot_per_poll: f64,
    pub idle_window: Requests,
    /// Requests per robot over the whole rollout (v2 canary → stable → v3 → rolled back).
    pub rollout_requests: Requests,
    /// Bytes of blobs (config + layers) each robot had to fetch at least (each blob once:
    /// v1 and v2 for all, v3 for canary robots), summed over the fleet, vs what was transferred.
    pub blob_bytes_minimum: u64,
    pub blob_bytes_transferred: u64,
    /// (robot, blob) pairs fetched more than once.
    pub blobs_fetched_twice: u64,
    pub stable_robots_that_ran_v3: usize,
    /// Robots whose running model was ever none of the published versions' (a mix).
    pub robots_with_foreign_model: usize,
    /// Robots whose store, at the end, has an active version other than 2.0.0 or a package
    /// whose files do not verify.
    pub robots_inconsistent_at_end: usize,
    /// Version samples: (seconds, robots on none/1/2/3).
    pub timeline: Vec<(f64, [usize; 4])>,
    /// Tag moves: (seconds on the timeline, what).
    pub publishes: Vec<(f64, String)>,
    /// Polls the managers made, per robot (mean).
    pub polls_per_robot: f64,
}

struct LogLine {
    at: f64,
    method: String,
    uri: String,
    agent: String,
    written: u64,
    status: u64,
}

/// Parses distribution's JSON log lines (`msg` = `response completed…`), times in seconds since
/// the Unix epoch.
fn read_log(path: &Path) -> Result<Vec<LogLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the registry log {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if !v["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("response completed"))
        {
            continue;
        }
        let at = v["time"]
            .as_str()
            .and_then(parse_rfc3339)
            .unwrap_or_default();
        out.push(LogLine {
            at,
            method: v["http.request.method"].as_str().unwrap_or("").into(),
            uri: v["http.request.uri"].as_str().unwrap_or("").into(),
            agent: v["http.request.useragent"].as_str().unwrap_or("").into(),
            written: v["http.response.written"].as_u64().unwrap_or(0),
            status: v["http.response.status"].as_u64().unwrap_or(0),
        });
    }
    Ok(out)
}

/// `2026-11-22T22:04:37.583467239Z` → Unix seconds.
fn parse_rfc3339(s: &str) -> Option<f64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + (h * 3600 + min * 60) as f64 + sec)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn count(lines: &[LogLine], from: f64, to: f64) -> Requests {
    let mut r = Requests::default();
    for l in lines
        .iter()
        .filter(|l| l.at >= from && l.at < to && l.agent.contains("robot/"))
    {
        r.total += 1;
        let manifest = l.uri.contains("/manifests/");
        match (l.method.as_str(), manifest) {
            ("HEAD", true) => r.manifest_head += 1,
            ("GET", true) => {
                r.manifest_get += 1;
                r.manifest_bytes += l.written;
            }
            ("GET", false) if l.uri.contains("/blobs/") => {
                r.blob_get += 1;
                r.blob_bytes += l.written;
            }
            _ => r.other += 1,
        }
    }
    r
}

/// Blobs (config and layers) of the version tagged `tag` in `layout`, by digest → size.
fn version_blobs(layout: &Layout, tag: &str) -> Result<BTreeMap<String, u64>> {
    let index: oci::ImageIndex = serde_json::from_slice(&layout.read_blob(&layout.resolve(tag)?)?)?;
    let mut blobs = BTreeMap::new();
    for desc in &index.manifests {
        let manifest: oci::ImageManifest = serde_json::from_slice(&layout.read_blob(desc)?)?;
        for b in std::iter::once(&manifest.config).chain(&manifest.layers) {
            blobs.insert(b.digest.clone(), b.size);
        }
    }
    Ok(blobs)
}

fn wait_until(
    what: &str,
    timeout_s: f64,
    stop_early: &dyn Fn() -> bool,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let end = Instant::now() + Duration::from_secs_f64(timeout_s);
    while !done() {
        anyhow::ensure!(!stop_early(), "{what}: a robot thread failed");
        anyhow::ensure!(
            Instant::now() < end,
            "{what}: not done within {timeout_s} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The store's record: (active version, refused index digests).
fn record(store: &Path) -> (Option<String>, Vec<String>) {
    match updates::status(store) {
        Ok(v) => (
            v["active"]["version"].as_str().map(str::to_string),
            v["refused"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect(),
        ),
        Err(_) => (None, Vec::new()),
    }
}

/// Runs the simulation.
pub fn fleet_bench(o: &FleetOptions) -> Result<FleetResult> {
    let _ = std::fs::remove_dir_all(&o.work);
    std::fs::create_dir_all(&o.work)
        .with_context(|| format!("cannot create {}", o.work.display()))?;
    let registry = TestRegistry::start_logged(&o.work.join("registry"));
    let backend = BackendConfig {
        ort_library: Some(crate::infer::ort_library()?),
        ..BackendConfig::default()
    };
    reflex_policy::load_onnx_runtime(backend.ort_library.as_deref())?;

    // Three signed versions in one layout: v1, v2 (good), v3 (the trap).
    let tiny = repo().join("models/demo/tiny-mlp");
    let v1 = reflex_policy::derive_package(&tiny, &o.work.join("v1"), "1.0.0", o.model_pad_bytes)?;
    let v2 =
        reflex_policy::derive_package(&tiny, &o.work.join("v2"), "2.0.0", o.model_pad_bytes + 1)?;
    let v3 = reflex_policy::derive_package(
        &o.trap_package,
        &o.work.join("v3"),
        "3.0.0",
        o.model_pad_bytes + 2,
    )?;
    let layout = Layout::open_or_create(&o.work.join("layout"))?;
    let (secret, public) = oci::keygen()?;
    std::fs::write(o.work.join("release.key"), secret)?;
    let trusted = o.work.join("trusted");
    std::fs::create_dir_all(&trusted)?;
    std::fs::write(trusted.join("release.pub"), public)?;
    let mut digests = BTreeMap::new();
    for (i, p) in [&v1, &v2, &v3].into_iter().enumerate() {
        let tag = &p.manifest.version;
        oci::pack(p, &layout, tag)?;
        oci::sign(&layout, tag, &o.work.join("release.key"))?;
        let model = OrtBackend::load(p, &backend)?;
        digests.insert(model.describe().model_digest, i as u8 + 1);
    }
    anyhow::ensure!(digests.len() == 3, "the three versions' models must differ");
    let digests = Arc::new(digests);
    let stable = registry.url("reflex/fleet:stable");
    let canary = registry.url("reflex/fleet:canary");
    let opts = RegistryOptions::default();
    registry::push(&layout, "1.0.0", &stable, &opts)?;
    registry::push(&layout, "1.0.0", &canary, &opts)?;

    // The robots: config, first install of v1 (two at a time), then body + model manager.
    let configs: Vec<(String, bool, UpdatesConfig)> = (0..o.robots)
        .map(|i| {
            let id = format!("robot-{i:04}");
            let is_canary = registry::robot_bucket(&id) < o.canary_percent;
            let text = format!(
                "channel = \"{}\"\nstore = \"{}\"\ntrusted_keys = \"{}\"\nrobot_id = \"{id}\"\npoll_interval_s = {}\nmax_backoff_s = {}\nkeep_previous = 1\n[health]\nwindow_s = {}\n",
                if is_canary { &canary } else { &stable },
                o.work.join("robots").join(&id).join("store").display(),
                trusted.display(),
                o.poll_interval_s,
                o.poll_interval_s * 4.0,
                o.health_window_s
            );
            let config: UpdatesConfig = toml::from_str(&text)?;
            config.validate()?;
            Ok((id, is_canary, config))
        })
        .collect::<Result<_>>()?;
    let t_install = Instant::now();
    let install_start = unix_now();
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for chunk in configs.chunks(configs.len().div_ceil(2).max(1)) {
            let backend = &backend;
            handles.push(s.spawn(move || -> Result<()> {
                for (_, _, config) in chunk {
                    let (store, mut activation) = updates::open_store(config)?;
                    updates::first_install(config, &store, &mut activation, backend)?;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("an install thread panicked"))??;
        }
        Ok(())
    })?;
    let first_install_s = t_install.elapsed().as_secs_f64();
    let install_end = unix_now();

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    let mut robots = Vec::new();
    let mut bodies = Vec::new();
    let mut managers = Vec::new();
    for (id, is_canary, config) in configs {
        let (store, activation) = updates::open_store(&config)?;
        let active = activation
            .active()
            .cloned()
            .context("first install left no active version")?;
        let package = PolicyPackage::open(&active.dir)?;
        let port = Arc::new(SwapPort::new(SwapWhen::ChunkBoundary));
        let model = OrtBackend::load(&package, &backend)?;
        let (body, handle) = Body::spawn(
            port.clone(),
            model,
            package.manifest.clone(),
            digests.clone(),
            stop.clone(),
        )?;
        bodies.push(handle);
        let updater = Updater::new(
            config.clone(),
            store,
            activation,
            backend.clone(),
            port,
            package,
        );
        let (stop2, failed2) = (stop.clone(), failed.clone());
        managers.push(
            std::thread::Builder::new()
                .name("fleet-manager".into())
                .spawn(move || {
                    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        updater.run(&stop2)
                    }));
                    if report.is_err() {
                        failed2.store(true, Ordering::Release);
                    }
                    report.ok()
                })
                .context("cannot start a model manager thread")?,
        );
        robots.push(Robot {
            id,
            canary: is_canary,
            store: config.store.clone(),
            body,
        });
    }
    let canary_robots = robots.iter().filter(|r| r.canary).count();
    anyhow::ensure!(
        canary_robots > 0,
        "no robot hashes into the {} % canary share; use more robots or a larger share",
        o.canary_percent
    );

    // Sampler: robots on each version, every 100 ms.
    let t0 = Instant::now();
    let sampler = {
        let running: Vec<Arc<AtomicU8>> = robots.iter().map(|r| r.body.running.clone()).collect();
        let canary: Vec<bool> = robots.iter().map(|r| r.canary).collect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut timeline = Vec::new();
            let mut stable_ran_v3 = BTreeSet::new();
            while !stop.load(Ordering::Acquire) {
                let mut n = [0usize; 4];
                for (i, r) in running.iter().enumerate() {
                    let v = r.load(Ordering::Acquire) as usize;
                    n[v.min(3)] += 1;
                    if v == 3 && !canary[i] {
                        stable_ran_v3.insert(i);
                    }
                }
                timeline.push((t0.elapsed().as_secs_f64(), n));
                std::thread::sleep(Duration::from_millis(100));
            }
            (timeline, stable_ran_v3.len())
        })
    };
    let any_failed = || failed.load(Ordering::Acquire);
    let running_version =
        |r: &Robot| VERSIONS[r.body.running.load(Ordering::Acquire) as usize].to_string();

    // Steady state: nothing moves for a few poll intervals.
    std::thread::sleep(Duration::from_secs_f64(o.poll_interval_s * 1.5));
    let idle_from = unix_now();
    std::thread::sleep(Duration::from_secs_f64(o.poll_interval_s * 3.0));
    let idle_to = unix_now();

    let mut phases = Vec::new();
    let phase = |name: &str,
                 concerned: &[&Robot],
                 started: Instant,
                 done: &dyn Fn(&Robot) -> bool|
     -> Result<Phase> {
        let mut at: BTreeMap<String, f64> = BTreeMap::new();
        wait_until(name, o.phase_timeout_s, &any_failed, || {
            for r in concerned {
                if !at.contains_key(&r.id) && done(r) {
                    at.insert(r.id.clone(), started.elapsed().as_secs_f64());
                }
            }
            at.len() == concerned.len()
        })?;
        let mut times: Vec<f64> = at.values().copied().collect();
        times.sort_by(f64::total_cmp);
        Ok(Phase {
            name: name.into(),
            seconds: started.elapsed().as_secs_f64(),
            p50_s: times[times.len() / 2],
            max_s: *times.last().unwrap_or(&0.0),
            robots: times.len(),
        })
    };
    let all: Vec<&Robot> = robots.iter().collect();
    let canaries: Vec<&Robot> = robots.iter().filter(|r| r.canary).collect();
    let stables: Vec<&Robot> = robots.iter().filter(|r| !r.canary).collect();
    let committed =
        |r: &Robot, v: &str| record(&r.store).0.as_deref() == Some(v) && running_version(r) == v;

    // v2 to canary; every canary robot commits it (its health window passed).
    let rollout_from = unix_now();
    let mut publishes = Vec::new();
    publishes.push((t0.elapsed().as_secs_f64(), "v2 → canary".to_string()));
    let t_v2 = Instant::now();
    registry::push(&layout, "2.0.0", &canary, &opts)?;
    let p = phase(
        "v2 on canary: every canary robot committed",
        &canaries,
        t_v2,
        &|r| committed(r, "2.0.0"),
    )?;
    phases.push(p);
    // Move stable.
    publishes.push((t0.elapsed().as_secs_f64(), "v2 → stable".to_string()));
    let t_stable = Instant::now();
    registry::push(&layout, "2.0.0", &stable, &opts)?;
    let p = phase(
        "stable moved to v2: every stable robot committed",
        &stables,
        t_stable,
        &|r| committed(r, "2.0.0"),
    )?;
    phases.push(p);
    phases.push(Phase {
        name: "v2 published on canary → all robots committed v2".into(),
        seconds: t_v2.elapsed().as_secs_f64(),
        p50_s: 0.0,
        max_s: t_v2.elapsed().as_secs_f64(),
        robots: all.len(),
    });
    // Bad v3 on canary: it drives, fails its health window, rolls back; v2 runs again.
    let v3_index = layout.resolve("3.0.0")?.digest;
    publishes.push((t0.elapsed().as_secs_f64(), "v3 → canary".to_string()));
    let t_v3 = Instant::now();
    registry::push(&layout, "3.0.0", &canary, &opts)?;
    let p = phase(
        "bad v3 on canary: rolled back on every canary robot",
        &canaries,
        t_v3,
        &|r| {
            let (active, refused) = record(&r.store);
            active.as_deref() == Some("2.0.0")
                && refused.contains(&v3_index)
                && running_version(r) == "2.0.0"
        },
    )?;
    phases.push(p);
    // A few more polls: nobody retries v3, stable robots never saw it.
    std::thread::sleep(Duration::from_secs_f64(o.poll_interval_s * 2.0));
    let rollout_to = unix_now();

    stop.store(true, Ordering::Release);
    let mut polls = 0u64;
    for m in managers {
        if let Some(report) = m
            .join()
            .map_err(|_| anyhow::anyhow!("a model manager thread panicked"))?
        {
            polls += report.polls;
        }
    }
    for b in bodies {
        b.join()
            .map_err(|_| anyhow::anyhow!("a body thread panicked"))??;
    }
    let (timeline, stable_robots_that_ran_v3) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    anyhow::ensure!(!any_failed(), "a model manager panicked");

    // End state of every store: v2 active, its files verify.
    let mut robots_inconsistent_at_end = 0;
    for r in &robots {
        let ok = updates::status(&r.store).ok().is_some_and(|v| {
            v["active"]["version"] == "2.0.0"
                && v["in_progress"].is_null()
                && v["active"]["dir"].as_str().is_some_and(|d| {
                    PolicyPackage::open(Path::new(d)).is_ok_and(|p| p.verify_files().is_ok())
                })
        });
        if !ok {
            robots_inconsistent_at_end += 1;
        }
    }
    let robots_with_foreign_model = robots
        .iter()
        .filter(|r| r.body.foreign.load(Ordering::Acquire))
        .count();

    // The registry's own account.
    let lines = read_log(&registry.log_file())?;
    let idle = count(&lines, idle_from, idle_to);
    let polls_in_idle = (idle_to - idle_from) / o.poll_interval_s;
    let rollout_requests = count(&lines, rollout_from, rollout_to);
    let sizes: Vec<BTreeMap<String, u64>> = ["1.0.0", "2.0.0", "3.0.0"]
        .iter()
        .map(|t| version_blobs(&layout, t))
        .collect::<Result<_>>()?;
    let mut minimum = 0u64;
    for r in &robots {
        let mut need: BTreeMap<&String, u64> = BTreeMap::new();
        for (i, set) in sizes.iter().enumerate() {
            if i < 2 || r.canary {
                need.extend(set.iter().map(|(d, s)| (d, *s)));
            }
        }
        minimum += need.values().sum::<u64>();
    }
    let mut fetched: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut transferred = 0u64;
    for l in lines.iter().filter(|l| {
        l.method == "GET"
            && l.uri.contains("/blobs/")
            && (l.status == 200 || l.status == 206)
            && l.agent.contains("robot/")
            && l.at >= install_start - 1.0
    }) {
        transferred += l.written;
        let digest = l.uri.rsplit('/').next().unwrap_or("").to_string();
        *fetched.entry((l.agent.clone(), digest)).or_default() += 1;
    }
    let _ = install_end;
    let blobs_fetched_twice = fetched.values().filter(|n| **n > 1).count() as u64;
    drop(registry);

    Ok(FleetResult {
        robots: robots.len(),
        canary_robots,
        poll_interval_s: o.poll_interval_s,
        health_window_s: o.health_window_s,
        first_install_s,
        phases,
        idle_requests_per_robot_per_poll: idle.total as f64
            / robots.len() as f64
            / polls_in_idle.max(1e-9),
        idle_window: idle,
        rollout_requests,
        blob_bytes_minimum: minimum,
        blob_bytes_transferred: transferred,
        blobs_fetched_twice,
        stable_robots_that_ran_v3,
        robots_with_foreign_model,
        robots_inconsistent_at_end,
        timeline,
        publishes,
        polls_per_robot: polls as f64 / robots.len() as f64,
    })
}

/// An SVG of robots on each version over time, with the tag moves marked.
pub fn timeline_svg(result: &FleetResult) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 380.0, 50.0, 130.0, 30.0, 45.0);
    let t_max = result.timeline.last().map_or(1.0, |t| t.0).max(1.0);
    let n = result.robots.max(1) as f64;
    let x = |t: f64| left + (w - left - right) * t / t_max;
    let y = |k: f64| (h - bottom) - (h - bottom - top) * k / n;
    let colours = ["#999999", "#1f77b4", "#2ca02c", "#d62728"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    for (t, what) in &result.publishes {
        svg += &format!(
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#bbbbbb\" stroke-dasharray=\"4,3\"/>\n<text x=\"{2:.1}\" y=\"{3}\" fill=\"#555555\">{what}</text>\n",
            x(*t),
            h - bottom,
            x(*t) + 3.0,
            top - 8.0
        );
    }
    for (v, colour) in colours.iter().enumerate().skip(1) {
        let points: Vec<String> = result
            .timeline
            .iter()
            .map(|(t, c)| format!("{:.1},{:.1}", x(*t), y(c[v] as f64)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            points.join(" ")
        );
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">v{v} ({})</text>\n",
            w - right + 15.0,
            top + 20.0 * v as f64,
            VERSIONS[v]
        );
    }
    svg += &format!(
        "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right
    );
    svg += &format!(
        "<text x=\"{left}\" y=\"{}\">time since the fleet started (s): 0 … {t_max:.0}; {} robots ({} canary), poll {} s, health window {} s</text>\n<text x=\"5\" y=\"{}\">{}</text>\n<text x=\"5\" y=\"{}\">0</text>\n<text x=\"5\" y=\"14\">robots running each version</text>\n",
        h - 15.0,
        result.robots,
        result.canary_robots,
        result.poll_interval_s,
        result.health_window_s,
        y(n) + 4.0,
        result.robots,
        h - bottom
    );
    svg += "</svg>\n";
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        let t = parse_rfc3339("1970-01-02T00:00:01.5Z").unwrap();
        assert!((t - 86_401.5).abs() < 1e-9);
        let t = parse_rfc3339("2026-11-22T22:04:37.583467239Z").unwrap();
        assert!((t - 1_795_385_077.583_467).abs() < 1e-3, "{t}");
    }
}
