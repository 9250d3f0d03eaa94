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
use reflex_core::actions::{ActionTarget, RobotShape, StateSource};
use reflex_core::metrics::Telemetry;
use reflex_core::{Actuator, CommandFrame, EstopIngress, PolicyBackend, RobotIo, SensorFrame};
use reflex_policy::{BackendConfig, OrtBackend, PolicyPackage};
use reflex_rt::arbiter::{ArbiterConfig, Inboxes};
use reflex_rt::chunks::ChunksConfig;
use reflex_rt::control::{ChunkReceiver, ChunkSender, ControlLoop};
use reflex_rt::gate::{ActuatorGate, GateOutput};
use reflex_rt::ticker::{self as rt, RtConfig};
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
    /// Actuator gate (robots with a publisher): verdict made → handed to the middleware, µs
    /// (p50, p99, max), and the RT-thread stalls it saw (> 2 periods).
    pub verdict_to_wire_us: Option<[f64; 3]>,
    pub rt_stalls: u64,
}

/// Loads a policy package into a backend: the inference worker's first model and every
/// replacement the supervisor starts. [`ort_loader`] is the production one.
pub type BackendLoader<'a> = dyn Fn(&PolicyPackage) -> Result<Box<dyn PolicyBackend>> + Sync + 'a;

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
    /// HIL fault injection into the RT thread (`--inject-rt-fault`); `None` in production.
    pub rt_fault: Option<InjectedRtFault>,
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
            rt_fault: None,
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
        &contract(config, package)?.0,
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

