//! `reflex sim --realtime`: the same closed loop on real threads and the real clock.
//!
//! ```text
//!  sim thread (the "robot", 100 Hz) ── sensors ─► triple buffer ─► RT thread (ControlLoop::tick
//!     ▲   └─ camera + state ─► triple buffer ─► inference worker      on absolute deadlines)
//!     └──────────── command ◄─ triple buffer ◄───────────────────────────┘
//!                  inference worker ─► chunk rings (SPSC, recycled buffers) ─► RT thread
//! ```
//! The RT thread never blocks, locks or allocates after start-up; the watchdog (on the RT
//! thread) turns N deadline misses in a row, or an inference worker silent past its deadline,
//! into an internal E-stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use anyhow::{Context, Result};
use reflex_models::{
    ActionChunk, BackendConfig, Observation, OrtBackend, PolicyBackend, PolicyPackage,
};
use reflex_safety::{
    EstopReport, EstopSource, Monotonic, Odometry, Reason, SafetyConfig, SafetyInputs, Twist,
};

use crate::control::Histogram;
use crate::rt::{self, RtConfig, Ticker};
use crate::simrun::{Robot, Scenario, SimOptions, SimSummary};

/// Sensors as the RT thread reads them (written by the robot I/O; stamps on the monotonic clock
/// at reception, so a source that stops publishing goes stale).
#[derive(Debug, Clone)]
pub struct SensorFrame {
    pub scan_stamp_ns: u64,
    pub angle_min_rad: f32,
    pub angle_increment_rad: f32,
    pub range_min_m: f32,
    pub range_max_m: f32,
    /// Preallocated to the configured beam count; a scan fills a prefix (`len` = its beams).
    pub ranges: Vec<f32>,
    pub odom_stamp_ns: u64,
    /// Measured base velocity, when the robot has odometry.
    pub odom: Option<Twist>,
    /// E-stop sources the robot I/O reports (hardware circuit, ROS topic, cloud); the RT thread
    /// adds its own (watchdog, internal). `Unknown` until a source reports.
    pub estop: [EstopReport; EstopSource::COUNT],
    /// Explicit reset requests so far (SAF-002: the loop starts latched).
    pub reset_seq: u64,
    /// Joint states in `[safety.arm] joints` order (empty without an arm); stamped on reception.
    pub joint_stamp_ns: u64,
    pub joint_positions: Vec<f64>,
    pub joint_velocities: Vec<f64>,
}

impl SensorFrame {
    pub fn new(beams: usize, joints: usize) -> Self {
        Self {
            joint_stamp_ns: 0,
            joint_positions: vec![0.0; joints],
            joint_velocities: vec![0.0; joints],
            scan_stamp_ns: 0,
            angle_min_rad: -std::f32::consts::PI,
            angle_increment_rad: std::f32::consts::TAU / beams.max(1) as f32,
            range_min_m: 0.05,
            range_max_m: 30.0,
            ranges: vec![f32::INFINITY; beams],
            odom_stamp_ns: 0,
            odom: None,
            estop: [EstopReport::Unknown; EstopSource::COUNT],
            reset_seq: 0,
        }
    }
}

/// Below 1 cm/s and 0.01 rad/s: the `stationary` swap rule's notion of standing still.
pub fn is_stationary(v: Twist) -> bool {
    v.vx_mps.hypot(v.vy_mps) < 0.01 && v.wz_radps.abs() < 0.01
}

/// The command the robot I/O applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandFrame {
    pub base: Twist,
    pub power_enabled: bool,
}

/// The robot the loop drives: the built-in simulator or a middleware adapter. Its `step` runs
/// once per period on the robot thread (never the RT thread).
pub trait RobotIo {
    /// Beams to preallocate for scans.
    fn beams(&self) -> usize;
    /// Whether the robot stands still before the first tick.
    fn stationary_at_start(&self) -> bool;
    /// Applies `command`, then writes the newest sensors into `sensors`; writes a new camera
    /// observation into `obs` and returns true when one is available.
    fn step(
        &mut self,
        now_ns: u64,
        command: &CommandFrame,
        sensors: &mut SensorFrame,
        obs: &mut Observation,
    ) -> bool;
    /// Adds what only this robot knows to the run's summary (collisions, goal, …).
    fn finish(&self, _summary: &mut SimSummary) {}
}

