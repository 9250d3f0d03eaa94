//! The model manager: follows a registry channel and runs the activation transaction
//! (`reflex_registry::activation`) beside the control loop.
//!
//! ```text
//!  poll (HEAD, backoff + jitter) → rollout check → pull (signature first, digests, resume)
//!   → downloaded → verified → prepared → validated → [operator hold?] → swapped (chunk boundary,
//!   arc-swap slot) → health window → committed (+ GC) │ any failure → rolled back (old model
//!   swapped back if it had been replaced), digest refused until the channel moves on
//! ```
//! The loop never waits for any of this; an unreachable registry only means the current
//! version keeps running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reflex_policy::{BackendConfig, OrtBackend, PolicyPackage};
use reflex_registry::activation::{Activation, Step, Version};
use reflex_registry::registry::{self, RegistryOptions, Trust};
use reflex_registry::store::Store;
use serde::{Deserialize, Serialize};

use crate::swap::{SwapPort, SwapWhen};

/// `[updates]`: where the policy comes from and how a new one is taken into service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatesConfig {
    /// The channel this robot follows: `oci://host[:port]/repo:stable`, `…:canary`, or a
    /// pinned `…@sha256:<hex>`.
    pub channel: String,
    /// The local store (blobs, packages, activation record).
    #[serde(default = "default_store")]
    pub store: PathBuf,
    /// Directory of trusted ed25519 public keys (`*.pub`). Required unless `allow_unsigned`.
    pub trusted_keys: Option<PathBuf>,
    /// Development only: accept unsigned packages (logged loudly at start).
    #[serde(default)]
    pub allow_unsigned: bool,
    /// This robot's id: its place in a percentage rollout.
    #[serde(default = "default_robot_id")]
    pub robot_id: String,
    #[serde(default = "default_poll")]
    pub poll_interval_s: f64,
    /// Longest wait between polls while the registry is unreachable (exponential backoff).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_s: f64,
    /// Earlier versions kept on disk for rollback; everything older is garbage-collected.
    #[serde(default = "default_keep")]
    pub keep_previous: usize,
    /// When a new model may take over.
    #[serde(default)]
    pub swap_when: SwapWhen,
    /// While this file exists, updates are deferred (an operator or a busy task holds them).
    pub hold_file: Option<PathBuf>,
    #[serde(default)]
    pub health: HealthConfig,
    /// Extra CA (PEM) for a registry with a private CA.
    pub registry_ca: Option<PathBuf>,
    /// Plain HTTP toward a non-loopback registry (loopback is always plain HTTP).
    #[serde(default)]
    pub plain_http: bool,
}

/// `[updates.health]`: what a new model must show in its first seconds, or it is rolled back.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_window")]
    pub window_s: f64,
    /// Share of ticks the safety layer slowed or stopped (0–1).
    #[serde(default = "default_veto_rate")]
    pub max_veto_rate: f64,
    /// Slowest inference allowed in the window, ms.
    #[serde(default = "default_inference_ms")]
    pub max_inference_ms: f64,
    /// Chunks with NaN/inf allowed in the window.
    #[serde(default)]
    pub max_nonfinite_chunks: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            window_s: default_window(),
            max_veto_rate: default_veto_rate(),
            max_inference_ms: default_inference_ms(),
            max_nonfinite_chunks: 0,
        }
    }
}

fn default_store() -> PathBuf {
    "/var/lib/reflex/store".into()
}
fn default_robot_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "robot".into())
}
fn default_poll() -> f64 {
    30.0
}
fn default_max_backoff() -> f64 {
    300.0
}
fn default_keep() -> usize {
    2
}
fn default_window() -> f64 {
    10.0
}
fn default_veto_rate() -> f64 {
    0.5
}
fn default_inference_ms() -> f64 {
    200.0
}

