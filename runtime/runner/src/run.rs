//! The thread topology of a run, around any [`RobotIo`] and [`PolicyBackend`]:
//!
//! ```text
//!  robot I/O thread (this one, at the loop rate) ── sensors ─► triple buffer ─► RT thread
//!     │  └─ camera + state ─► triple buffer ─► inference worker        (reflex_rt::rt_thread)
//!     │       ▲ supervisor: replaces a dead or silent worker            │
//!     └─────── command ◄─ triple buffer ◄──────────────────────────────┘
//!              inference worker ─► chunk rings (SPSC, recycled buffers) ─► RT thread
//! ```
//! The RT thread never blocks, locks or allocates after start-up; its watchdog turns N deadline
//! misses in a row, or an inference worker silent past its deadline, into an internal E-stop,
//! and the supervisor (here, on the robot I/O thread) replaces the worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result};
use reflex_core::metrics::Telemetry;
use reflex_core::{CommandFrame, PolicyBackend, RobotIo, SensorFrame};
use reflex_policy::{BackendConfig, OrtBackend, PolicyPackage};
use reflex_rt::arbiter::{ArbiterConfig, Inboxes};
use reflex_rt::chunks::ChunksConfig;
use reflex_rt::control::{BaseAxis, ChunkReceiver, ChunkSender, ControlLoop};
use reflex_rt::ticker::{self as rt, RtConfig, Ticker};
use reflex_safety::{Reason, SafetyConfig};

use crate::swap::{SwapPort, SwapWhen};

/// Extra numbers of a real-time run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RealtimeReport {
    pub lateness_p50_us: f64,
    pub lateness_p95_us: f64,
    pub lateness_p99_us: f64,
    pub lateness_p999_us: f64,
    pub lateness_max_us: f64,
    pub grants: String,
    pub watchdog_trips: u64,
    pub worker_restarts: u32,
    /// Ticks per reason, every reason the safety layer gave (clamps too), by name.
    pub reasons: std::collections::BTreeMap<String, u64>,
    /// The cloud link's counters, when one ran.
    pub cloud: Option<serde_json::Value>,
    /// Ticks on which the arbiter chose a cloud command.
    pub cloud_ticks: u64,
    /// Hot swaps the loop merged, the costliest swap tick (µs), and the p99.9 tick of the same
    /// run without the swap ticks (µs): what a swap tick is compared with.
    pub swap_ticks: u64,
    pub swap_tick_max_us: f64,
    pub tick_p999_without_swaps_us: f64,
}

/// Loads a policy package into a backend: the inference worker's first model and every
/// replacement the supervisor starts. [`ort_loader`] is the production one.
pub type BackendLoader<'a> = dyn Fn(&PolicyPackage) -> Result<Box<dyn PolicyBackend>> + 'a;

/// The ONNX Runtime loader for `[models]`.
pub fn ort_loader(
    config: &BackendConfig,
) -> impl Fn(&PolicyPackage) -> Result<Box<dyn PolicyBackend>> + '_ {
    move |package| Ok(Box::new(OrtBackend::load(package, config)?) as Box<dyn PolicyBackend>)
}

/// What a run takes besides the robot, the policy and `[runtime]`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seconds to run (`reflex run`: until killed, i.e. very long).
    pub duration_s: f64,
    /// `[chunks]`.
    pub chunks: ChunksConfig,
    /// `[arbitration]`.
    pub arbitration: ArbiterConfig,
    /// The arbiter's inboxes (cloud, operator), when something outside the loop feeds them (the
    /// HIL hardware runner's scripted operator, the cloud link).
    pub inboxes: Option<Inboxes>,
    /// Where the loop and the inference worker publish metrics (None: a private one).
    pub telemetry: Option<Arc<Telemetry>>,
    /// The flight recorder the loop feeds (its RT tap is taken by the control loop).
    pub recorder: Option<Arc<reflex_telemetry::recorder::Recorder>>,
    /// `[cloud]`: the cloud policy link to start.
    pub cloud: Option<reflex_cloud::CloudConfig>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            duration_s: 30.0,
            chunks: ChunksConfig::default(),
            arbitration: ArbiterConfig::default(),
            inboxes: None,
            telemetry: None,
            recorder: None,
            cloud: None,
        }
    }
}

