//! `reflex sim` in lockstep: the policy, the production control loop (`reflex_runner::run::
//! control_loop`) and the safety layer in closed loop with the built-in simulator, deterministic
//! and faster than real time. The real-time mode (`reflex_sim::run_realtime`) drives the same loop from
//! the production thread topology.

use anyhow::{Context, Result};
use reflex_policy::{BackendConfig, ImageData, Observation, OrtBackend, PolicyPackage};
use reflex_runner::run::{LoopSummary, RunOptions, chunk_channel, control_loop};
use reflex_safety::{
    EstopReport, EstopSource, Monotonic, Odometry, SafetyConfig, SafetyInputs, Scan, Twist,
};
use serde::Serialize;

use crate::world::{
    MARKER_BLUE, MARKER_RED, Obstacle, Plant, Pose, Rng, SimCamera, SimLidar, World,
};
use reflex_rt::chunks::ChunksConfig;

/// A scenario: world, goal and instruction.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub world: World,
    pub instruction: String,
    /// Index of the goal marker in `world.obstacles`.
    pub goal: usize,
    /// The goal counts as reached when the footprint is this close to it (m).
    pub goal_clearance_m: f64,
}

/// The default scenario: go to the red marker (a blue one is a distractor); a pedestrian crosses
/// the path on the way.
pub fn default_scenario(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let goal_y = rng.range(-1.0, 1.0);
    let world = World {
        obstacles: vec![
            Obstacle::marker("red marker", [6.0, goal_y], 0.2, MARKER_RED),
            Obstacle::marker(
                "blue marker",
                [4.0, -goal_y.signum() * 2.2],
                0.2,
                MARKER_BLUE,
            ),
            Obstacle::wall("left wall", [-2.0, 3.0], [9.0, 3.0]),
            Obstacle::wall("right wall", [-2.0, -3.0], [9.0, -3.0]),
            Obstacle::wall("end wall", [9.0, -3.0], [9.0, 3.0]),
            Obstacle::circle("pedestrian", [3.0, -2.6], 0.25, [0.0, 0.8], (6.0, 14.0)),
        ],
        time_s: 0.0,
    };
    Scenario {
        name: "default".into(),
        world,
        instruction: "go to the red marker".into(),
        goal: 0,
        goal_clearance_m: 0.6,
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub duration_s: f64,
    pub period_ms: f64,
    pub seed: u64,
    /// Simulated inference latency in lockstep mode (the chunk arrives this long after its
    /// observation), ms.
    pub inference_latency_ms: f64,
    /// `[chunks]` of the config the run uses.
    pub chunks: ChunksConfig,
    /// `[arbitration]` of the config the run uses.
    pub arbitration: reflex_rt::arbiter::ArbiterConfig,
    /// Stop feeding chunks after this many seconds (a dead inference worker), for tests.
    pub kill_inference_at_s: Option<f64>,
    /// Real-time runs: the first inference worker crashes (its thread ends with an error) at
    /// this time; the supervisor must replace it. For tests.
    pub crash_inference_at_s: Option<f64>,
    /// Real-time runs: from this time on, every chunk the first inference worker's model makes
    /// is NaN (a model that diverges); the worker must drop them. For tests.
    pub nan_output_at_s: Option<f64>,
    /// Real-time runs: the first inference worker's first inference in service takes this long
    /// (ms) — a lazily initialised engine (TensorRT, CUDA graphs) whose warm-up did not
    /// warm everything. For tests.
    pub first_inference_ms: Option<f64>,
    /// The arbiter's inboxes (cloud, operator), when something outside the loop feeds them
    /// (the HIL hardware runner's scripted policy, the cloud link).
    pub inboxes: Option<reflex_rt::arbiter::Inboxes>,
    /// Where the loop and the inference worker publish metrics (None: a private one).
    pub telemetry: Option<std::sync::Arc<reflex_core::metrics::Telemetry>>,
    /// The flight recorder the loop feeds (its RT tap is taken by the control loop).
    pub recorder: Option<std::sync::Arc<reflex_telemetry::recorder::Recorder>>,
    /// Real-time runs: the cloud policy link to start (`[cloud]`).
    pub cloud: Option<reflex_cloud::CloudConfig>,
}

impl SimOptions {
    /// What the production runner takes of these options.
    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            duration_s: self.duration_s,
            chunks: self.chunks,
            arbitration: self.arbitration.clone(),
            inboxes: self.inboxes.clone(),
            telemetry: self.telemetry.clone(),
            recorder: self.recorder.clone(),
            cloud: self.cloud.clone(),
            rt_fault: None,
        }
    }

    /// The simulator's options for a production run's `options` (`reflex run --io sim`).
    pub fn from_run(options: &RunOptions, seed: u64) -> Self {
        Self {
            duration_s: options.duration_s,
            seed,
            chunks: options.chunks,
            arbitration: options.arbitration.clone(),
            inboxes: options.inboxes.clone(),
            telemetry: options.telemetry.clone(),
            recorder: options.recorder.clone(),
            cloud: options.cloud.clone(),
            ..Self::default()
        }
    }
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            duration_s: 30.0,
            period_ms: 10.0,
            seed: 1,
            inference_latency_ms: 40.0,
            chunks: ChunksConfig::default(),
            arbitration: Default::default(),
            kill_inference_at_s: None,
            crash_inference_at_s: None,
            nan_output_at_s: None,
            first_inference_ms: None,
            inboxes: None,
            telemetry: None,
            recorder: None,
            cloud: None,
        }
    }
}

