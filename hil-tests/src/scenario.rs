//! Scenarios as data (`hil-tests/scenarios/*.toml`): a world, the robot's safety config, a
//! scripted policy, a timeline of events and assertions, run in lockstep with the built-in
//! simulator and the real safety layer.
//!
//! ```toml
//! name = "estop_stops_within_category_1_time"
//! covers = ["SAF-001"]
//! duration_s = 6.0
//! [policy]
//! kind = "straight"          # drive straight ahead at speed_mps (an adversarial policy: > limit)
//! speed_mps = 1.5
//! [[obstacles]]              # circles (pedestrians, boxes) and walls
//! kind = "wall"
//! from = [8.0, -1.5]
//! to = [8.0, 1.5]
//! [[events]]
//! at_s = 3.0
//! kind = "estop_pressed"     # estop_released, reset, lidar_freeze, lidar_resume, lidar_nan,
//!                            # lidar_ok, policy_stops, policy_resumes
//! [[assert]]
//! kind = "stopped_within"    # no_collision, min_clearance, vetoed, never_faster_than, moved
//! after = "estop_pressed"
//! ms = 800
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use reflex_safety::{SafetyConfig, Twist};
use reflex_sim::world::{Lockstep, Obstacle, World};
use serde::Deserialize;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Safety requirements this scenario exercises (SAF-001 …).
    #[serde(default)]
    pub covers: Vec<String>,
    pub duration_s: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Overrides merged over the demo robot's config (`launch/reflex.example.toml`), e.g.
    /// `[robot.safety.base] kind = "differential"`: kinematics, limits, footprint, zones, ages.
    #[serde(default)]
    pub robot: toml::Table,
    /// The simulated lidar: beams, rate, noise, dropouts, latency, lost messages.
    #[serde(default)]
    pub lidar: LidarModel,
    /// A scripted remote (cloud) policy streaming commands over a link with latency, through
    /// the real arbiter; `cloud_link_drops` / `cloud_stop` events act on it.
    #[serde(default)]
    pub cloud: Option<CloudStream>,
    /// `[arbitration]` (default: operator > cloud > local policy, cloud commands ≤ 300 ms old).
    #[serde(default)]
    pub arbitration: reflex_rt::arbiter::ArbiterConfig,
    /// `lockstep` (default: faster than real time, deterministic) or `realtime` (VLA only: the
    /// RT thread, inference worker and robot threads on the real clock; deadline misses count).
    #[serde(default)]
    pub mode: Mode,
    /// The operator resets once at start (default true); false = the robot must stay latched.
    #[serde(default = "default_true")]
    pub reset_at_start: bool,
    pub policy: Policy,
    #[serde(default)]
    pub obstacles: Vec<ObstacleSpec>,
    #[serde(default)]
    pub events: Vec<EventSpec>,
    #[serde(rename = "assert")]
    pub assertions: Vec<Assertion>,
}

fn default_seed() -> u64 {
    1
}

fn default_true() -> bool {
    true
}

/// `[lidar]`: the simulated scanner (360°, at the configured mount).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LidarModel {
    pub beams: usize,
    /// Scan period (ms), a multiple of the control period.
    pub period_ms: f64,
    /// Range noise, standard deviation (m).
    pub noise_std_m: f64,
    /// Probability that a beam returns NaN.
    pub dropout: f64,
    /// Capture-to-reception latency (ms): the data is that old when Reflex stamps it.
    pub latency_ms: f64,
    /// Probability that a whole scan message is lost.
    pub scan_loss: f64,
}

impl Default for LidarModel {
    fn default() -> Self {
        Self {
            beams: 720,
            period_ms: 40.0,
            noise_std_m: 0.01,
            dropout: 0.002,
            latency_ms: 0.0,
            scan_loss: 0.0,
        }
    }
}

/// `[cloud]`: a remote policy sending `speed_mps` (and `vy_mps`, `wz_radps`) at `rate_hz`;
/// each command reaches the robot `latency_ms` after it was produced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudStream {
    pub speed_mps: f64,
    #[serde(default)]
    pub vy_mps: f64,
    #[serde(default)]
    pub wz_radps: f64,
    #[serde(default = "default_cloud_rate")]
    pub rate_hz: f64,
    #[serde(default)]
    pub latency_ms: f64,
}

fn default_cloud_rate() -> f64 {
    10.0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Lockstep,
    Realtime,
}