/// What the policy's action dimensions drive and where its state comes from, on the robot
/// `config` describes; refused, naming the `policy.json` field, when the robot lacks it.
pub fn contract(
    config: &SafetyConfig,
    package: &PolicyPackage,
) -> Result<(Vec<ActionTarget>, Vec<StateSource>)> {
    package
        .manifest
        .resolve(&RobotShape::of(config))
        .with_context(|| {
            format!(
                "policy `{}` {} does not fit this robot's [safety] config",
                package.manifest.name, package.manifest.version
            )
        })
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
    // The cloud link sends whole answer chunks into the loop's cloud queue (its own chunk
    // channel: the same action map, arbitration and safety as local chunks).
    let m = &package.manifest;
    let mut cloud_queue = None;
    let cloud_link = match options.cloud.clone() {
        Some(cfg) => {
            cfg.validate()?;
            // An answer later than the cloud's age limit is accepted by the link but could
            // never run: refuse the combination rather than count such answers as commands.
            let limit = options
                .arbitration
                .cloud_max_age_ms
                .min(safety_config.commands.cloud_max_age_ms);
            anyhow::ensure!(
                cfg.timeout_ms <= limit,
                "cloud.timeout_ms = {} is above the cloud's age limit, {limit} ms (arbitration.cloud_max_age_ms {}, safety.commands.cloud_max_age_ms {}): answers arriving later than that would be taken and never run; fix: cloud.timeout_ms <= {limit}, or raise [arbitration] cloud_max_age_ms",
                cfg.timeout_ms,
                options.arbitration.cloud_max_age_ms,
                safety_config.commands.cloud_max_age_ms
            );
            if cfg.action_rate_hz.is_none() && cfg.horizon_steps > 1 {
                eprintln!(
                    "reflex: cloud link: cloud.action_rate_hz is unset: an answer's steps are taken {:.1} ms apart (the local policy's control_rate_hz); set it to the server policy's rate (DROID: 15)",
                    1e3 / m.control_rate_hz
                );
            }
            let dims = m.action_space.len();
            let (tx, rx) = reflex_rt::control::chunk_channel(4, cfg.horizon_steps * dims);
            let mut queue = options.chunks.queue(
                dims,
                cfg.horizon_steps,
                cfg.action_step_ns(m.control_rate_hz),
            );
            // A cloud action is usable as long as a cloud command is ([arbitration]).
            queue.max_action_age_ns = (options.arbitration.cloud_max_age_ms * 1e6).round() as u64;
            cloud_queue = Some((queue, rx));
            Some(reflex_cloud::CloudLink::start(
                cfg,
                m,
                task.1.to_string(),
                tx,
                telemetry.clone(),
            )?)
        }
        None => None,
    };
    let options = &options;
    let manifest = package.manifest.clone();
    let period_ns = rt_config.period_ns();
    let mut config = safety_config.clone();
    config.control_period_ms = rt_config.period_ms;
    let (chunk_tx, chunk_rx) = chunk_channel(package);
    let mut control = control_loop(&config, package, options, chunk_rx)?;
    if let Some((queue, rx)) = cloud_queue {
        control = control.with_cloud_chunks(queue, rx);
    }
    let mut backend = loader(package)?;
    backend
        .warm_up(3)
        .map_err(anyhow::Error::from_boxed)
        .context("warm-up of the policy")?;

    // Before the first tick, "stationary" is what the robot's odometry says at start.
    port.status
        .stationary
        .store(robot.stationary_at_start(), Ordering::Release);
    let _ = port
        .status
        .safety_config_hash
        .set(control.safety.config_hash_hex());
    let joints = config.arm.as_ref().map_or(0, |a| a.joints.len());
    let (mut sensor_in, sensor_out) =
        triple_buffer::triple_buffer(&SensorFrame::new(robot.beams(), joints));
    let (command_in, command_out) = triple_buffer::triple_buffer(&CommandFrame::default());
    // What the gate last sent, for the robot I/O (the port's state input, HIL checks).
    let (sent_in, mut sent_out) = triple_buffer::triple_buffer(&CommandFrame::default());
    let mut obs = manifest.observation();
    // An empty task instruction is none: a ROS robot's come on /reflex/instruction (until one
    // does, an embedding policy makes no observation). A given one must be known.
    if !manifest.encode_instruction(task.1, &mut obs.instruction) && !task.1.is_empty() {
        anyhow::bail!(
            "instruction {:?}: policy `{}` has no embedding for it; give one of its instructions: {}",
            task.1,
            manifest.name,
            manifest.known_instructions()
        );
    }
    let (mut obs_in, obs_out) = triple_buffer::triple_buffer(&obs);

    let stop = Arc::new(AtomicBool::new(false));
    let ingress = Arc::new(EstopIngress::default());
    robot.attach_ingress(ingress.clone());
    let worker_beat = Arc::new(AtomicU64::new(rt::now_ns()));
    // Set by the RT thread when the worker went silent past its deadline; the supervisor
    // replaces the worker then (the loop's action aging has already stopped the robot).
    let worker_fault = Arc::new(AtomicBool::new(false));
    let start_ns = rt::now_ns();
    let end_ns = start_ns + (options.duration_s * 1e9) as u64;

    // Inference worker: newest observation in, chunk out; never waits on the loop. The
    // observation slot sits behind a mutex only the worker side takes (never the RT thread), so a
    // restarted worker can take over the slot of a dead or hung one.
    let obs_out = Arc::new(std::sync::Mutex::new(obs_out));
    let telemetry = control.telemetry.clone();
    let inference_tap = options.recorder.as_ref().map(|r| r.inference_tap());
    // `retire`: set by the supervisor when it replaces this worker (a hung one ends when its
    // `infer` returns and never sends that chunk).
    let spawn_worker = |backend: Box<dyn PolicyBackend>,
                        generation: u32,
                        retire: Arc<AtomicBool>| {
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
                let mut errors_in_a_row = 0u32;
                while !stop.load(Ordering::Acquire) && !retire.load(Ordering::Acquire) {
                    {
                        let mut slot = obs_out.lock().unwrap_or_else(|e| e.into_inner());
                        let newest = slot.read();
                        if newest.t_obs_ns == obs.t_obs_ns {
                            drop(slot);
                            // Waiting for input is not hanging: the loop's action aging, not the
                            // supervisor, handles a camera that stopped.
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
                    let result = backend.infer(&obs, &mut chunk);
                    let took = rt::now_ns() - t0;
                    if retire.load(Ordering::Acquire) {
                        break;
                    }
                    beat.store(rt::now_ns(), Ordering::Release);
                    if let Err(e) = result {
                        // NaN/Inf from the model: this chunk is dropped and counted (the health
                        // window sees it); the worker goes on. Other errors a few times in a row
                        // end the worker, and the supervisor starts a new one (with backoff).
                        let nonfinite = e
                            .downcast_ref::<reflex_policy::PackageError>()
                            .is_some_and(|e| {
                                matches!(e, reflex_policy::PackageError::NonFinite(_))
                            });
                        if nonfinite {
                            port.status.nonfinite_chunks.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        errors_in_a_row += 1;
                        if errors_in_a_row >= 3 {
                            return Err(anyhow::Error::from_boxed(e).context("inference"));
                        }
                        continue;
                    }
                    errors_in_a_row = 0;
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
                }
                Ok(latencies_ms)
            })
            .context("cannot start the inference worker")
    };
    let first_retire = Arc::new(AtomicBool::new(false));
    let first_worker = spawn_worker(backend, 0, first_retire.clone())?;

    // The RT thread: the control loop on absolute deadlines (reflex_rt::rt_thread).
    let rt_thread = {
        let rt = reflex_rt::rt_thread::RtThread {
            control,
            sensors: sensor_out,
            commands: command_in,
            status: port.status.clone(),
            worker_beat_ns: worker_beat.clone(),
            worker_fault: worker_fault.clone(),
            worker_deadline_ns: rt_config.inference_deadline_ns(),
            ingress: ingress.clone(),
            stop: stop.clone(),
            config: rt_config.clone(),
            fault: options.rt_fault.map(|f| f.at(start_ns)),
        };
        std::thread::Builder::new()
            .name("reflex-rt".into())
            .spawn(move || rt.run())
            .context("cannot start the RT thread")?
    };
    // Below the RT thread: the threads that touch the actuator and the E-stop.
    let io_priority = rt_config.fifo_priority.map(|p| (p - 1).max(1));

    // The actuator gate (SAF-011) on its own thread when the robot has a publisher; with the
    // simulator (no publisher) the robot I/O applies the same gate itself.
    let mut forward: Option<Box<dyn FnMut(u64)>> = None;
    let gate_thread = match robot.take_actuator() {
        Some(actuator) => Some(spawn_gate(
            actuator,
            command_out,
            sent_in,
            ingress.clone(),
            port.status.clone(),
            stop.clone(),
            period_ns,
            rt_config.stall_estop_ns(),
            io_priority,
        )?),
        None => {
            let mut command_out = command_out;
            let mut sent_in = sent_in;
            let mut gate = ActuatorGate::new(period_ns, ZERO_PERIODS);
            let status = port.status.clone();
            forward = Some(Box::new(move |presses| {
                let frame = *command_out.read();
                match gate.decide(rt::now_ns(), &frame, presses) {
                    GateOutput::Verdict(f) => sent_in.write(f),
                    GateOutput::Zero => {
                        status.gate_zero_events.fetch_add(1, Ordering::AcqRel);
                        sent_in.write(CommandFrame::zero());
                    }
                    GateOutput::Nothing => {}
                }
            }));
            None
        }
    };

    // The robot I/O runs on this thread, just below the RT thread (restored afterwards).
    let io_fifo = match io_priority {
        Some(p) => match rt::set_fifo(p) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("reflex: robot I/O thread: SCHED_FIFO {p} NOT granted: {e}");
                false
            }
        },
        None => false,
    };
    let (io_result, workers, worker_restarts) = std::thread::scope(|scope| {
        // Supervisor: replaces a dead or silent worker, with backoff and no lifetime cap; model
        // loading happens here, never on the threads that touch the actuator or the E-stop.
        let supervisor = {
            let stop = stop.clone();
            let worker_beat = worker_beat.clone();
            let worker_fault = worker_fault.clone();
            let telemetry = telemetry.clone();
            std::thread::Builder::new()
                .name("reflex-supervisor".into())
                .spawn_scoped(scope, move || {
                    supervise(Supervised {
                        workers: vec![first_worker],
                        retire: first_retire,
                        spawn_worker: &spawn_worker,
                        loader,
                        package,
                        port,
                        stop: &stop,
                        worker_beat: &worker_beat,
                        worker_fault: &worker_fault,
                        telemetry: &telemetry,
                    })
                })
        };
        let supervisor = match supervisor {
            Ok(s) => s,
            Err(e) => {
                stop.store(true, Ordering::Release);
                return (
                    Err(anyhow::anyhow!("cannot start the supervisor: {e}")),
                    Vec::new(),
                    0,
                );
            }
        };
        // This thread is the robot's I/O: between steps it waits on the middleware (E-stop
        // messages are handled the moment they arrive), then sensors and camera in.
        let mut next_ns = start_ns + period_ns;
        let result = loop {
            if rt::now_ns() >= end_ns {
                break Ok(());
            }
            if reflex_rt::shutdown::requested() {
                eprintln!("reflex: SIGTERM/SIGINT: zero to the actuator, then exit");
                break Ok(());
            }
            if reflex_rt::shutdown::continued() {
                ingress.press(reflex_safety::EstopSource::Watchdog);
                break Err(anyhow::anyhow!(
                    "the process was stopped (SIGSTOP/SIGTSTP) and continued: zero sent, E-stop latched; exiting so the service manager restarts Reflex latched (a frozen control process is never resumed, and its middleware threads may have ended on EINTR)"
                ));
            }
            if rt_thread.is_finished() {
                break Err(anyhow::anyhow!("the RT thread ended"));
            }
            if gate_thread.as_ref().is_some_and(|g| g.is_finished()) {
                ingress.press(reflex_safety::EstopSource::Internal);
                break Err(anyhow::anyhow!(
                    "the actuator gate ended: nothing reaches the actuator; exiting so the service manager restarts Reflex"
                ));
            }
            robot.idle_until(next_ns);
            let now = rt::now_ns();
            next_ns += period_ns;
            if next_ns <= now {
                // Overrun: back on the grid, never catching up.
                next_ns = now + period_ns - (now - start_ns) % period_ns;
            }
            if let Some(f) = forward.as_mut() {
                f(ingress.total());
            }
            let command = *sent_out.read();
            let frame = sensor_in.input_buffer_mut();
            let o = obs_in.input_buffer_mut();
            let fresh = robot.step(now, &command, frame, o);
            sensor_in.publish();
            if fresh {
                o.t_obs_ns = now;
                if let Some(link) = &cloud_link
                    // Never waits: the cloud link's thread holds it only to take the latest.
                    && let Ok(mut slot) = link.observation.try_lock()
                {
                    // What the local policy gets, in its buffers' places (no allocation once
                    // sized): the link maps it to the server's keys on its own thread.
                    let c = slot.get_or_insert_with(Default::default);
                    c.t_obs_ns = now;
                    c.state.clone_from(&o.state);
                    c.images.clone_from(&o.images);
                }
                obs_in.publish();
            }
        };
        stop.store(true, Ordering::Release);
        ingress.wake_gate();
        let (workers, restarts) = supervisor.join().unwrap_or_default();
        (result, workers, restarts)
    });
    if io_fifo {
        rt::set_normal();
    }
    // The gate's last word is zero (it sends it when it sees `stop`).
    let to_wire = match gate_thread.map(|g| g.join()) {
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => {
            eprintln!("reflex: the actuator gate panicked");
            None
        }
        None => None,
    };
    let outcome = rt_thread.join();
    let reflex_rt::rt_thread::RtOutcome {
        control,
        ticker: rt_ticker,
        lateness,
        grants,
        watchdog_trips,
        refused,
    } = match outcome {
        Ok(o) => o,
        Err(_) => {
            return Err(io_result
                .err()
                .unwrap_or_else(|| anyhow::anyhow!(""))
                .context("the RT thread panicked: the actuator gate sent zero, then fell silent"));
        }
    };
    if let Some(why) = refused {
        return Err(anyhow::anyhow!("{why}"));
    }
    io_result?;
    let mut latencies = Vec::new();
    // A worker stuck inside `infer` (a hung driver) is abandoned after 2 s, never waited for:
    // the robot is already stopped by action aging, and shutdown must not hang with it.
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
        verdict_to_wire_us: to_wire.filter(|h| h.count > 0).map(|h| {
            [
                h.quantile_us(0.5),
                h.quantile_us(0.99),
                h.max_ns as f64 / 1e3,
            ]
        }),
        rt_stalls: port.status.rt_stalls.load(Ordering::Relaxed),
    };
    drop(cloud_link);
    Ok((summary, report))
}