/// The summary `reflex sim --json` prints as its last line: what the loop did (the same numbers
/// as `reflex run`) and what only the simulator can know.
#[derive(Debug, Clone, Serialize)]
pub struct SimSummary {
    pub scenario: String,
    pub mode: &'static str,
    #[serde(flatten)]
    pub run: LoopSummary,
    pub collisions: u64,
    pub min_clearance_m: f64,
    pub goal_reached: bool,
    pub goal_reached_s: Option<f64>,
    /// Time from the inference worker's death to the loop's stop proposal (s), when killed.
    pub stopped_after_kill_s: Option<f64>,
    pub final_pose: [f64; 3],
}

/// A summary with nothing observed by the simulator yet.
pub fn empty_summary(scenario: &str, mode: &'static str, run: LoopSummary) -> SimSummary {
    SimSummary {
        scenario: scenario.to_string(),
        mode,
        run,
        collisions: 0,
        min_clearance_m: f64::INFINITY,
        goal_reached: false,
        goal_reached_s: None,
        stopped_after_kill_s: None,
        final_pose: [0.0; 3],
    }
}

/// One tick of the run, for reports and tests.
#[derive(Debug, Clone, Copy)]
pub struct SimTick {
    pub time_s: f64,
    pub pose: Pose,
    pub velocity: Twist,
    pub command: Twist,
    pub action: reflex_safety::Action,
    pub reasons: reflex_safety::Reasons,
    pub clearance_m: f64,
}

/// Faults injected into a lockstep run at a given time (HIL scenarios).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The inference worker hangs: no chunk is produced.
    pub inference_hung: bool,
    /// The camera stops: no new observation reaches the policy.
    pub camera_stopped: bool,
    /// The lidar driver freezes: no new scans.
    pub lidar_frozen: bool,
    /// The hardware E-stop is pressed.
    pub estop_pressed: bool,
    /// Operator resets requested so far (beyond the one at start).
    pub resets: u64,
}

/// Runs `scenario` in lockstep; `on_tick` sees every tick.
pub fn run_lockstep(
    safety_config: &SafetyConfig,
    package: &PolicyPackage,
    backend_config: &BackendConfig,
    scenario: Scenario,
    options: &SimOptions,
    on_tick: &mut dyn FnMut(&SimTick),
) -> Result<SimSummary> {
    run_lockstep_with_faults(
        safety_config,
        package,
        backend_config,
        scenario,
        options,
        &|_| Faults::default(),
        on_tick,
    )
}