/// The scripted policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum Policy {
    /// Straight ahead at `speed_mps` (above the limit = adversarial), turning at `wz_radps`.
    Straight {
        speed_mps: f64,
        /// Sideways (holonomic bases).
        #[serde(default)]
        vy_mps: f64,
        #[serde(default)]
        wz_radps: f64,
    },
    /// The demo VLA policy (models/demo/reflex-demo-vla) on ONNX Runtime through the real
    /// control loop (anytime inference, chunk queue, safety), told `instruction`; `goal` names
    /// the marker obstacle that counts as reached.
    Vla { instruction: String, goal: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum ObstacleSpec {
    Wall {
        from: [f64; 2],
        to: [f64; 2],
    },
    /// A coloured goal marker the camera sees (`colour` = "red" or "blue").
    Marker {
        name: String,
        center: [f64; 2],
        radius_m: f64,
        colour: String,
    },
    Circle {
        name: String,
        center: [f64; 2],
        radius_m: f64,
        #[serde(default)]
        velocity_mps: [f64; 2],
        /// Present from..until (s); default: always.
        #[serde(default)]
        active_s: Option<[f64; 2]>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    EstopPressed,
    EstopReleased,
    Reset,
    LidarFreeze,
    LidarResume,
    LidarNan,
    LidarOk,
    PolicyStops,
    PolicyResumes,
    /// VLA runs: the inference worker hangs / comes back.
    InferenceHang,
    InferenceResume,
    /// VLA runs: camera frames stop / resume.
    CameraStops,
    CameraResumes,
    /// Real-time runs: a busy thread per CPU (normal priority) from here to the end.
    CpuHogStarts,
    /// Real-time runs: the inference worker thread crashes (the supervisor must replace it).
    InferenceCrash,
    /// The cloud link drops (commands in flight are lost, none arrive) / comes back.
    CloudLinkDrops,
    CloudLinkRestores,
    /// The cloud asks the robot to stop (held until `cloud_go`).
    CloudStop,
    CloudGo,
    /// The robot's wall clock (message header stamps) jumps by `jump_s` (NTP step, RTC fault).
    WallClockJump,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub at_s: f64,
    pub kind: EventKind,
    /// `wall_clock_jump` only: seconds, negative = backwards.
    #[serde(default)]
    pub jump_s: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum Assertion {
    /// The footprint never touched anything while moving.
    NoCollision,
    /// Speed ≤ 1 cm/s within `ms` of the first event of kind `after`, and until the next event.
    StoppedWithin { after: EventKind, ms: f64 },
    /// The footprint kept at least `m` from every obstacle.
    MinClearance { m: f64 },
    /// The safety layer reported `reason` on at least one tick.
    Vetoed { reason: String },
    /// The base never went faster than `mps`.
    NeverFasterThan { mps: f64 },
    /// The robot travelled at least `m` (the scenario was not a robot standing still).
    Moved { m: f64 },
    /// VLA runs: the goal marker was reached within `s` seconds.
    GoalReached { s: f64 },
    /// Real-time runs: the RT loop missed no deadline.
    NoDeadlineMisses,
    /// The robot travelled at least `m` after the first event of kind `after` (it recovered).
    MovedAfter { after: EventKind, m: f64 },
    /// Real-time runs: the supervisor replaced at least `min` inference workers.
    WorkerRestarts { min: u32 },
    /// SAF-010: `Safety::evaluate` allocated nothing during the run (counting allocator).
    NoAllocations,
    /// SAF-010: the safety layer's own veto counters equal the reasons seen on every tick.
    VetoesCounted,
}

/// What a run produced, for reports and assertions.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub ticks: u64,
    pub collisions: u64,
    pub min_clearance_m: f64,
    pub max_speed_mps: f64,
    pub travelled_m: f64,
    pub reasons: BTreeMap<String, u64>,
    /// (time s, speed m/s) per tick.
    pub speeds: Vec<(f64, f64)>,
    /// Every tick, for the report folder.
    pub ticks_log: Vec<reflex_sim::lockstep::SimTick>,
    /// VLA runs: when the goal was reached (s).
    pub goal_reached_s: Option<f64>,
    /// Real-time runs: deadline misses of the RT loop (lockstep: none can happen).
    pub deadline_misses: u64,
    /// Real-time runs: CPU time the hypervisor took from this VM during the run (ms), and the
    /// control period; a miss is the host's when at least one whole period per miss was stolen.
    pub host_steal_ms: Option<f64>,
    pub period_ms: f64,
    /// Real-time runs: inference workers the supervisor replaced.
    pub worker_restarts: u32,
    /// Real-time runs: the RT thread's watchdog trips (deadlines missed in a row) and the
    /// actuator gate's stall latches (RT thread silent past `stall_estop_ms`): each latched an
    /// E-stop for the host's timing, not for anything the scenario did.
    pub host_latches: u64,
    /// Scripted lockstep runs: allocations inside `Safety::evaluate` (None: not counted).
    pub evaluate_allocations: Option<u64>,
    /// Scripted lockstep runs: the safety layer's own counters at the end, by reason name.
    pub counted_reasons: BTreeMap<String, u64>,
}

impl RunReport {
    fn new() -> Self {
        Self {
            min_clearance_m: f64::INFINITY,
            ..Self::default()
        }
    }

    /// A report from a real-time trace: (time s, speed m/s, clearance m) per tick; a tick in
    /// contact while moving (> 1 cm/s) counts as a collision.
    pub fn from_trace(trace: impl Iterator<Item = (f64, f64, f64)>) -> Self {
        let mut report = Self::new();
        let mut last: Option<f64> = None;
        for (t, speed, clearance) in trace {
            report.ticks += 1;
            report.speeds.push((t, speed));
            report.max_speed_mps = report.max_speed_mps.max(speed);
            report.min_clearance_m = report.min_clearance_m.min(clearance);
            if clearance <= 0.0 && speed > 0.01 {
                report.collisions += 1;
            }
            if let Some(prev) = last {
                report.travelled_m += speed * (t - prev);
            }
            last = Some(t);
        }
        report
    }

    /// Accounts one tick: speed, clearance, contact while moving, distance, reasons.
    fn record(&mut self, t: &reflex_sim::lockstep::SimTick) {
        let speed = t.velocity.vx_mps.hypot(t.velocity.vy_mps);
        self.ticks += 1;
        self.max_speed_mps = self.max_speed_mps.max(speed);
        self.min_clearance_m = self.min_clearance_m.min(t.clearance_m);
        if t.clearance_m <= 0.0 && speed > 0.01 {
            self.collisions += 1;
        }
        if let Some(last) = self.ticks_log.last() {
            self.travelled_m += (t.pose.x_m - last.pose.x_m).hypot(t.pose.y_m - last.pose.y_m);
        }
        self.speeds.push((t.time_s, speed));
        for reason in t.reasons.iter() {
            *self.reasons.entry(reason.name().to_string()).or_default() += 1;
        }
        self.ticks_log.push(*t);
    }
}

/// One assertion's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub assertion: String,
    pub passed: bool,
    pub detail: String,
}

/// `cpu_hog_starts`: one busy thread per CPU (normal priority) from the event on, until dropped.
#[derive(Debug)]
pub struct CpuHog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHog {
    pub fn start(scenario: &Scenario) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = scenario
            .events
            .iter()
            .filter(|e| e.kind == EventKind::CpuHogStarts)
            .take(1)
            .flat_map(|e| {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let at = std::time::Instant::now() + std::time::Duration::from_secs_f64(e.at_s);
                (0..cpus).map(move |_| at)
            })
            .map(|at| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while std::time::Instant::now() < at {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for i in 0..10_000u64 {
                            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// The scripted cloud policy's link: commands produced every `1/rate_hz`, delivered to the
/// arbiter's inbox `latency_ms` later while the link is up.
#[derive(Debug)]
struct CloudLink {
    up: bool,
    stop: bool,
    seq: u64,
    next_send_ns: u64,
    in_flight: std::collections::VecDeque<(u64, reflex_rt::arbiter::CloudCommand)>,
}

impl Default for CloudLink {
    fn default() -> Self {
        Self {
            up: true,
            stop: false,
            seq: 0,
            next_send_ns: 0,
            in_flight: std::collections::VecDeque::new(),
        }
    }
}

impl CloudLink {
    fn step(&mut self, s: &CloudStream, now_ns: u64, inboxes: &reflex_rt::arbiter::Inboxes) {
        if !self.up {
            return;
        }
        if now_ns >= self.next_send_ns {
            self.seq += 1;
            self.in_flight.push_back((
                now_ns + (s.latency_ms * 1e6) as u64,
                reflex_rt::arbiter::CloudCommand {
                    seq: self.seq,
                    t_ns: now_ns,
                    base: Twist {
                        vx_mps: s.speed_mps,
                        vy_mps: s.vy_mps,
                        wz_radps: s.wz_radps,
                    },
                    stop: self.stop,
                },
            ));
            self.next_send_ns = now_ns + (1e9 / s.rate_hz.max(0.1)) as u64;
        }
        while self.in_flight.front().is_some_and(|(at, _)| *at <= now_ns) {
            let (_, c) = self.in_flight.pop_front().expect("checked");
            // A full inbox drops the command (the loop never blocks).
            let _ = inboxes.cloud.try_send(c);
        }
    }
}

/// Deep-merges `over` into `base` (tables recursively, everything else replaced).
pub(crate) fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// An empty scenario, for replaying a timeline.
fn placeholder() -> Scenario {
    Scenario {
        name: String::new(),
        description: String::new(),
        covers: Vec::new(),
        duration_s: 1.0,
        seed: 1,
        robot: toml::Table::new(),
        lidar: LidarModel::default(),
        cloud: None,
        arbitration: Default::default(),
        mode: Mode::Lockstep,
        reset_at_start: true,
        policy: Policy::Straight {
            speed_mps: 0.0,
            vy_mps: 0.0,
            wz_radps: 0.0,
        },
        obstacles: Vec::new(),
        events: Vec::new(),
        assertions: Vec::new(),
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        let s: Scenario = toml::from_str(&text)
            .with_context(|| format!("scenario {} is invalid", path.display()))?;
        anyhow::ensure!(
            s.duration_s.is_finite() && s.duration_s > 0.0 && s.duration_s <= 600.0,
            "{}: duration_s must be in (0, 600]",
            path.display()
        );
        anyhow::ensure!(
            !s.assertions.is_empty(),
            "{}: a scenario needs at least one [[assert]]",
            path.display()
        );
        Ok(s)
    }

    fn world(&self) -> World {
        let obstacles = self
            .obstacles
            .iter()
            .enumerate()
            .map(|(i, o)| match o {
                ObstacleSpec::Wall { from, to } => Obstacle::wall(&format!("wall {i}"), *from, *to),
                ObstacleSpec::Marker {
                    name,
                    center,
                    radius_m,
                    colour,
                } => Obstacle::marker(
                    name,
                    *center,
                    *radius_m,
                    if colour == "blue" {
                        reflex_sim::world::MARKER_BLUE
                    } else {
                        reflex_sim::world::MARKER_RED
                    },
                ),
                ObstacleSpec::Circle {
                    name,
                    center,
                    radius_m,
                    velocity_mps,
                    active_s,
                } => Obstacle::circle(
                    name,
                    *center,
                    *radius_m,
                    *velocity_mps,
                    active_s.map_or((0.0, f64::INFINITY), |[a, b]| (a, b)),
                ),
            })
            .collect();
        World {
            obstacles,
            time_s: 0.0,
        }
    }

    /// Runs the scenario in lockstep under `config`, with a drive exactly as strong as the
    /// config claims.
    pub fn run(&self, config: &SafetyConfig) -> Result<RunReport> {
        self.run_with_brakes(config, None)
    }

    /// [`Self::run`] with the real brakes at `plant_brake_mps2` instead of what the config
    /// claims (to prove that assertions catch a robot whose config lies about its brakes).
    pub fn run_with_brakes(
        &self,
        config: &SafetyConfig,
        plant_brake_mps2: Option<f64>,
    ) -> Result<RunReport> {
        if let Policy::Vla { instruction, goal } = &self.policy {
            return self.run_vla(config, instruction, goal);
        }
        let period_s = config.control_period_ms * 1e-3;
        let mut sim = Lockstep::new(config.clone(), self.world(), self.lidar.beams, self.seed)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(b) = plant_brake_mps2 {
            sim.plant.brake[0] = b;
            sim.plant.brake[1] = b;
        }
        self.apply_lidar_model(&mut sim, period_s)?;
        // Scans travel as sensor_msgs/LaserScan through CDR and the ROS port, as on a robot.
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let manifest =
            reflex_policy::PolicyPackage::open(&repo.join("models/demo/reflex-demo-vla"))?.manifest;
        let max_beams = config
            .lidar
            .as_ref()
            .map_or(self.lidar.beams, |l| l.max_beams);
        sim.port = Some(Box::new(reflex_ros::port::PortState::new(
            &manifest,
            max_beams,
            Vec::new(),
        )));
        sim.alloc_counter = crate::alloc::counter();
        // Started by an operator reset once every E-stop source has reported.
        sim.reset_request_seq = u64::from(self.reset_at_start);
        let Policy::Straight {
            speed_mps,
            vy_mps,
            wz_radps,
        } = self.policy
        else {
            unreachable!("VLA runs return above");
        };
        let ticks = (self.duration_s / period_s).round() as u64;
        let mut events: Vec<&EventSpec> = self.events.iter().collect();
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let mut next = 0;
        let mut policy_on = true;
        let inboxes = reflex_rt::arbiter::Inboxes::default();
        let mut arbiter = reflex_rt::arbiter::Arbiter::new(&self.arbitration, &inboxes)
            .map_err(anyhow::Error::msg)?;
        let mut cloud = CloudLink::default();
        let mut report = RunReport::new();
        for _ in 0..ticks {
            let t = sim.world.time_s;
            while next < events.len() && events[next].at_s <= t {
                match events[next].kind {
                    EventKind::EstopPressed => sim.hardware_pressed = true,
                    EventKind::EstopReleased => sim.hardware_pressed = false,
                    EventKind::Reset => sim.reset_request_seq += 1,
                    EventKind::LidarFreeze => sim.lidar_frozen = true,
                    EventKind::LidarResume => sim.lidar_frozen = false,
                    EventKind::LidarNan => sim.lidar_nan = true,
                    EventKind::LidarOk => sim.lidar_nan = false,
                    EventKind::PolicyStops => policy_on = false,
                    EventKind::PolicyResumes => policy_on = true,
                    EventKind::CloudLinkDrops => {
                        cloud.up = false;
                        cloud.in_flight.clear();
                    }
                    EventKind::CloudLinkRestores => cloud.up = true,
                    EventKind::CloudStop => cloud.stop = true,
                    EventKind::CloudGo => cloud.stop = false,
                    EventKind::WallClockJump => {
                        let jumped = sim.wall_clock_ns as f64 + events[next].jump_s * 1e9;
                        sim.wall_clock_ns = jumped.max(0.0) as u64;
                    }
                    EventKind::InferenceHang
                    | EventKind::InferenceResume
                    | EventKind::CameraStops
                    | EventKind::CameraResumes
                    | EventKind::CpuHogStarts
                    | EventKind::InferenceCrash => anyhow::bail!(
                        "{}: {:?} needs the VLA policy (policy.kind = \"vla\")",
                        self.name,
                        events[next].kind
                    ),
                }
                next += 1;
            }
            let local = if policy_on {
                Twist {
                    vx_mps: speed_mps,
                    vy_mps,
                    wz_radps,
                }
            } else {
                Twist::default()
            };
            let rec = sim.tick_with(|now| {
                if let Some(stream) = &self.cloud {
                    cloud.step(stream, now.as_nanos(), &inboxes);
                }
                arbiter.arbitrate(
                    now.as_nanos(),
                    reflex_safety::Command::base(
                        reflex_safety::CommandSource::LocalPolicy,
                        now,
                        local.vx_mps,
                        local.vy_mps,
                        local.wz_radps,
                    ),
                )
            });
            report.record(&reflex_sim::lockstep::SimTick {
                time_s: rec.time_s,
                pose: rec.pose,
                velocity: rec.velocity,
                command: rec.verdict.command.base,
                action: rec.verdict.action,
                reasons: rec.verdict.reasons,
                clearance_m: rec.clearance_m,
            });
        }
        report.evaluate_allocations = sim.alloc_counter.map(|_| sim.evaluate_allocations);
        report.counted_reasons = reflex_safety::Reason::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    sim.safety.reason_counts()[*r as usize],
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Ok(report)
    }

    /// The demo robot's config (`launch/reflex.example.toml`) with `[robot]` merged over it.
    pub fn safety_config(&self) -> Result<SafetyConfig> {
        let mut table: toml::Table = toml::from_str(crate::DEMO_CONFIG)?;
        merge(&mut table, &self.robot);
        Ok(reflex_runner::config::ReflexConfig::from_table(table)
            .with_context(|| format!("{}: [robot] makes the config invalid", self.name))?
            .safety)
    }

    fn apply_lidar_model(&self, sim: &mut Lockstep, period_s: f64) -> Result<()> {
        let l = &self.lidar;
        let every = (l.period_ms * 1e-3 / period_s).round();
        anyhow::ensure!(
            every >= 1.0 && ((every * period_s) - l.period_ms * 1e-3).abs() < 1e-9,
            "{}: lidar.period_ms = {} must be a multiple of the control period ({} ms)",
            self.name,
            l.period_ms,
            period_s * 1e3
        );
        for (key, v, hi) in [
            ("noise_std_m", l.noise_std_m, 1.0),
            ("dropout", l.dropout, 1.0),
            ("scan_loss", l.scan_loss, 1.0),
            ("latency_ms", l.latency_ms, 10_000.0),
        ] {
            anyhow::ensure!(
                v.is_finite() && (0.0..=hi).contains(&v),
                "{}: lidar.{key} = {v} must be in [0, {hi}]",
                self.name
            );
        }
        sim.scan_every_ticks = every as u64;
        sim.lidar.noise_std_m = l.noise_std_m;
        sim.lidar.dropout = l.dropout;
        sim.scan_loss = l.scan_loss;
        sim.lidar_latency_ns = (l.latency_ms * 1e6) as u64;
        Ok(())
    }

    /// The scripted faults in force at `t_s` (replaying the timeline).
    fn faults_at(&self, t_s: f64) -> reflex_sim::lockstep::Faults {
        let mut f = reflex_sim::lockstep::Faults::default();
        let mut events: Vec<&EventSpec> = self.events.iter().filter(|e| e.at_s <= t_s).collect();
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        for e in events {
            match e.kind {
                EventKind::EstopPressed => f.estop_pressed = true,
                EventKind::EstopReleased => f.estop_pressed = false,
                EventKind::Reset => f.resets += 1,
                EventKind::LidarFreeze => f.lidar_frozen = true,
                EventKind::LidarResume => f.lidar_frozen = false,
                EventKind::InferenceHang => f.inference_hung = true,
                EventKind::InferenceResume => f.inference_hung = false,
                EventKind::CameraStops => f.camera_stopped = true,
                EventKind::CameraResumes => f.camera_stopped = false,
                EventKind::LidarNan
                | EventKind::LidarOk
                | EventKind::PolicyStops
                | EventKind::PolicyResumes
                | EventKind::CpuHogStarts
                | EventKind::InferenceCrash
                | EventKind::CloudLinkDrops
                | EventKind::CloudLinkRestores
                | EventKind::CloudStop
                | EventKind::CloudGo
                | EventKind::WallClockJump => {}
            }
        }
        f
    }

    /// The VLA through the real control loop in lockstep (`reflex sim`'s runner) with the
    /// timeline's faults.
    fn run_vla(&self, config: &SafetyConfig, instruction: &str, goal: &str) -> Result<RunReport> {
        if let Some(e) = self.events.iter().find(|e| {
            matches!(
                e.kind,
                EventKind::CloudLinkDrops
                    | EventKind::CloudLinkRestores
                    | EventKind::CloudStop
                    | EventKind::CloudGo
                    | EventKind::WallClockJump
                    | EventKind::LidarNan
                    | EventKind::LidarOk
                    | EventKind::PolicyStops
                    | EventKind::PolicyResumes
            )
        }) {
            anyhow::bail!(
                "{}: {:?} is for scripted-policy scenarios (policy.kind = \"straight\")",
                self.name,
                e.kind
            );
        }
        anyhow::ensure!(
            self.cloud.is_none(),
            "{}: [cloud] is for scripted-policy scenarios (policy.kind = \"straight\")",
            self.name
        );
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let package =
            reflex_policy::PolicyPackage::open(&repo.join("models/demo/reflex-demo-vla"))?;
        let backend = reflex_policy::BackendConfig {
            ort_library: Some(reflex_policy::ort_library_or_venv(&repo)),
            ..reflex_policy::BackendConfig::default()
        };
        let world = self.world();
        let goal = world
            .obstacles
            .iter()
            .position(|o| o.name == goal)
            .with_context(|| format!("{}: policy.goal {goal:?} names no obstacle", self.name))?;
        let scenario = reflex_sim::lockstep::Scenario {
            name: self.name.clone(),
            world,
            instruction: instruction.into(),
            goal,
            goal_clearance_m: 0.6,
        };
        let options = reflex_sim::lockstep::SimOptions {
            duration_s: self.duration_s,
            period_ms: config.control_period_ms,
            seed: self.seed,
            ..Default::default()
        };
        if self.mode == Mode::Realtime {
            return self.run_vla_realtime(config, &package, &backend, scenario, options);
        }
        if let Some(e) = self
            .events
            .iter()
            .find(|e| matches!(e.kind, EventKind::CpuHogStarts | EventKind::InferenceCrash))
        {
            anyhow::bail!(
                "{}: {:?} needs mode = \"realtime\" (threads that can hog or crash)",
                self.name,
                e.kind
            );
        }
        let mut report = RunReport::new();
        let summary = reflex_sim::lockstep::run_lockstep_with_faults(
            config,
            &package,
            &backend,
            scenario,
            &options,
            &|t| self.faults_at(t),
            &mut |t| report.record(t),
        )?;
        report.goal_reached_s = summary.goal_reached_s;
        Ok(report)
    }

    /// The VLA scenario on real threads and the real clock (`reflex sim --realtime`'s runner),
    /// the simulated robot applying the timeline's faults.
    fn run_vla_realtime(
        &self,
        config: &SafetyConfig,
        package: &reflex_policy::PolicyPackage,
        backend: &reflex_policy::BackendConfig,
        scenario: reflex_sim::lockstep::Scenario,
        mut options: reflex_sim::lockstep::SimOptions,
    ) -> Result<RunReport> {
        use reflex_runner::swap::SwapPort;
        use reflex_sim::{SimRobot, run_sim_robot};
        // The worker hang of the real-time runner (a worker that stops producing, alive).
        options.kill_inference_at_s = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::InferenceHang)
            .map(|e| e.at_s)
            .reduce(f64::min);
        options.crash_inference_at_s = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::InferenceCrash)
            .map(|e| e.at_s)
            .reduce(f64::min);
        let mut rt_config = reflex_rt::ticker::RtConfig {
            period_ms: config.control_period_ms,
            fifo_priority: Some(80),
            lock_memory: true,
            ..reflex_rt::ticker::RtConfig::default()
        };
        rt_config.cpu_dma_latency_us = Some(0);
        let events = self.events.clone();
        let faults = move |t: f64| {
            let s = Scenario {
                events: events.clone(),
                ..placeholder()
            };
            s.faults_at(t)
        };
        let robot = reflex_sim::lockstep::Robot::new(config, &scenario, self.seed)?;
        let mut robot = SimRobot::new(robot).with_faults(Box::new(faults));
        let steal_before = reflex_rt::ticker::host_steal_ms();
        let hog = CpuHog::start(self);
        let port = std::sync::Arc::new(SwapPort::default());
        let result = run_sim_robot(
            config,
            package,
            backend,
            &rt_config,
            (&self.name, &scenario.instruction),
            &options,
            &port,
            &mut robot,
        );
        drop(hog);
        let (summary, rt) = result?;
        let mut report =
            RunReport::from_trace(robot.trace.as_deref().unwrap_or_default().iter().copied());
        report.deadline_misses = summary.run.deadline_misses;
        report.host_steal_ms = steal_before
            .zip(reflex_rt::ticker::host_steal_ms())
            .map(|(a, b)| b - a);
        report.period_ms = config.control_period_ms;
        report.goal_reached_s = summary.goal_reached_s;
        report.reasons = rt.reasons.clone();
        report.worker_restarts = rt.worker_restarts;
        Ok(report)
    }

    /// Writes the run's report folder: `ticks.csv` (per tick), `trajectory.svg` (path, obstacles,
    /// where safety slowed or stopped the robot) and `checks.txt` (each assertion's result).
    pub fn write_report(&self, dir: &Path, report: &RunReport, checks: &[Check]) -> Result<()> {
        reflex_sim::report::write(dir, &self.world(), &report.ticks_log)?;
        let mut text = format!(
            "scenario {}\n{}\ncovers {:?}\n\n",
            self.name, self.description, self.covers
        );
        for c in checks {
            text.push_str(&format!(
                "{} {} — {}\n",
                if c.passed { "PASS" } else { "FAIL" },
                c.assertion,
                c.detail
            ));
        }
        let path = dir.join("checks.txt");
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        // The MCAP of the run, with the scenario and every check's outcome as metadata.
        let mut meta = BTreeMap::new();
        meta.insert("scenario".to_string(), self.name.clone());
        meta.insert("description".to_string(), self.description.clone());
        meta.insert("covers".to_string(), self.covers.join(","));
        meta.insert(
            "result".to_string(),
            if checks.iter().all(|c| c.passed) {
                "pass"
            } else {
                "FAIL"
            }
            .to_string(),
        );
        for (i, c) in checks.iter().enumerate() {
            meta.insert(
                format!("check_{i:02}"),
                format!(
                    "{} {} — {}",
                    if c.passed { "PASS" } else { "FAIL" },
                    c.assertion,
                    c.detail
                ),
            );
        }
        reflex_sim::report::write_mcap(&dir.join("run.mcap"), meta, &report.ticks_log)
    }

    /// Evaluates every assertion against `report`.
    pub fn check(&self, report: &RunReport) -> Vec<Check> {
        self.assertions
            .iter()
            .map(|a| {
                let (passed, detail) = match a {
                    Assertion::NoCollision => (
                        report.collisions == 0,
                        format!("{} ticks in contact while moving", report.collisions),
                    ),
                    Assertion::MinClearance { m } => (
                        report.min_clearance_m >= *m,
                        format!("min clearance {:.3} m (≥ {m})", report.min_clearance_m),
                    ),
                    Assertion::Vetoed { reason } => {
                        let n = report.reasons.get(reason).copied().unwrap_or(0);
                        (n > 0, format!("{reason} on {n} ticks"))
                    }
                    Assertion::NeverFasterThan { mps } => (
                        report.max_speed_mps <= *mps + 1e-9,
                        format!("max speed {:.3} m/s (≤ {mps})", report.max_speed_mps),
                    ),
                    Assertion::Moved { m } => (
                        report.travelled_m >= *m,
                        format!("travelled {:.2} m (≥ {m})", report.travelled_m),
                    ),
                    Assertion::StoppedWithin { after, ms } => {
                        self.stopped_within(report, *after, *ms)
                    }
                    Assertion::GoalReached { s } => match report.goal_reached_s {
                        Some(t) => (t <= *s, format!("goal reached at {t:.1} s (≤ {s})")),
                        None => (false, "goal not reached".into()),
                    },
                    Assertion::MovedAfter { after, m } => {
                        let at = self
                            .events
                            .iter()
                            .filter(|e| e.kind == *after)
                            .map(|e| e.at_s)
                            .reduce(f64::min)
                            .unwrap_or(f64::INFINITY);
                        let d: f64 = report
                            .speeds
                            .windows(2)
                            .filter(|w| w[0].0 >= at)
                            .map(|w| w[1].1 * (w[1].0 - w[0].0))
                            .sum();
                        (
                            d >= *m,
                            format!("travelled {d:.2} m after {after:?} (≥ {m})"),
                        )
                    }
                    Assertion::WorkerRestarts { min } => (
                        report.worker_restarts >= *min,
                        format!("{} workers replaced (≥ {min})", report.worker_restarts),
                    ),
                    Assertion::NoAllocations => match report.evaluate_allocations {
                        Some(n) => (n == 0, format!("{n} allocations inside Safety::evaluate")),
                        None => (
                            false,
                            "allocations not counted: register reflex_hil::alloc::Counting as the \
                             test binary's #[global_allocator] (scripted lockstep runs only)"
                                .into(),
                        ),
                    },
                    Assertion::VetoesCounted => {
                        let differ: Vec<String> = report
                            .reasons
                            .iter()
                            .filter(|(r, n)| report.counted_reasons.get(*r) != Some(n))
                            .map(|(r, n)| {
                                format!(
                                    "{r}: {n} ticks, counter {}",
                                    report.counted_reasons.get(r).copied().unwrap_or(0)
                                )
                            })
                            .collect();
                        (
                            !report.reasons.is_empty()
                                && differ.is_empty()
                                && report.counted_reasons.len() == report.reasons.len(),
                            if differ.is_empty() {
                                format!("{} reasons, every tick counted", report.reasons.len())
                            } else {
                                differ.join("; ")
                            },
                        )
                    }
                    Assertion::NoDeadlineMisses => {
                        let misses = report.deadline_misses;
                        let stolen = report.host_steal_ms.unwrap_or(0.0);
                        // Misses the hypervisor explains: at least a whole period stolen each.
                        let host = misses > 0
                            && report.period_ms > 0.0
                            && stolen >= misses as f64 * report.period_ms;
                        (
                            self.mode == Mode::Realtime && (misses == 0 || host),
                            if self.mode != Mode::Realtime {
                                "only meaningful with mode = \"realtime\"".into()
                            } else if host {
                                format!(
                                    "{misses} deadline misses, all while the VM's host stole the CPU ({stolen:.0} ms stolen)"
                                )
                            } else {
                                format!("{misses} deadline misses ({stolen:.0} ms stolen by the VM's host)")
                            },
                        )
                    }
                };
                Check {
                    assertion: format!("{a:?}"),
                    passed,
                    detail,
                }
            })
            .collect()
    }

    fn stopped_within(&self, report: &RunReport, after: EventKind, ms: f64) -> (bool, String) {
        let mut times: Vec<f64> = self.events.iter().map(|e| e.at_s).collect();
        times.sort_by(f64::total_cmp);
        let Some(at) = self
            .events
            .iter()
            .filter(|e| e.kind == after)
            .map(|e| e.at_s)
            .reduce(f64::min)
        else {
            return (false, format!("no {after:?} event in the timeline"));
        };
        let until = times
            .iter()
            .copied()
            .find(|&t| t > at)
            .unwrap_or(f64::INFINITY);
        let deadline = at + ms * 1e-3;
        let stopped_at = report
            .speeds
            .iter()
            .find(|(t, v)| *t >= at && *v <= 0.01)
            .map(|(t, _)| *t);
        let stayed = report
            .speeds
            .iter()
            .filter(|(t, _)| *t >= deadline && *t < until)
            .all(|(_, v)| *v <= 0.01);
        match stopped_at {
            Some(t) if t <= deadline && stayed => (
                true,
                format!(
                    "stopped {:.0} ms after {after:?} (≤ {ms} ms)",
                    (t - at) * 1e3
                ),
            ),
            Some(t) => (
                false,
                format!(
                    "stopped {:.0} ms after {after:?} (limit {ms} ms), stayed stopped: {stayed}",
                    (t - at) * 1e3
                ),
            ),
            None => (false, format!("never stopped after {after:?}")),
        }
    }
}