/// Zeros the gate sends when no fresh verdict exists (one per period), before it falls silent
/// so the drive's own command timeout fires too: 10 periods (100 ms at 10 ms).
pub const ZERO_PERIODS: u32 = 10;

/// A fault the HIL tests inject into the RT thread, relative to the start of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InjectedRtFault {
    /// The RT thread panics this many seconds after the start.
    PanicAfter(f64),
    /// The RT thread stops ticking `after_s` after the start, for `for_s`.
    StallAfter { after_s: f64, for_s: f64 },
}

impl InjectedRtFault {
    /// `panic@S` or `stall@S:D` (seconds), as `reflex run --inject-rt-fault` takes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("--inject-rt-fault {s:?}: expected panic@SECONDS or stall@SECONDS:SECONDS");
        let (kind, rest) = s.split_once('@').ok_or_else(bad)?;
        let num = |v: &str| v.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
        match kind {
            "panic" => Ok(Self::PanicAfter(num(rest).ok_or_else(bad)?)),
            "stall" => {
                let (a, d) = rest.split_once(':').ok_or_else(bad)?;
                Ok(Self::StallAfter {
                    after_s: num(a).ok_or_else(bad)?,
                    for_s: num(d).ok_or_else(bad)?,
                })
            }
            _ => Err(bad()),
        }
    }

    fn at(self, start_ns: u64) -> reflex_rt::rt_thread::RtFault {
        let ns = |s: f64| (s * 1e9) as u64;
        match self {
            Self::PanicAfter(s) => reflex_rt::rt_thread::RtFault::PanicAt(start_ns + ns(s)),
            Self::StallAfter { after_s, for_s } => reflex_rt::rt_thread::RtFault::StallAt {
                at_ns: start_ns + ns(after_s),
                for_ns: ns(for_s),
            },
        }
    }
}