/// [`run_lockstep`] with `faults(t_s)` applied at every tick.
pub fn run_lockstep_with_faults(
    safety_config: &SafetyConfig,
    package: &PolicyPackage,
    backend_config: &BackendConfig,
    scenario: Scenario,
    options: &SimOptions,
    faults: &dyn Fn(f64) -> Faults,
    on_tick: &mut dyn FnMut(&SimTick),
) -> Result<SimSummary> {
    let mut backend = OrtBackend::load(package, backend_config)?;
    backend.warm_up(3)?;
    let manifest = &package.manifest;
    let period_ns = (options.period_ms * 1e6).round() as u64;
    let mut config = safety_config.clone();
    config.control_period_ms = options.period_ms;
    let (chunk_tx, chunk_rx) = chunk_channel(package);
    let mut control = control_loop(&config, package, &options.run_options(), chunk_rx)?;
    let inference_tap = options.recorder.as_ref().map(|r| r.inference_tap());
    let mut robot = Robot::new(&config, &scenario, options.seed)?;
    let mut ranges = vec![f32::INFINITY; robot.lidar.beams];
    let mut scan_stamp = 0u64;
    let mut obs = manifest.observation();
    if !manifest.encode_instruction(&scenario.instruction, &mut obs.instruction) {
        anyhow::bail!(
            "instruction {:?}: policy `{}` has no embedding for it; give one of its instructions: {}",
            &scenario.instruction,
            manifest.name,
            manifest.known_instructions()
        );
    }
    let mut chunk = manifest.action_chunk();
    let mut pending: Option<u64> = None; // arrival time of the chunk in flight
    let latency_ns = (options.inference_latency_ms * 1e6).round() as u64;
    let mut inference_ms = Vec::new();
    let start_ns = 1_000_000_000u64;
    let ticks = (options.duration_s * 1e9 / period_ns as f64).round() as u64;
    let mut stopped_after_kill_s = None;
    let wall = std::time::Instant::now();
    let clock = move || wall.elapsed().as_nanos() as u64;
    for tick in 0..ticks {
        let now = start_ns + (tick + 1) * period_ns;
        let t_s = (tick + 1) as f64 * period_ns as f64 * 1e-9;
        robot.world.step(period_ns as f64 * 1e-9);
        let fault = faults(t_s);
        if tick.is_multiple_of(4) && !fault.lidar_frozen {
            robot.scan(&mut ranges);
            scan_stamp = now;
        }
        // Anytime inference: the chunk computed from this observation arrives `latency` later.
        let alive = options.kill_inference_at_s.is_none_or(|k| t_s < k)
            && !fault.inference_hung
            && !fault.camera_stopped;
        if alive && pending.is_none() {
            robot.observe(&mut obs);
            obs.t_obs_ns = now;
            let t0 = std::time::Instant::now();
            backend.infer(&obs, &mut chunk)?;
            inference_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            if let Some(tap) = &inference_tap {
                tap.record(0, &obs, &chunk.actions);
            }
            pending = Some(now + latency_ns);
        }
        if let Some(arrival) = pending
            && arrival <= now
            && !fault.inference_hung
        {
            // No free buffer: the chunk is dropped, as in a real run.
            let _ = chunk_tx.try_send(chunk.t_obs_ns, &chunk.actions, 0);
            pending = None;
        }
        let mut estop = [EstopReport::Clear(Monotonic::from_nanos(now)); EstopSource::COUNT];
        if fault.estop_pressed {
            estop[EstopSource::Hardware.index()] = EstopReport::Pressed(Monotonic::from_nanos(now));
        }
        let inputs = SafetyInputs {
            estop,
            // The operator's start at t = 0, then any scripted resets.
            reset_request_seq: 1 + fault.resets,
            scan: Some(robot.lidar_scan(scan_stamp, &ranges)),
            odometry: Some(Odometry {
                stamp: Monotonic::from_nanos(now),
                twist: robot.plant.velocity,
            }),
            joint_state: None,
        };
        let verdict = control.tick(now, &inputs, &clock);
        let clearance = robot.actuate(
            verdict.command.base,
            verdict.power_enabled,
            period_ns as f64 * 1e-9,
            t_s,
        );
        if let Some(kill) = options.kill_inference_at_s
            && t_s >= kill
            && stopped_after_kill_s.is_none()
            && control.last_no_action.is_some()
        {
            // The loop stopped proposing motion: no action is executed past its age limit.
            stopped_after_kill_s = Some(t_s - kill);
        }
        on_tick(&SimTick {
            time_s: t_s,
            pose: robot.plant.pose,
            velocity: robot.plant.velocity,
            command: verdict.command.base,
            action: verdict.action,
            reasons: verdict.reasons,
            clearance_m: clearance,
        });
    }
    inference_ms.sort_by(f64::total_cmp);
    // Lockstep: no deadlines to miss.
    let mut summary = empty_summary(
        &scenario.name,
        "lockstep",
        LoopSummary::of(&control, 0, &inference_ms),
    );
    summary.stopped_after_kill_s = stopped_after_kill_s;
    robot.finish(&mut summary);
    Ok(summary)
}