/// What the loop did, whatever the robot: the numbers `reflex run` prints.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoopSummary {
    pub ticks: u64,
    pub deadline_misses: u64,
    /// Ticks per reason that slowed or stopped the robot, by name.
    pub vetoes: std::collections::BTreeMap<String, u64>,
    pub tick_p50_us: f64,
    pub tick_p99_us: f64,
    pub tick_p999_us: f64,
    pub tick_max_us: f64,
    pub inference_p50_ms: f64,
    pub actions_dropped_stale: u64,
    pub ticks_without_action: u64,
    pub chunks_merged: u64,
}

impl LoopSummary {
    /// The summary of `control` after a run with `deadline_misses` and these inference
    /// latencies (ms, sorted).
    pub fn of(control: &ControlLoop, deadline_misses: u64, inference_ms: &[f64]) -> Self {
        let counts = control.safety.reason_counts();
        Self {
            ticks: control.stats.ticks,
            deadline_misses,
            vetoes: Reason::ALL
                .iter()
                .filter(|r| counts[**r as usize] > 0 && r.action() >= reflex_safety::Action::Slow)
                .map(|r| (r.name().to_string(), counts[*r as usize]))
                .collect(),
            tick_p50_us: control.stats.tick_cost.quantile_us(0.5),
            tick_p99_us: control.stats.tick_cost.quantile_us(0.99),
            tick_p999_us: control.stats.tick_cost.quantile_us(0.999),
            tick_max_us: control.stats.tick_cost.max_ns as f64 / 1e3,
            inference_p50_ms: inference_ms
                .get(inference_ms.len() / 2)
                .copied()
                .unwrap_or(0.0),
            actions_dropped_stale: control.queue.stats.actions_dropped_stale,
            ticks_without_action: control.stats.ticks_without_action,
            chunks_merged: control.stats.chunks_merged,
        }
    }
}

/// The chunk hop for `package`'s chunk size (4 buffers).
pub fn chunk_channel(package: &PolicyPackage) -> (ChunkSender, ChunkReceiver) {
    let m = &package.manifest;
    reflex_rt::control::chunk_channel(4, m.horizon_steps() * m.action_space.len())
}

/// The control loop for `package` under `config`: queue timing from the policy, `[chunks]` and
/// `[arbitration]` from `options`, its metrics and recorder tap.
pub fn control_loop(
    config: &SafetyConfig,
    package: &PolicyPackage,
    options: &RunOptions,
    channel: ChunkReceiver,
) -> Result<ControlLoop> {
    let m = &package.manifest;
    let control = ControlLoop::new(
        reflex_safety::Safety::new(config.clone())?,
        options.chunks.queue(
            m.action_space.len(),
            m.horizon_steps(),
            (1e9 / m.control_rate_hz).round() as u64,
        ),
        &base_axes(package),
        channel,
    );
    let mut control = match &options.telemetry {
        Some(t) => control.with_telemetry(t.clone()),
        None => control,
    };
    if let Some(recorder) = &options.recorder {
        control.recorder = Some(recorder.tap(&control.safety)?);
    }
    control
        .with_arbiter(&options.arbitration, options.inboxes.as_ref())
        .map_err(anyhow::Error::msg)
}

/// Base axes driven by the policy's action dimensions.
pub fn base_axes(package: &PolicyPackage) -> Vec<BaseAxis> {
    package
        .manifest
        .action_space
        .iter()
        .map(|a| match a.drives.as_str() {
            "base_vx" => BaseAxis::Vx,
            "base_vy" => BaseAxis::Vy,
            "base_wz" => BaseAxis::Wz,
            _ => BaseAxis::Ignored,
        })
        .collect()
}