/// The built-in simulator as a [`RobotIo`]: world and plant stepped at the loop rate, lidar at
/// 25 Hz, camera at 20 Hz, odometry every step, a healthy hardware E-stop circuit, one reset.
pub struct SimRobot {
    robot: Robot,
    start_ns: u64,
    last_ns: u64,
    step: u64,
    scan_stamp: u64,
    ranges: Vec<f32>,
    inference_due: u64,
    faults: Option<Box<dyn Fn(f64) -> crate::simrun::Faults>>,
    /// (time s, speed m/s, clearance m) per step, when tracing (HIL scenarios).
    pub trace: Option<Vec<(f64, f64, f64)>>,
}

impl std::fmt::Debug for SimRobot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRobot")
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl SimRobot {
    pub fn new(robot: Robot) -> Self {
        let beams = robot.lidar.beams;
        Self {
            robot,
            start_ns: 0,
            last_ns: 0,
            step: 0,
            scan_stamp: 0,
            ranges: vec![f32::INFINITY; beams],
            inference_due: 0,
            faults: None,
            trace: None,
        }
    }

    /// Applies `faults(t_s)` every step (frozen lidar, stopped camera, E-stop, resets) and
    /// records a per-step trace (HIL scenarios in real time).
    pub fn with_faults(mut self, faults: Box<dyn Fn(f64) -> crate::simrun::Faults>) -> Self {
        self.faults = Some(faults);
        self.trace = Some(Vec::new());
        self
    }
}

impl RobotIo for SimRobot {
    fn beams(&self) -> usize {
        self.robot.lidar.beams
    }

    fn stationary_at_start(&self) -> bool {
        is_stationary(self.robot.plant.velocity)
    }

    fn step(
        &mut self,
        now: u64,
        command: &CommandFrame,
        frame: &mut SensorFrame,
        obs: &mut Observation,
    ) -> bool {
        if self.step == 0 {
            (self.start_ns, self.last_ns, self.inference_due) = (now, now, now);
        }
        let dt_s = (now - self.last_ns) as f64 * 1e-9;
        self.last_ns = now;
        let robot = &mut self.robot;
        robot.world.step(dt_s);
        let t_s = (now - self.start_ns) as f64 * 1e-9;
        let fault = self.faults.as_ref().map(|f| f(t_s)).unwrap_or_default();
        let clearance = robot.actuate(command.base, command.power_enabled, dt_s, t_s);
        if let Some(trace) = self.trace.as_mut() {
            let v = robot.plant.velocity;
            trace.push((t_s, v.vx_mps.hypot(v.vy_mps), clearance));
        }
        // The lidar publishes at 25 Hz; odometry every step.
        if self.step.is_multiple_of(4) && !fault.lidar_frozen {
            robot.scan(&mut self.ranges);
            self.scan_stamp = now;
        }
        self.step += 1;
        frame.ranges.copy_from_slice(&self.ranges);
        frame.scan_stamp_ns = self.scan_stamp;
        frame.odom_stamp_ns = now;
        frame.odom = Some(robot.plant.velocity);
        frame.estop[EstopSource::Hardware.index()] = if fault.estop_pressed {
            EstopReport::Pressed(Monotonic::from_nanos(now))
        } else {
            EstopReport::Clear(Monotonic::from_nanos(now))
        };
        frame.reset_seq = 1 + fault.resets;
        if now >= self.inference_due && !fault.camera_stopped {
            // The camera runs at 20 Hz; the worker takes the newest frame when it is free.
            robot.observe(obs);
            self.inference_due = now + 50_000_000;
            return true;
        }
        false
    }