impl UpdatesConfig {
    /// Stage-2 checks, with the key and the fix.
    pub fn validate(&self) -> Result<()> {
        registry::parse_ref(&self.channel).context("updates.channel")?;
        let positive = |v: f64, key: &str, fix: &str| {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "updates.{key} = {v}: must be a positive number; fix: {fix}"
            );
            Ok(())
        };
        positive(self.poll_interval_s, "poll_interval_s", "e.g. 30")?;
        positive(self.max_backoff_s, "max_backoff_s", "e.g. 300")?;
        positive(self.health.window_s, "health.window_s", "e.g. 10")?;
        positive(
            self.health.max_inference_ms,
            "health.max_inference_ms",
            "e.g. 200",
        )?;
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.health.max_veto_rate),
            "updates.health.max_veto_rate = {}: must be in [0, 1]; fix: e.g. 0.5",
            self.health.max_veto_rate
        );
        anyhow::ensure!(
            self.trusted_keys.is_some() || self.allow_unsigned,
            "updates.trusted_keys is missing: a robot takes only signed policies; fix: set it to a directory of *.pub keys (or allow_unsigned = true for development)"
        );
        if let Some(dir) = &self.trusted_keys {
            anyhow::ensure!(
                dir.is_dir(),
                "updates.trusted_keys = {}: not a directory; fix: point it at the directory holding the release *.pub keys",
                dir.display()
            );
        }
        Ok(())
    }

    pub fn registry_options(&self) -> Result<RegistryOptions> {
        Ok(RegistryOptions {
            ca_file: self.registry_ca.clone(),
            plain_http: self.plain_http,
            user_agent: Some(format!(
                "reflex/{} robot/{}",
                env!("CARGO_PKG_VERSION"),
                self.robot_id
            )),
            ..Default::default()
        }
        .with_env_auth()?)
    }

    fn trust(&self) -> Trust<'_> {
        match &self.trusted_keys {
            Some(dir) => Trust::Keys(dir),
            None => Trust::AllowUnsigned,
        }
    }
}

/// Something the model manager did, for the run's report.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateEvent {
    /// Seconds since the manager started.
    pub at_s: f64,
    /// `committed`, `rolled_back`, `refused`, `skipped`, `unreachable`, `held`.
    pub kind: &'static str,
    pub version: String,
    pub index_digest: String,
    pub detail: String,
    /// From handing the model over to the loop merging its first chunk.
    pub first_action_ms: Option<f64>,
    /// Deadline misses of the RT loop between the hand-over and the end of the health window.
    pub misses_during_swap: Option<u64>,
    /// CPU time the VM's host stole over the same span (ms; /proc/stat), so a miss on a noisy
    /// virtual machine can be told from one Reflex caused.
    pub host_steal_during_swap_ms: Option<f64>,
}

/// What the manager did over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateReport {
    pub events: Vec<UpdateEvent>,
    pub polls: u64,
    pub active: Option<Version>,
}

/// Installs the channel's current version when nothing is active yet (first boot): pull,
/// verify, prepare, validate, commit. There is no running model to swap with or fall back to,
/// so there is no health window. Returns the active version.
pub fn first_install(
    config: &UpdatesConfig,
    store: &Store,
    activation: &mut Activation,
    backend_config: &BackendConfig,
) -> Result<Version> {
    let options = config.registry_options()?;
    let report = registry::pull_to_store(&config.channel, store, None, config.trust(), &options)
        .with_context(|| {
            format!(
                "no policy is installed in {} and {} cannot be pulled; fix the registry or pull a policy with `reflex pull`",
                store.root.display(),
                config.channel
            )
        })?;
    let version = version_of(&report.pulled);
    activation.begin(version.clone())?;
    let result = (|| -> Result<()> {
        let package = PolicyPackage::open(&version.dir)?;
        package.verify_files()?;
        activation.advance(Step::Verified)?;
        let mut backend = OrtBackend::load(&package, backend_config)?;
        backend.warm_up(3)?;
        activation.advance(Step::Prepared)?;
        backend.check_golden(&package.golden_pairs()?)?;
        activation.advance(Step::Validated)?;
        Ok(())
    })();
    if let Err(e) = result {
        activation.rollback(&format!("{e:#}"))?;
        return Err(e.context(format!("{} {} refused", version.name, version.version)));
    }
    activation.commit()?;
    Ok(version)
}

fn version_of(pulled: &reflex_registry::store::Pulled) -> Version {
    Version {
        name: pulled.package.manifest.name.clone(),
        version: pulled.package.manifest.version.clone(),
        index_digest: pulled.index_digest.clone(),
        manifest_digest: pulled.manifest_digest.clone(),
        dir: pulled.package.dir.clone(),
    }
}