/// The loop in real time for `options.duration_s` on `robot`: RT thread, inference worker
/// (with its supervisor) and this thread as the robot's I/O. `task` = (name, instruction).
#[allow(clippy::too_many_arguments)]
pub fn run_robot(
    safety_config: &SafetyConfig,
    package: &PolicyPackage,
    loader: &BackendLoader<'_>,
    rt_config: &RtConfig,
    task: (&str, &str),
    options: &RunOptions,
    port: &Arc<SwapPort>,
    robot: &mut dyn RobotIo,
) -> Result<(LoopSummary, RealtimeReport)> {
    rt_config.validate().map_err(anyhow::Error::msg)?;
    // This thread (the robot I/O) and everything it starts keep off the RT CPU.
    if let Some(cpu) = rt_config.cpu
        && let Err(e) = rt::keep_off_cpu(cpu)
    {
        eprintln!("reflex: cannot keep the other threads off RT CPU {cpu}: {e}");
    }
    // The cloud link feeds the arbiter's cloud inbox; metrics are shared with it.
    let mut options = options.clone();
    let telemetry = options
        .telemetry
        .get_or_insert_with(Default::default)
        .clone();
    let cloud_link = match options.cloud.clone() {
        Some(cfg) => {
            let inboxes = options
                .inboxes
                .get_or_insert_with(reflex_rt::arbiter::Inboxes::default)
                .clone();
            Some(reflex_cloud::CloudLink::start(
                cfg,
                base_axes(package),
                task.1.to_string(),
                inboxes.cloud,
                telemetry.clone(),
            )?)
        }
        None => None,
    };
    let options = &options;
    let image_shape = package
        .manifest
        .input(reflex_policy::InputRole::Image)
        .map(|i| i.shape.clone());
    let manifest = package.manifest.clone();
    let period_ns = rt_config.period_ns();
    let mut config = safety_config.clone();
    config.control_period_ms = rt_config.period_ms;
    let (chunk_tx, chunk_rx) = chunk_channel(package);
    let control = control_loop(&config, package, options, chunk_rx)?;
    let mut backend = loader(package)?;
    backend
        .warm_up(3)
        .map_err(anyhow::Error::from_boxed)
        .context("warm-up of the policy")?;

    // Before the first tick, "stationary" is what the robot's odometry says at start.
    port.status
        .stationary
        .store(robot.stationary_at_start(), Ordering::Release);
    let joints = config.arm.as_ref().map_or(0, |a| a.joints.len());
    let (mut sensor_in, sensor_out) =
        triple_buffer::triple_buffer(&SensorFrame::new(robot.beams(), joints));
    let (command_in, mut command_out) = triple_buffer::triple_buffer(&CommandFrame::default());
    let mut obs = manifest.observation();
    manifest.tokenize(task.1, &mut obs.instruction);
    let (mut obs_in, obs_out) = triple_buffer::triple_buffer(&obs);

    let stop = Arc::new(AtomicBool::new(false));
    let worker_beat = Arc::new(AtomicU64::new(rt::now_ns()));
    // Set by the RT thread's watchdog when the worker went silent; the supervisor (robot thread
    // here) replaces the worker only then, so the watchdog is the single judge of silence.
    let worker_fault = Arc::new(AtomicBool::new(false));
    let start_ns = rt::now_ns();
    let end_ns = start_ns + (options.duration_s * 1e9) as u64;

    // Inference worker: newest observation in, chunk out; never waits on the loop. The
    // observation slot sits behind a mutex only the worker side takes (never the RT thread), so a
    // restarted worker can take over the slot of a dead or hung one.
    let obs_out = Arc::new(std::sync::Mutex::new(obs_out));
    let telemetry = control.telemetry.clone();
    let inference_tap = options.recorder.as_ref().map(|r| r.inference_tap());
    let spawn_worker = |backend: Box<dyn PolicyBackend>, generation: u32| {
        let telemetry = telemetry.clone();
        let inference_tap = inference_tap.clone();
        let stop = stop.clone();
        let beat = worker_beat.clone();
        let chunk_tx = chunk_tx.clone();
        let obs_out = obs_out.clone();
        let manifest = manifest.clone();
        let port = port.clone();
        std::thread::Builder::new()
            .name(format!("reflex-infer-{generation}"))
            .spawn(move || -> Result<Vec<f64>> {
                let mut backend = backend;
                let mut model_generation = port.status.worker_generation.load(Ordering::Acquire);
                let mut chunk = manifest.action_chunk();
                let mut obs = manifest.observation();
                let mut latencies_ms = Vec::with_capacity(4096);
                while !stop.load(Ordering::Acquire) {
                    {
                        let mut slot = obs_out.lock().unwrap_or_else(|e| e.into_inner());
                        let newest = slot.read();
                        if newest.t_obs_ns == obs.t_obs_ns {
                            drop(slot);
                            // Waiting for input is not hanging: the loop's action aging, not the
                            // watchdog, handles a camera that stopped.
                            beat.store(rt::now_ns(), Ordering::Release);
                            std::thread::sleep(std::time::Duration::from_micros(500));
                            continue;
                        }
                        obs.clone_from(newest);
                    }
                    // A chunk boundary: take a waiting candidate model, if the safe-point rule
                    // allows it now. The old session is dropped here, off the RT thread.
                    let may_swap = match port.swap_when {
                        SwapWhen::ChunkBoundary => true,
                        SwapWhen::Stationary => port.status.stationary.load(Ordering::Acquire),
                    };
                    if may_swap && let Some((generation, next)) = port.take_candidate() {
                        backend = next;
                        model_generation = generation;
                    }
                    let t0 = rt::now_ns();
                    backend
                        .infer(&obs, &mut chunk)
                        .map_err(anyhow::Error::from_boxed)?;
                    let took = rt::now_ns() - t0;
                    latencies_ms.push(took as f64 * 1e-6);
                    port.status.inferences.fetch_add(1, Ordering::Relaxed);
                    port.status
                        .inference_max_ns
                        .fetch_max(took, Ordering::Relaxed);
                    telemetry.inference.record(took);
                    // Bad data never reaches the loop: a chunk with NaN/inf is dropped (the
                    // loop then stops the robot when its actions run out).
                    if let Some(tap) = &inference_tap {
                        tap.record(model_generation, &obs, &chunk.actions);
                    }
                    if chunk.actions.iter().any(|a| !a.is_finite()) {
                        port.status.nonfinite_chunks.fetch_add(1, Ordering::Relaxed);
                    } else {
                        // No free buffer (the loop is behind): dropped, never waited for.
                        let _ = chunk_tx.try_send(chunk.t_obs_ns, &chunk.actions, model_generation);
                    }
                    beat.store(rt::now_ns(), Ordering::Release);
                }
                Ok(latencies_ms)
            })
            .context("cannot start the inference worker")
    };
    let mut workers = vec![spawn_worker(backend, 0)?];
    let mut worker_restarts = 0u32;

    // The RT thread: the control loop on absolute deadlines (reflex_rt::rt_thread).
    let rt_thread = {
        let rt = reflex_rt::rt_thread::RtThread {
            control,
            sensors: sensor_out,
            commands: command_in,
            status: port.status.clone(),
            worker_beat_ns: worker_beat.clone(),
            worker_fault: worker_fault.clone(),
            stop: stop.clone(),
            config: rt_config.clone(),
        };
        std::thread::Builder::new()
            .name("reflex-rt".into())
            .spawn(move || rt.run())
            .context("cannot start the RT thread")?
    };

    // This thread is the robot's I/O at the loop's rate: command out, sensors and camera in.
    let mut ticker = Ticker::new(period_ns, rt::OverrunPolicy::Skip, start_ns);
    while rt::now_ns() < end_ns {
        let tick = ticker.wait();
        let now = tick.woke_ns;
        let command = *command_out.read();
        let frame = sensor_in.input_buffer_mut();
        let o = obs_in.input_buffer_mut();
        let fresh = robot.step(now, &command, frame, o);
        sensor_in.publish();
        if fresh {
            o.t_obs_ns = now;
            if let Some(link) = &cloud_link {
                let image = match (&o.image, &image_shape) {
                    (Some(reflex_policy::ImageData::U8(d)), Some(shape)) => {
                        Some((d.clone(), shape.clone()))
                    }
                    _ => None,
                };
                *link.observation.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(reflex_cloud::CloudObservation {
                        t_obs_ns: now,
                        state: o.state.clone(),
                        image,
                    });
            }
            obs_in.publish();
        }
        // Supervisor: a worker that died or went silent past its deadline is replaced (the RT
        // thread's watchdog has already latched an internal E-stop for it).
        let dead = workers.last().is_some_and(|w| w.is_finished());
        if (worker_fault.load(Ordering::Acquire) || dead) && worker_restarts < 3 {
            worker_restarts += 1;
            telemetry.worker_restarts.fetch_add(1, Ordering::Relaxed);
            // Fresh beat first, then clear the fault: the watchdog cannot re-raise it in between.
            worker_beat.store(now, Ordering::Release);
            worker_fault.store(false, Ordering::Release);
            let current = port
                .current_package
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let loaded = match &current {
                Some((generation, p)) => {
                    port.status
                        .worker_generation
                        .store(*generation, Ordering::Release);
                    loader(p)
                }
                None => loader(package),
            };
            let backend = match loaded {
                Ok(b) => b,
                Err(e) => {
                    // No replacement: stop the RT thread too (never leave it ticking detached).
                    stop.store(true, Ordering::Release);
                    let _ = rt_thread.join();
                    return Err(e.context("the supervisor could not reload the policy"));
                }
            };
            workers.push(spawn_worker(backend, worker_restarts)?);
        }
    }
    stop.store(true, Ordering::Release);
    let reflex_rt::rt_thread::RtOutcome {
        control,
        ticker: rt_ticker,
        lateness,
        grants,
        watchdog_trips,
    } = rt_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the RT thread panicked"))?;
    let mut latencies = Vec::new();
    // A worker stuck inside `infer` (a hung driver) is abandoned after 2 s, never waited for:
    // the robot is already stopped by the watchdog, and shutdown must not hang with it.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for worker in workers {
        while !worker.is_finished() && std::time::Instant::now() < give_up {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if !worker.is_finished() {
            eprintln!("reflex: an inference worker is still inside infer() (hung); abandoned");
            continue;
        }
        match worker.join() {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => eprintln!("reflex: inference worker stopped with an error: {e:#}"),
            Err(_) => eprintln!("reflex: an inference worker panicked"),
        }
    }
    latencies.sort_by(f64::total_cmp);
    let counts = control.safety.reason_counts();
    let summary = LoopSummary::of(&control, rt_ticker.misses, &latencies);
    let report = RealtimeReport {
        lateness_p50_us: lateness.quantile_us(0.5),
        lateness_p95_us: lateness.quantile_us(0.95),
        lateness_p99_us: lateness.quantile_us(0.99),
        lateness_p999_us: lateness.quantile_us(0.999),
        lateness_max_us: lateness.max_ns as f64 / 1e3,
        grants: grants.summary(),
        watchdog_trips,
        worker_restarts,
        reasons: Reason::ALL
            .iter()
            .map(|r| (r.name().to_string(), counts[*r as usize]))
            .filter(|(_, n)| *n > 0)
            .collect(),
        cloud: cloud_link.as_ref().map(|l| l.stats.snapshot()),
        cloud_ticks: control.stats.cloud_ticks,
        swap_ticks: control.stats.swap_tick_cost.count,
        swap_tick_max_us: control.stats.swap_tick_cost.max_ns as f64 / 1e3,
        tick_p999_without_swaps_us: control
            .stats
            .tick_cost
            .without(&control.stats.swap_tick_cost)
            .quantile_us(0.999),
    };
    drop(cloud_link);
    Ok((summary, report))
}