/// The simulated robot and its world: plant, lidar, camera, and what the run observed.
#[derive(Debug)]
pub struct Robot {
    pub world: World,
    pub plant: Plant,
    pub lidar: SimLidar,
    pub camera: SimCamera,
    rng: Rng,
    footprint: Vec<[f64; 2]>,
    goal: usize,
    goal_clearance_m: f64,
    pub collisions: u64,
    pub min_clearance_m: f64,
    pub goal_reached_s: Option<f64>,
}

impl Robot {
    /// The base of `config` at the origin, facing +x, in `scenario`'s world.
    pub fn new(config: &SafetyConfig, scenario: &Scenario, seed: u64) -> Result<Self> {
        let base = config
            .base
            .clone()
            .context("the simulator needs [safety.base]")?;
        let footprint = crate::world::footprint_polygon(&base);
        let beams = 720;
        Ok(Self {
            world: scenario.world.clone(),
            plant: Plant::for_base(&base),
            lidar: SimLidar::full_circle(beams, Pose::default()),
            camera: SimCamera::default(),
            rng: Rng::new(seed),
            footprint,
            goal: scenario.goal,
            goal_clearance_m: scenario.goal_clearance_m,
            collisions: 0,
            min_clearance_m: f64::INFINITY,
            goal_reached_s: None,
        })
    }

    pub fn scan(&mut self, ranges: &mut [f32]) {
        self.lidar
            .scan(&self.world, &self.plant.pose, &mut self.rng, ranges);
    }

    /// The scan message for `ranges` taken at `stamp_ns`.
    pub fn lidar_scan<'a>(&self, stamp_ns: u64, ranges: &'a [f32]) -> Scan<'a> {
        Scan {
            stamp: Monotonic::from_nanos(stamp_ns),
            angle_min_rad: self.lidar.angle_min_rad,
            angle_increment_rad: self.lidar.angle_increment_rad,
            range_min_m: self.lidar.range_min_m,
            range_max_m: self.lidar.range_max_m,
            ranges_m: ranges,
        }
    }

    /// Camera image and measured velocity into the policy's observation.
    pub fn observe(&self, obs: &mut Observation) {
        if let Some(ImageData::U8(image)) = obs.images.first_mut() {
            self.camera.render(&self.world, &self.plant.pose, image);
        }
        let measured = [
            self.plant.velocity.vx_mps as f32,
            self.plant.velocity.vy_mps as f32,
            self.plant.velocity.wz_radps as f32,
        ];
        for (s, m) in obs.state.iter_mut().zip(measured) {
            *s = m;
        }
    }

    /// Applies the final command for `dt_s`, then records clearance, collisions (footprint
    /// touching while moving) and the goal. Returns the clearance.
    pub fn actuate(&mut self, command: Twist, power_enabled: bool, dt_s: f64, t_s: f64) -> f64 {
        self.plant.step(command, power_enabled, dt_s);
        let world_fp: Vec<[f64; 2]> = self
            .footprint
            .iter()
            .map(|&p| self.plant.pose.transform(p))
            .collect();
        let clearance = self.world.clearance(&world_fp);
        let moving = self.plant.velocity.vx_mps.hypot(self.plant.velocity.vy_mps) > 0.01;
        self.min_clearance_m = self.min_clearance_m.min(clearance);
        self.collisions += u64::from(clearance <= 0.0 && moving);
        if self.goal_reached_s.is_none() {
            let goal = World {
                obstacles: vec![self.world.obstacles[self.goal].clone()],
                time_s: self.world.time_s,
            };
            if goal.clearance(&world_fp) <= self.goal_clearance_m {
                self.goal_reached_s = Some(t_s);
            }
        }
        clearance
    }

    /// Copies what the run observed into `summary`.
    pub fn finish(&self, summary: &mut SimSummary) {
        summary.collisions = self.collisions;
        summary.min_clearance_m = self.min_clearance_m;
        summary.goal_reached = self.goal_reached_s.is_some();
        summary.goal_reached_s = self.goal_reached_s;
        summary.final_pose = [
            self.plant.pose.x_m,
            self.plant.pose.y_m,
            self.plant.pose.yaw_rad,
        ];
    }
}