    fn finish(&self, summary: &mut SimSummary) {
        self.robot.finish(summary);
    }
}

/// A model ready to take over: the inference worker takes it between two inferences (a chunk
/// boundary). The RT thread never touches it.
pub struct Candidate {
    pub generation: u32,
    pub backend: std::sync::Mutex<Option<OrtBackend>>,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SwapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwapPort")
            .field("swap_when", &self.swap_when)
            .field("loop_generation", &self.loop_generation)
            .field("worker_generation", &self.worker_generation)
            .field("ticks", &self.ticks)
            .field("deadline_misses", &self.deadline_misses)
            .finish_non_exhaustive()
    }
}

/// When a candidate may be swapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapWhen {
    /// Between any two inferences.
    #[default]
    ChunkBoundary,
    /// Only while the robot stands still (odometry below 1 cm/s and 0.01 rad/s).
    Stationary,
}

/// What the loop and the worker publish for the model manager (atomics written without
/// waiting; read by the updater thread), and the wait-free candidate slot (`arc-swap`).
#[derive(Default)]
pub struct SwapPort {
    pub slot: arc_swap::ArcSwapOption<Candidate>,
    pub swap_when: SwapWhen,
    /// RT thread: generation of the last merged chunk and when its first chunk was merged.
    pub loop_generation: AtomicU32,
    pub generation_since_ns: AtomicU64,
    pub ticks: AtomicU64,
    /// RT thread: ticks whose verdict stopped or slowed the robot.
    pub vetoed_ticks: AtomicU64,
    pub deadline_misses: AtomicU64,
    pub stationary: AtomicBool,
    /// Worker: inferences run, chunks dropped for non-finite values, slowest inference since
    /// the updater last reset it.
    pub inferences: AtomicU64,
    pub nonfinite_chunks: AtomicU64,
    pub inference_max_ns: AtomicU64,
    /// The generation the worker runs now.
    pub worker_generation: AtomicU32,
    /// The package of the generation handed over last (the updater sets it with the
    /// candidate), so a restarted worker loads the model that was running, never an older one.
    pub current_package: std::sync::Mutex<Option<(u32, PolicyPackage)>>,
    /// Metrics (model info on hand-over, registry link state from the model manager).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

impl SwapPort {
    pub fn new(swap_when: SwapWhen) -> Self {
        Self {
            swap_when,
            ..Self::default()
        }
    }