/// The actuator gate's thread (SAF-011), also the RT thread's supervisor: it publishes each
/// verdict the moment the RT thread wakes it (at most two periods old), zero otherwise and on
/// every E-stop press, zero when the run stops; a verdict older than two periods (the RT thread
/// stalled, starved or died) also latches an E-stop (source `watchdog`) once per stall.
#[allow(clippy::too_many_arguments)]
fn spawn_gate(
    mut actuator: Box<dyn Actuator>,
    mut command_out: triple_buffer::Output<CommandFrame>,
    mut sent_in: triple_buffer::Input<CommandFrame>,
    ingress: Arc<EstopIngress>,
    status: Arc<reflex_core::LoopStatus>,
    stop: Arc<AtomicBool>,
    period_ns: u64,
    stall_estop_ns: u64,
    priority: Option<i32>,
) -> Result<std::thread::JoinHandle<reflex_rt::control::Histogram>> {
    std::thread::Builder::new()
        .name("reflex-gate".into())
        .spawn(move || {
            if let Some(p) = priority
                && let Err(e) = rt::set_fifo(p)
            {
                eprintln!("reflex: actuator gate: SCHED_FIFO {p} NOT granted: {e}");
            }
            ingress.set_gate(std::thread::current());
            let mut gate = ActuatorGate::new(period_ns, ZERO_PERIODS);
            let mut stalled = false;
            let mut silent_since: Option<u64> = None;
            // Verdict made (RT tick) → handed to the middleware's write, per verdict sent.
            let mut to_wire = reflex_rt::control::Histogram::default();
            let mut frozen = false;
            loop {
                // The frame first, then the time: a verdict written in between is never
                // mistaken for one from the future.
                let frame = *command_out.read();
                let now = rt::now_ns();
                if stop.load(Ordering::Acquire) {
                    actuator.send(&CommandFrame::zero());
                    sent_in.write(CommandFrame::zero());
                    break;
                }
                // Stopped and continued (SIGSTOP/SIGCONT): zero from here on; the run exits.
                if reflex_rt::shutdown::continued() {
                    if !frozen {
                        frozen = true;
                        status.gate_zero_events.fetch_add(1, Ordering::AcqRel);
                        ingress.press(reflex_safety::EstopSource::Watchdog);
                        actuator.send(&CommandFrame::zero());
                        sent_in.write(CommandFrame::zero());
                    }
                    std::thread::park_timeout(std::time::Duration::from_nanos(period_ns));
                    continue;
                }
                match gate.decide(now, &frame, ingress.total()) {
                    GateOutput::Verdict(f) => {
                        actuator.send(&f);
                        to_wire.record(rt::now_ns().saturating_sub(f.stamp_ns));
                        sent_in.write(f);
                    }
                    GateOutput::Zero => {
                        // Counted before it goes out: the RT thread ramps from standstill.
                        status.gate_zero_events.fetch_add(1, Ordering::AcqRel);
                        actuator.send(&CommandFrame::zero());
                        sent_in.write(CommandFrame::zero());
                    }
                    GateOutput::Nothing => {}
                }
                // Supervisor of the RT thread: its heartbeat is the verdict stamp. Zero went out
                // after two periods (above); silent past `stall_estop_ns` latches an E-stop.
                let age = now.saturating_sub(frame.stamp_ns);
                let silent = frame.seq > 0 && age > gate.max_age_ns();
                if silent {
                    silent_since.get_or_insert(frame.stamp_ns);
                    if age > stall_estop_ns && !stalled {
                        stalled = true;
                        status.rt_stalls.fetch_add(1, Ordering::Relaxed);
                        ingress.press(reflex_safety::EstopSource::Watchdog);
                        eprintln!(
                            "reflex: the RT thread is silent for {} ms: zero sent, E-stop latched (watchdog)",
                            age / 1_000_000
                        );
                    }
                } else if let Some(since) = silent_since.take() {
                    stalled = false;
                    eprintln!(
                        "reflex: the RT thread was silent for {:.1} ms (> 2 periods: zero was sent)",
                        frame.stamp_ns.saturating_sub(since) as f64 / 1e6
                    );
                }
                status
                    .gate_verdicts
                    .store(gate.verdicts_sent, Ordering::Relaxed);
                status
                    .gate_stale_zeros
                    .store(gate.stale_zeros, Ordering::Relaxed);
                status
                    .gate_press_zeros
                    .store(gate.press_zeros, Ordering::Relaxed);
                let next = gate.next_check_ns(now, &frame).min(now + period_ns);
                std::thread::park_timeout(std::time::Duration::from_nanos(
                    next.saturating_sub(rt::now_ns()).max(1),
                ));
            }
            to_wire
        })
        .context("cannot start the actuator gate")
}