/// The model manager thread's body: polls until `stop`.
pub struct Updater {
    pub config: UpdatesConfig,
    pub store: Store,
    pub activation: Activation,
    pub backend_config: BackendConfig,
    pub port: Arc<SwapPort>,
    /// The package the loop started with (its action space must be kept).
    pub running: PolicyPackage,
    started: Instant,
    next_generation: u32,
    report: UpdateReport,
    /// Index digests outside this robot's rollout share (re-checked when the index changes).
    skipped: Vec<String>,
    /// The version last deferred by the hold file (reported once).
    held: Option<String>,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("channel", &self.config.channel)
            .field("active", &self.activation.active())
            .finish_non_exhaustive()
    }
}

impl Updater {
    pub fn new(
        config: UpdatesConfig,
        store: Store,
        activation: Activation,
        backend_config: BackendConfig,
        port: Arc<SwapPort>,
        running: PolicyPackage,
    ) -> Self {
        Self {
            config,
            store,
            activation,
            backend_config,
            port,
            running,
            started: Instant::now(),
            next_generation: 1,
            report: UpdateReport::default(),
            skipped: Vec::new(),
            held: None,
        }
    }

    fn event(&mut self, kind: &'static str, version: &str, digest: &str, detail: String) {
        eprintln!("reflex: updates: {kind} {version} {digest} {detail}");
        self.report.events.push(UpdateEvent {
            at_s: self.started.elapsed().as_secs_f64(),
            kind,
            version: version.into(),
            index_digest: digest.into(),
            detail,
            first_action_ms: None,
            misses_during_swap: None,
            host_steal_during_swap_ms: None,
        });
    }

    /// Runs until `stop`; returns what happened.
    pub fn run(mut self, stop: &AtomicBool) -> UpdateReport {
        let options = match self.config.registry_options() {
            Ok(o) => o,
            Err(e) => {
                self.event("refused", "", "", format!("registry options: {e:#}"));
                return self.report;
            }
        };
        let mut backoff = self.config.poll_interval_s;
        let mut reachable = true;
        while !stop.load(Ordering::Acquire) {
            let wait = match self.poll_once(&options, stop) {
                Ok(()) => {
                    self.port
                        .telemetry
                        .registry_link
                        .store(1, Ordering::Relaxed);
                    reachable = true;
                    backoff = self.config.poll_interval_s;
                    self.config.poll_interval_s
                }
                Err(e) => {
                    self.port
                        .telemetry
                        .registry_link
                        .store(0, Ordering::Relaxed);
                    if reachable {
                        self.event(
                            "unreachable",
                            "",
                            "",
                            format!("{e:#}; the current policy keeps running"),
                        );
                    }
                    reachable = false;
                    backoff = (backoff * 2.0).min(self.config.max_backoff_s);
                    backoff
                }
            };
            // ±20 % jitter, so a fleet does not poll in lockstep.
            let jitter = 0.8 + 0.4 * (jitter_unit(&self.config.robot_id, self.report.polls));
            sleep_unless_stopped(Duration::from_secs_f64(wait * jitter), stop);
        }
        self.report.active = self.activation.active().cloned();
        self.report
    }