    /// The inference worker's side of a hand-over, at a chunk boundary: takes the waiting
    /// candidate model, if any, and records its generation as the one the worker runs.
    pub fn take_candidate(&self) -> Option<(u32, OrtBackend)> {
        if self.slot.load().is_none() {
            return None;
        }
        let candidate = self.slot.swap(None)?;
        let next = candidate
            .backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        self.worker_generation
            .store(candidate.generation, Ordering::Release);
        Some((candidate.generation, next))
    }
}

/// Hands `backend` (generation `generation`, built from `package`) to the inference worker
/// through the port's slot and waits, off the RT thread, until the loop has merged its first
/// chunk. Returns the time from hand-over to that merge, ms. Gives up (taking the candidate
/// back) after 10 s or when `stop` is set.
pub fn hand_over(
    port: &SwapPort,
    generation: u32,
    backend: OrtBackend,
    package: &PolicyPackage,
    stop: &AtomicBool,
) -> Result<f64> {
    let t0 = rt::now_ns();
    port.slot.store(Some(Arc::new(Candidate {
        generation,
        backend: std::sync::Mutex::new(Some(backend)),
    })));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while port.loop_generation.load(Ordering::Acquire) != generation {
        if stop.load(Ordering::Acquire) || std::time::Instant::now() > deadline {
            port.slot.store(None);
            anyhow::bail!(
                "the new model's first action did not reach the loop within 10 s (swap_when = {:?})",
                port.swap_when
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // From now on a restarted worker loads this model, never an older one.
    *port
        .current_package
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((generation, package.clone()));
    port.telemetry.set_model(package, generation);
    let since = port.generation_since_ns.load(Ordering::Acquire);
    Ok(since.saturating_sub(t0) as f64 / 1e6)
}

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

/// Runs `scenario` on the built-in simulator in real time for `options.duration_s`.
pub fn run_realtime(
    safety_config: &SafetyConfig,
    package: &PolicyPackage,
    backend_config: &BackendConfig,
    rt_config: &RtConfig,
    scenario: Scenario,
    options: &SimOptions,
    port: &Arc<SwapPort>,
) -> Result<(SimSummary, RealtimeReport)> {
    let mut config = safety_config.clone();
    config.control_period_ms = rt_config.period_ms;
    let mut robot = SimRobot::new(Robot::new(&config, &scenario, options.seed)?);
    run_robot(
        safety_config,
        package,
        backend_config,
        rt_config,
        (&scenario.name, &scenario.instruction),
        options,
        port,
        &mut robot,
    )
}

/// The loop in real time for `options.duration_s` on `robot`: RT thread, inference worker
/// (with its supervisor) and this thread as the robot's I/O. `task` = (name, instruction).
#[allow(clippy::too_many_arguments)]
pub fn run_robot(
    safety_config: &SafetyConfig,
    package: &PolicyPackage,
    backend_config: &BackendConfig,
    rt_config: &RtConfig,
    task: (&str, &str),
    options: &SimOptions,
    port: &Arc<SwapPort>,
    robot: &mut dyn RobotIo,
) -> Result<(SimSummary, RealtimeReport)> {
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
                .get_or_insert_with(crate::arbiter::Inboxes::default)
                .clone();
            Some(crate::cloud::CloudLink::start(
                cfg,
                crate::simrun::base_axes(package),
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
        .input(reflex_models::InputRole::Image)
        .map(|i| i.shape.clone());
    let manifest = package.manifest.clone();
    let period_ns = rt_config.period_ns();
    let mut config = safety_config.clone();
    config.control_period_ms = rt_config.period_ms;
    let (chunk_tx, chunk_rx) = crate::simrun::chunk_channel(package);
    let control = crate::simrun::control_loop(&config, package, options, chunk_rx)?;
    let mut backend = OrtBackend::load(package, backend_config)?;
    backend.warm_up(3)?;

    // Before the first tick, "stationary" is what the robot's odometry says at start.
    port.stationary
        .store(robot.stationary_at_start(), Ordering::Release);
    let joints = config.arm.as_ref().map_or(0, |a| a.joints.len());
    let (mut sensor_in, mut sensor_out) =
        triple_buffer::triple_buffer(&SensorFrame::new(robot.beams(), joints));
    let (mut command_in, mut command_out) = triple_buffer::triple_buffer(&CommandFrame::default());
    let mut obs = Observation::for_manifest(&manifest);
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
    let kill_at = options
        .kill_inference_at_s
        .map(|s| start_ns + (s * 1e9) as u64);
    let crash_at = options
        .crash_inference_at_s
        .map(|s| start_ns + (s * 1e9) as u64);
    let telemetry = control.telemetry.clone();
    let inference_tap = options.recorder.as_ref().map(|r| r.inference_tap());
    let spawn_worker = |backend: OrtBackend, generation: u32| {
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
                let mut model_generation = port.worker_generation.load(Ordering::Acquire);
                let mut chunk = ActionChunk::for_manifest(&manifest);
                let mut obs = Observation::for_manifest(&manifest);
                let mut latencies_ms = Vec::with_capacity(4096);
                while !stop.load(Ordering::Acquire) {
                    if generation == 0 && crash_at.is_some_and(|k| rt::now_ns() >= k) {
                        anyhow::bail!("simulated inference worker crash (test hook)");
                    }
                    if generation == 0 && kill_at.is_some_and(|k| rt::now_ns() >= k) {
                        // Simulated hang: alive, silent, holding nothing.
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    }
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
                        SwapWhen::Stationary => port.stationary.load(Ordering::Acquire),
                    };
                    if may_swap && let Some((generation, next)) = port.take_candidate() {
                        backend = next;
                        model_generation = generation;
                    }
                    let t0 = rt::now_ns();
                    backend.infer(&obs, &mut chunk)?;
                    let took = rt::now_ns() - t0;
                    latencies_ms.push(took as f64 * 1e-6);
                    port.inferences.fetch_add(1, Ordering::Relaxed);
                    port.inference_max_ns.fetch_max(took, Ordering::Relaxed);
                    telemetry.inference.record(took);
                    // Bad data never reaches the loop: a chunk with NaN/inf is dropped (the
                    // loop then stops the robot when its actions run out).
                    if let Some(tap) = &inference_tap {
                        tap.record(model_generation, &obs, &chunk.actions);
                    }
                    if chunk.actions.iter().any(|a| !a.is_finite()) {
                        port.nonfinite_chunks.fetch_add(1, Ordering::Relaxed);
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
    const WORKER_DEADLINE_NS: u64 = 500_000_000;

    // The RT thread: the control loop on absolute deadlines.
    let rt_thread = {
        let stop = stop.clone();
        let beat = worker_beat.clone();
        let fault = worker_fault.clone();
        let port = port.clone();
        let rt_config = rt_config.clone();
        std::thread::Builder::new()
            .name("reflex-rt".into())
            .spawn(move || {
                let grants = rt::apply(&rt_config);
                let mut control = control;
                let mut ticker = Ticker::new(period_ns, rt_config.overrun, rt::now_ns());
                let mut lateness = Histogram::default();
                let worker_deadline_ns = WORKER_DEADLINE_NS;
                let mut watchdog_trips = 0u64;
                let clock = rt::now_ns;
                while !stop.load(Ordering::Acquire) {
                    let misses_before = ticker.misses;
                    let tick = ticker.wait();
                    lateness.record(tick.lateness_ns());
                    if ticker.misses != misses_before
                        && let Some(tap) = control.recorder.as_mut()
                    {
                        tap.flags |= crate::recorder::FLAG_DEADLINE_MISS;
                    }
                    control.telemetry.tick_lateness.record(tick.lateness_ns());
                    let now = tick.woke_ns;
                    let sensors = sensor_out.read();
                    // The robot's sources as it reported them; the loop's own ones are healthy
                    // unless the watchdog says otherwise below.
                    let mut estop = sensors.estop;
                    estop[EstopSource::Watchdog.index()] =
                        EstopReport::Clear(Monotonic::from_nanos(now));
                    estop[EstopSource::Internal.index()] =
                        EstopReport::Clear(Monotonic::from_nanos(now));
                    // Watchdog: N missed deadlines in a row, or a silent inference worker.
                    let worker_silent =
                        now.saturating_sub(beat.load(Ordering::Acquire)) > worker_deadline_ns;
                    if ticker.consecutive_misses >= u64::from(rt_config.max_consecutive_misses)
                        || worker_silent
                    {
                        estop[EstopSource::Internal.index()] =
                            EstopReport::Pressed(Monotonic::from_nanos(now));
                        watchdog_trips += 1;
                        control
                            .telemetry
                            .watchdog_trips
                            .fetch_add(1, Ordering::Relaxed);
                        if worker_silent {
                            fault.store(true, Ordering::Release);
                            if let Some(tap) = control.recorder.as_mut() {
                                tap.flags |= crate::recorder::FLAG_INFERENCE_FAULT;
                            }
                        }
                    }
                    let inputs = SafetyInputs {
                        estop,
                        reset_request_seq: sensors.reset_seq,
                        scan: (sensors.scan_stamp_ns > 0).then_some(reflex_safety::Scan {
                            stamp: Monotonic::from_nanos(sensors.scan_stamp_ns),
                            angle_min_rad: sensors.angle_min_rad,
                            angle_increment_rad: sensors.angle_increment_rad,
                            range_min_m: sensors.range_min_m,
                            range_max_m: sensors.range_max_m,
                            ranges_m: &sensors.ranges,
                        }),
                        odometry: sensors.odom.map(|twist| Odometry {
                            stamp: Monotonic::from_nanos(sensors.odom_stamp_ns),
                            twist,
                        }),
                        joint_state: (sensors.joint_stamp_ns > 0
                            && !sensors.joint_positions.is_empty())
                        .then_some(reflex_safety::JointState {
                            stamp: Monotonic::from_nanos(sensors.joint_stamp_ns),
                            positions: &sensors.joint_positions,
                            velocities: &sensors.joint_velocities,
                        }),
                    };
                    let verdict = control.tick(now, &inputs, &clock);
                    command_in.write(CommandFrame {
                        base: verdict.command.base,
                        power_enabled: verdict.power_enabled,
                    });
                    // For the model manager: plain atomic stores, never a wait.
                    let gen_now = control.stats.model_generation;
                    if port.loop_generation.load(Ordering::Relaxed) != gen_now {
                        port.generation_since_ns
                            .store(control.stats.generation_changed_ns, Ordering::Release);
                        port.loop_generation.store(gen_now, Ordering::Release);
                    }
                    port.ticks.fetch_add(1, Ordering::Relaxed);
                    if verdict.action >= reflex_safety::Action::Slow {
                        port.vetoed_ticks.fetch_add(1, Ordering::Relaxed);
                    }
                    port.deadline_misses.store(ticker.misses, Ordering::Relaxed);
                    control
                        .telemetry
                        .deadline_misses
                        .store(ticker.misses, Ordering::Relaxed);
                    // Without odometry, the last command stands in for the motion.
                    let v = sensors.odom.unwrap_or(verdict.command.base);
                    port.stationary.store(is_stationary(v), Ordering::Relaxed);
                }
                (control, ticker, lateness, grants, watchdog_trips)
            })
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
                    (Some(reflex_models::ImageData::U8(d)), Some(shape)) => {
                        Some((d.clone(), shape.clone()))
                    }
                    _ => None,
                };
                *link.observation.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(crate::cloud::CloudObservation {
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
            let backend = match &current {
                Some((generation, p)) => {
                    port.worker_generation.store(*generation, Ordering::Release);
                    OrtBackend::load(p, backend_config)?
                }
                None => OrtBackend::load(package, backend_config)?,
            };
            workers.push(spawn_worker(backend, worker_restarts)?);
        }
    }
    stop.store(true, Ordering::Release);
    let (control, rt_ticker, lateness, grants, watchdog_trips) = rt_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the RT thread panicked"))?;
    let mut latencies = Vec::new();
    for worker in workers {
        match worker.join() {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => eprintln!("reflex: inference worker stopped with an error: {e:#}"),
            Err(_) => eprintln!("reflex: an inference worker panicked"),
        }
    }
    latencies.sort_by(f64::total_cmp);

    let mut summary = crate::simrun::empty_summary(task.0, "realtime");
    let counts = control.safety.reason_counts();
    for reason in Reason::ALL {
        let n = counts[*reason as usize];
        if n > 0 && reason.action() >= reflex_safety::Action::Slow {
            summary.vetoes.insert(reason.name().to_string(), n);
        }
    }
    summary.ticks = control.stats.ticks;
    summary.deadline_misses = rt_ticker.misses;
    summary.tick_p50_us = control.stats.tick_cost.quantile_us(0.5);
    summary.tick_p99_us = control.stats.tick_cost.quantile_us(0.99);
    summary.tick_p999_us = control.stats.tick_cost.quantile_us(0.999);
    summary.tick_max_us = control.stats.tick_cost.max_ns as f64 / 1e3;
    summary.inference_p50_ms = latencies.get(latencies.len() / 2).copied().unwrap_or(0.0);
    summary.actions_dropped_stale = control.queue.stats.actions_dropped_stale;
    summary.ticks_without_action = control.stats.ticks_without_action;
    summary.chunks_merged = control.stats.chunks_merged;
    robot.finish(&mut summary);
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