type WorkerHandle = std::thread::JoinHandle<Result<Vec<f64>>>;

struct Supervised<'a, F> {
    workers: Vec<WorkerHandle>,
    /// The running worker's retire flag.
    retire: Arc<AtomicBool>,
    spawn_worker: &'a F,
    loader: &'a BackendLoader<'a>,
    package: &'a PolicyPackage,
    port: &'a Arc<SwapPort>,
    stop: &'a AtomicBool,
    worker_beat: &'a AtomicU64,
    worker_fault: &'a AtomicBool,
    telemetry: &'a Telemetry,
}

/// Replaces a dead or silent inference worker with the model that was running, with
/// exponential backoff (100 ms doubling to 5 s, back to 100 ms after 10 s of health) and no
/// lifetime cap. A model that cannot be loaded is retried; the robot meanwhile stands (its
/// actions aged out). Returns every worker started and the restarts.
fn supervise<F>(s: Supervised<'_, F>) -> (Vec<WorkerHandle>, u32)
where
    F: Fn(Box<dyn PolicyBackend>, u32, Arc<AtomicBool>) -> Result<WorkerHandle>,
{
    const FIRST_BACKOFF_NS: u64 = 100_000_000;
    const MAX_BACKOFF_NS: u64 = 5_000_000_000;
    let Supervised {
        mut workers,
        mut retire,
        spawn_worker,
        loader,
        package,
        port,
        stop,
        worker_beat,
        worker_fault,
        telemetry,
    } = s;
    let mut restarts = 0u32;
    let mut backoff_ns = FIRST_BACKOFF_NS;
    let mut next_try_ns = 0u64;
    let mut healthy_since_ns = rt::now_ns();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let now = rt::now_ns();
        let dead = workers.last().is_none_or(|w| w.is_finished());
        if !(dead || worker_fault.load(Ordering::Acquire)) {
            if now.saturating_sub(healthy_since_ns) > 10_000_000_000 {
                backoff_ns = FIRST_BACKOFF_NS;
            }
            continue;
        }
        if now < next_try_ns || stop.load(Ordering::Acquire) {
            continue;
        }
        next_try_ns = now + backoff_ns;
        backoff_ns = (backoff_ns * 2).min(MAX_BACKOFF_NS);
        restarts += 1;
        telemetry.worker_restarts.fetch_add(1, Ordering::Relaxed);
        // Fresh beat first, then clear the fault: the RT thread cannot re-raise it in between.
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
        let next_retire = Arc::new(AtomicBool::new(false));
        match loaded.and_then(|b| spawn_worker(b, restarts, next_retire.clone())) {
            Ok(w) => {
                // The replaced worker stops (now, or when its hung `infer` returns); the new
                // one starts with a fresh beat (loading may have outlasted the deadline).
                retire.store(true, Ordering::Release);
                retire = next_retire;
                workers.push(w);
                worker_beat.store(rt::now_ns(), Ordering::Release);
                worker_fault.store(false, Ordering::Release);
                healthy_since_ns = rt::now_ns();
            }
            Err(e) => {
                eprintln!(
                    "reflex: supervisor: cannot restart the inference worker (retry in {} ms): {e:#}",
                    backoff_ns / 1_000_000
                );
                // Still faulty: try again after the backoff.
                worker_fault.store(true, Ordering::Release);
            }
        }
    }
    (workers, restarts)
}