    /// One poll: `Err` only when the registry could not be asked (retry with backoff).
    fn poll_once(&mut self, options: &RegistryOptions, stop: &AtomicBool) -> Result<()> {
        self.report.polls += 1;
        let digest = registry::head_digest(&self.config.channel, options)?;
        let active = self.activation.active().map(|v| v.index_digest.clone());
        if active.as_deref() == Some(digest.as_str())
            || self.activation.is_refused(&digest)
            || self.skipped.contains(&digest)
        {
            return Ok(());
        }
        let (digest, index) = registry::fetch_index(&self.config.channel, options)?;
        if !registry::in_rollout(&self.config.robot_id, &index) {
            self.skipped.push(digest.clone());
            self.event(
                "skipped",
                "",
                &digest,
                format!(
                    "robot {} (bucket {:.2}) is outside the rollout share {:?}",
                    self.config.robot_id,
                    registry::robot_bucket(&self.config.robot_id),
                    index.annotations.get(registry::ROLLOUT_ANNOTATION)
                ),
            );
            return Ok(());
        }
        if let Some(hold) = &self.config.hold_file
            && hold.exists()
        {
            if self.held.as_deref() != Some(digest.as_str()) {
                self.held = Some(digest.clone());
                self.event(
                    "held",
                    "",
                    &digest,
                    format!("deferred while {} exists", hold.display()),
                );
            }
            return Ok(());
        }
        let pulled = match registry::pull_to_store(
            &self.config.channel,
            &self.store,
            None,
            self.config.trust(),
            options,
        ) {
            Ok(r) => r.pulled,
            Err(e) if registry::is_transient(&e) => return Err(e.into()),
            Err(e) => {
                self.activation.refuse(&digest);
                self.activation.persist()?;
                self.event("refused", "", &digest, format!("{e}"));
                return Ok(());
            }
        };
        let version = version_of(&pulled);
        self.activation.begin(version.clone())?;
        match self.take_into_service(&version, stop) {
            Ok((first_action_ms, misses, stolen_ms)) => {
                self.activation.commit()?;
                let (packages, blobs) = self.store.gc(&self.activation.keep_set())?;
                self.event(
                    "committed",
                    &version.version,
                    &version.index_digest,
                    format!("health window passed; GC removed {packages} packages, {blobs} blobs"),
                );
                let last = self.report.events.last_mut().expect("just pushed");
                last.first_action_ms = Some(first_action_ms);
                last.misses_during_swap = Some(misses);
                last.host_steal_during_swap_ms = stolen_ms;
            }
            Err(e) => {
                let at = self.activation.record().pending.as_ref().map(|p| p.step);
                self.activation.rollback(&format!("{e:#}"))?;
                self.event(
                    "rolled_back",
                    &version.version,
                    &version.index_digest,
                    format!("at {}: {e:#}", at.map_or("?", Step::name)),
                );
            }
        }
        Ok(())
    }

    /// verified → prepared → validated → swapped → health. Returns (first action ms, misses).
    /// Returns (first action ms, deadline misses, host steal ms) over the swap and its window.
    fn take_into_service(
        &mut self,
        version: &Version,
        stop: &AtomicBool,
    ) -> Result<(f64, u64, Option<f64>)> {
        // Verified: files, schema, and the running loop's action space.
        let package = PolicyPackage::open(&version.dir)?;
        package.verify_files()?;
        let (new, old) = (&package.manifest, &self.running.manifest);
        if let Some(field) = old.contract_difference(new) {
            anyhow::bail!(
                "its I/O contract differs from the running policy's in `{field}` (policy.json); the running loop is built for the old one, so a different contract needs a restart with a matching config"
            );
        }
        self.activation.advance(Step::Verified)?;
        // Prepared: a session, warmed up.
        let mut backend = OrtBackend::load(&package, &self.backend_config)?;
        backend.warm_up(3)?;
        self.activation.advance(Step::Prepared)?;
        // Validated: golden pairs within tolerance (outputs finite).
        backend
            .check_golden(&package.golden_pairs()?)
            .context("golden check")?;
        self.activation.advance(Step::Validated)?;
        // Swapped: hand over; the worker takes it at its next chunk boundary.
        let generation = self.next_generation;
        self.next_generation += 1;
        let misses_before = self.port.status.deadline_misses.load(Ordering::Acquire);
        let steal_before = reflex_rt::ticker::host_steal_ms();
        let swapped =
            crate::swap::hand_over(&self.port, generation, Box::new(backend), &package, stop)
                .and_then(|first_action_ms| {
                    self.activation.advance(Step::Swapped)?;
                    // Health window.
                    self.activation.advance(Step::Health)?;
                    self.health_window(stop)?;
                    Ok(first_action_ms)
                });
        let first_action_ms = match swapped {
            Ok(ms) => ms,
            Err(e) => {
                // If the worker runs the new model, put the previous version back before the
                // record says rolled back.
                if self.port.status.worker_generation.load(Ordering::Acquire) == generation
                    && let Some(active) = self.activation.active().cloned()
                {
                    let previous = PolicyPackage::open(&active.dir)?;
                    let mut backend = OrtBackend::load(&previous, &self.backend_config)?;
                    backend.warm_up(1)?;
                    let generation = self.next_generation;
                    self.next_generation += 1;
                    crate::swap::hand_over(
                        &self.port,
                        generation,
                        Box::new(backend),
                        &previous,
                        stop,
                    )?;
                    self.running = previous;
                }
                return Err(e);
            }
        };
        self.running = package;
        let misses = self.port.status.deadline_misses.load(Ordering::Acquire) - misses_before;
        let stolen_ms = steal_before
            .zip(reflex_rt::ticker::host_steal_ms())
            .map(|(before, after)| after - before);
        Ok((first_action_ms, misses, stolen_ms))
    }

    fn health_window(&mut self, stop: &AtomicBool) -> Result<()> {
        let h = self.config.health.clone();
        let p = &self.port;
        p.status.inference_max_ns.store(0, Ordering::Release);
        let ticks0 = p.status.ticks.load(Ordering::Acquire);
        let vetoed0 = p.status.vetoed_ticks.load(Ordering::Acquire);
        let bad0 = p.status.nonfinite_chunks.load(Ordering::Acquire);
        let end = Instant::now() + Duration::from_secs_f64(h.window_s);
        while Instant::now() < end {
            anyhow::ensure!(
                !stop.load(Ordering::Acquire),
                "stopped during the health window"
            );
            std::thread::sleep(Duration::from_millis(20));
            let bad = p.status.nonfinite_chunks.load(Ordering::Acquire) - bad0;
            anyhow::ensure!(
                bad <= h.max_nonfinite_chunks,
                "health: {bad} chunks with NaN/inf (allowed {})",
                h.max_nonfinite_chunks
            );
            let slowest_ms = p.status.inference_max_ns.load(Ordering::Acquire) as f64 / 1e6;
            anyhow::ensure!(
                slowest_ms <= h.max_inference_ms,
                "health: inference took {slowest_ms:.3} ms (allowed {} ms)",
                h.max_inference_ms
            );
        }
        let ticks = p.status.ticks.load(Ordering::Acquire) - ticks0;
        let vetoed = p.status.vetoed_ticks.load(Ordering::Acquire) - vetoed0;
        let rate = if ticks == 0 {
            1.0
        } else {
            vetoed as f64 / ticks as f64
        };
        anyhow::ensure!(
            rate <= h.max_veto_rate,
            "health: the safety layer slowed or stopped {:.0}% of {ticks} ticks (allowed {:.0}%)",
            rate * 100.0,
            h.max_veto_rate * 100.0
        );
        Ok(())
    }
}

fn jitter_unit(robot_id: &str, n: u64) -> f64 {
    let h = reflex_policy::sha256_bytes(format!("{robot_id}/{n}").as_bytes());
    u32::from_str_radix(&h[..8], 16).unwrap_or(0) as f64 / f64::from(u32::MAX)
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let end = Instant::now() + total;
    while Instant::now() < end && !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10).min(end - Instant::now()));
    }
}

/// The store and its recovered activation record (an interrupted update rolled back).
pub fn open_store(config: &UpdatesConfig) -> Result<(Store, Activation)> {
    let store = Store::open(&config.store)
        .with_context(|| format!("updates.store = {}", config.store.display()))?;
    let activation = recover(&store, config.keep_previous)?;
    Ok((store, activation))
}

fn recover(store: &Store, keep_previous: usize) -> Result<Activation> {
    let (mut activation, interrupted) = Activation::open(store, keep_previous)?;
    if let Some(p) = interrupted {
        eprintln!(
            "reflex: updates: {} {} was interrupted at {}; rolled back to {}",
            p.version.name,
            p.version.version,
            p.step.name(),
            activation
                .active()
                .map_or("nothing (first install)".to_string(), |v| v.version.clone())
        );
        // A model that was already driving when the process died is not retried blindly.
        if p.step >= Step::Swapped {
            activation.refuse(&p.version.index_digest);
            activation.persist()?;
        }
    }
    Ok(activation)
}

/// For `reflex status`: the store's record after recovery, as JSON.
/// Read-only: safe while `reflex run` owns the store. An update in progress (or interrupted)
/// is shown under `in_progress`; `active` is what runs (or would run after a restart).
pub fn status(store_dir: &Path) -> Result<serde_json::Value> {
    let store = Store::open(store_dir)?;
    let (record, in_progress) = Activation::peek(&store)?;
    let mut value = serde_json::to_value(&record)?;
    value["in_progress"] = serde_json::to_value(in_progress)?;
    Ok(value)
}
