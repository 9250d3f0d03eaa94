//! Hardware mode: the same scenario files drive a real robot through the ROS 2 port (`dds` or
//! `ros2` adapter) with the real RT loop, inference worker and safety layer.
//!
//! The runner wraps the robot's [`RobotIo`] in a [`HardwareRobot`] that
//! - prints the set-up (obstacles to place, where) and then **prompts** the events that need a
//!   person (`estop_pressed`, `estop_released`, `reset`, a pedestrian/box entering) 3 s ahead
//!   and when due, as lines starting with `PROMPT` on stdout;
//! - **observes** when those events really happened (the E-stop report and reset counter the
//!   robot delivers) and checks `stopped_within` from the observed time, not the scheduled one;
//! - **injects** the faults it can make itself: `lidar_freeze` (the last scan is held, as from a
//!   hung driver), `lidar_nan`, `camera_stops`, `policy_stops` (the scripted policy proposes zero),
//!   and, through the run options, `inference_hang`, `inference_crash` and `cpu_hog_starts`;
//! - drives the scripted `straight` policy as operator commands through the loop's arbiter (so
//!   every command passes the same arbitration and safety as on the robot);
//! - records per tick the speed (odometry when the port delivers it, else the command Reflex sent,
//!   zero without drive power) and the lidar clearance (closest beam point to the footprint).
//!
//! Events the runner cannot make on a robot (`wall_clock_jump`, the scripted cloud) are refused
//! with an error naming them.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use reflex_core::{CommandFrame, RobotIo, SensorFrame};
use reflex_policy::Observation;
use reflex_rt::arbiter::{Inboxes, OperatorCommand};
use reflex_runner::swap::SwapPort;
use reflex_safety::{EstopReport, SafetyConfig, Twist};
use reflex_sim::world::Pose;

use crate::scenario::{EventKind, EventSpec, ObstacleSpec, Policy, RunReport, Scenario};

/// Seconds before an event that its prompt is announced.
pub const PROMPT_AHEAD_S: f64 = 3.0;

/// One tick as the hardware runner saw it.
#[derive(Debug, Clone, Copy)]
pub struct HardwareTick {
    pub t_s: f64,
    pub speed_mps: f64,
    /// Closest lidar point to the footprint (m); 0 = inside; +inf without a scan.
    pub clearance_m: f64,
    pub estop_pressed: bool,
}

fn needs_a_person(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::EstopPressed | EventKind::EstopReleased | EventKind::Reset
    )
}

fn instruction(kind: EventKind) -> &'static str {
    match kind {
        EventKind::EstopPressed => "press the E-stop",
        EventKind::EstopReleased => "release the E-stop (do not reset)",
        EventKind::Reset => {
            "reset the E-stop (button or /reflex/estop_reset), then start (/reflex/start)"
        }
        _ => "",
    }
}

/// The robot under test, wrapped: prompts, observation, injected faults, trace.
pub struct HardwareRobot<'a> {
    inner: &'a mut dyn RobotIo,
    out: Box<dyn Write + Send + 'a>,
    start_ns: Option<u64>,
    /// (at_s, what, announced, due-printed)
    prompts: Vec<(f64, String, bool, bool)>,
    events: Vec<EventSpec>,
    next_event: usize,
    scripted: Option<Twist>,
    inboxes: Inboxes,
    policy_on: bool,
    lidar_frozen: bool,
    lidar_nan: bool,
    camera_stopped: bool,
    held: Option<SensorFrame>,
    footprint: Vec<[f64; 2]>,
    mount: Pose,
    was_pressed: bool,
    last_reset_seq: u64,
    /// When the people did what they were asked: (event, observed at s).
    pub observed: Vec<(EventKind, f64)>,
    pub trace: Vec<HardwareTick>,
}

impl std::fmt::Debug for HardwareRobot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HardwareRobot")
            .field("observed", &self.observed)
            .field("ticks", &self.trace.len())
            .finish_non_exhaustive()
    }
}

impl<'a> HardwareRobot<'a> {
    /// Wraps `inner` for `scenario` under `config`; prompts go to `out`.
    pub fn new(
        scenario: &Scenario,
        config: &SafetyConfig,
        inner: &'a mut dyn RobotIo,
        inboxes: Inboxes,
        out: Box<dyn Write + Send + 'a>,
    ) -> Result<Self> {
        check_supported(scenario)?;
        let base = config
            .base
            .as_ref()
            .context("hardware mode drives a mobile base: the config has no [safety.base]")?;
        let mount = config.lidar.as_ref().map_or(Pose::default(), |l| Pose {
            x_m: l.base_from_lidar.x_m,
            y_m: l.base_from_lidar.y_m,
            yaw_rad: l.base_from_lidar.yaw_rad,
        });
        let mut events = scenario.events.clone();
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let mut prompts: Vec<(f64, String, bool, bool)> = Vec::new();
        if scenario.reset_at_start {
            prompts.push((
                0.0,
                "reset: release the E-stop if pressed, then reset it".into(),
                true,
                false,
            ));
        }
        for e in events.iter().filter(|e| needs_a_person(e.kind)) {
            prompts.push((
                e.at_s,
                format!("{}: {}", kind_name(e.kind), instruction(e.kind)),
                false,
                false,
            ));
        }
        for o in &scenario.obstacles {
            if let ObstacleSpec::Circle {
                name,
                center,
                radius_m,
                velocity_mps,
                active_s: Some([from, _]),
            } = o
            {
                prompts.push((
                    *from,
                    format!(
                        "obstacle: {name} (radius {radius_m} m) enters at ({:.1}, {:.1}) m moving ({:.1}, {:.1}) m/s",
                        center[0], center[1], velocity_mps[0], velocity_mps[1]
                    ),
                    false,
                    false,
                ));
            }
        }
        prompts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let scripted = match &scenario.policy {
            Policy::Straight {
                speed_mps,
                vy_mps,
                wz_radps,
            } => Some(Twist {
                vx_mps: *speed_mps,
                vy_mps: *vy_mps,
                wz_radps: *wz_radps,
            }),
            Policy::Vla { .. } => None,
        };
        Ok(Self {
            inner,
            out,
            start_ns: None,
            prompts,
            events,
            next_event: 0,
            scripted,
            inboxes,
            policy_on: true,
            lidar_frozen: false,
            lidar_nan: false,
            camera_stopped: false,
            held: None,
            footprint: reflex_sim::world::footprint_polygon(base),
            mount,
            was_pressed: false,
            last_reset_seq: 0,
            observed: Vec::new(),
            trace: Vec::new(),
        })
    }

    fn say(&mut self, line: &str) {
        // Prompts must reach the people (or the harness playing them) now.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    /// The set-up the people build before the run: where each obstacle goes.
    pub fn announce_setup(&mut self, scenario: &Scenario) {
        self.say(&format!(
            "SETUP scenario {}: {} (frame: robot start pose, x ahead, y left, metres)",
            scenario.name, scenario.description
        ));
        for o in &scenario.obstacles {
            let line = match o {
                ObstacleSpec::Wall { from, to } => format!(
                    "SETUP wall from ({:.2}, {:.2}) to ({:.2}, {:.2})",
                    from[0], from[1], to[0], to[1]
                ),
                ObstacleSpec::Marker {
                    name,
                    center,
                    radius_m,
                    colour,
                } => format!(
                    "SETUP {colour} marker {name:?} radius {radius_m} at ({:.2}, {:.2})",
                    center[0], center[1]
                ),
                ObstacleSpec::Circle {
                    name,
                    center,
                    radius_m,
                    active_s: None,
                    ..
                } => format!(
                    "SETUP {name} radius {radius_m} at ({:.2}, {:.2})",
                    center[0], center[1]
                ),
                ObstacleSpec::Circle { name, .. } => {
                    format!("SETUP {name}: keep clear until prompted")
                }
            };
            self.say(&line);
        }
        if let Policy::Vla { instruction, .. } = &scenario.policy {
            self.say(&format!(
                "SETUP publish the instruction {instruction:?} on the instruction topic"
            ));
        }
    }

    /// Clearance of the scan in `frame` to the footprint (m).
    fn clearance(&self, frame: &SensorFrame) -> f64 {
        let mut best = f64::INFINITY;
        for (i, &r) in frame.ranges.iter().enumerate() {
            if !r.is_finite() || r < frame.range_min_m || r > frame.range_max_m {
                continue;
            }
            let a =
                f64::from(frame.angle_min_rad) + i as f64 * f64::from(frame.angle_increment_rad);
            let local = [f64::from(r) * a.cos(), f64::from(r) * a.sin()];
            let p = self.mount.transform(local);
            best = best.min(distance_to_polygon(&self.footprint, p));
        }
        best
    }
}

/// Refuses what this runner cannot make happen on a robot, naming it.
pub fn check_supported(scenario: &Scenario) -> Result<()> {
    if let Some(e) = scenario.events.iter().find(|e| {
        matches!(
            e.kind,
            EventKind::WallClockJump
                | EventKind::CloudLinkDrops
                | EventKind::CloudLinkRestores
                | EventKind::CloudStop
                | EventKind::CloudGo
        )
    }) {
        anyhow::bail!(
            "{}: {:?} cannot be made on a robot by this runner (it needs the simulator); \
             run this scenario with `reflex-hil run`",
            scenario.name,
            e.kind
        );
    }
    anyhow::ensure!(
        scenario.cloud.is_none(),
        "{}: [cloud] is a simulated remote policy; run this scenario with `reflex-hil run`",
        scenario.name
    );
    Ok(())
}

fn kind_name(kind: EventKind) -> String {
    format!("{kind:?}")
}

/// Distance from `p` to the convex polygon `poly` (0 inside).
fn distance_to_polygon(poly: &[[f64; 2]], p: [f64; 2]) -> f64 {
    let n = poly.len();
    let mut inside = true;
    let mut best = f64::INFINITY;
    // Orientation of the polygon (counter-clockwise > 0).
    let area: f64 = (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum();
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + 1) % n]);
        let ab = [b[0] - a[0], b[1] - a[1]];
        let ap = [p[0] - a[0], p[1] - a[1]];
        let cross = ab[0] * ap[1] - ab[1] * ap[0];
        if cross * area < 0.0 {
            inside = false;
        }
        let t = ((ap[0] * ab[0] + ap[1] * ab[1]) / (ab[0] * ab[0] + ab[1] * ab[1])).clamp(0.0, 1.0);
        let q = [a[0] + t * ab[0], a[1] + t * ab[1]];
        best = best.min((p[0] - q[0]).hypot(p[1] - q[1]));
    }
    if inside { 0.0 } else { best }
}

impl RobotIo for HardwareRobot<'_> {
    fn beams(&self) -> usize {
        self.inner.beams()
    }

    fn stationary_at_start(&self) -> bool {
        self.inner.stationary_at_start()
    }

    fn take_actuator(&mut self) -> Option<Box<dyn reflex_core::Actuator>> {
        self.inner.take_actuator()
    }

    fn attach_ingress(&mut self, ingress: std::sync::Arc<reflex_core::EstopIngress>) {
        self.inner.attach_ingress(ingress);
    }

    fn idle_until(&mut self, deadline_ns: u64) {
        self.inner.idle_until(deadline_ns);
    }

    fn step(
        &mut self,
        now_ns: u64,
        command: &CommandFrame,
        frame: &mut SensorFrame,
        obs: &mut Observation,
    ) -> bool {
        let start = *self.start_ns.get_or_insert(now_ns);
        let t = now_ns.saturating_sub(start) as f64 * 1e-9;
        // Prompts for people: announced ahead, then "now".
        let mut lines = Vec::new();
        for (at, what, announced, due) in &mut self.prompts {
            if !*announced && t >= *at - PROMPT_AHEAD_S {
                *announced = true;
                lines.push(format!("PROMPT in {:.1} s: {what}", (*at - t).max(0.0)));
            }
            if !*due && t >= *at {
                *due = true;
                lines.push(format!("PROMPT NOW t={t:.2}: {what}"));
            }
        }
        for line in lines {
            self.say(&line);
        }
        // Faults the runner makes itself.
        while self.next_event < self.events.len() && self.events[self.next_event].at_s <= t {
            match self.events[self.next_event].kind {
                EventKind::LidarFreeze => self.lidar_frozen = true,
                EventKind::LidarResume => {
                    self.lidar_frozen = false;
                    self.held = None;
                }
                EventKind::LidarNan => self.lidar_nan = true,
                EventKind::LidarOk => self.lidar_nan = false,
                EventKind::CameraStops => self.camera_stopped = true,
                EventKind::CameraResumes => self.camera_stopped = false,
                EventKind::PolicyStops => self.policy_on = false,
                EventKind::PolicyResumes => self.policy_on = true,
                _ => {}
            }
            self.next_event += 1;
        }
        if let Some(twist) = self.scripted {
            let base = if self.policy_on {
                twist
            } else {
                Twist::default()
            };
            // A full inbox drops the command (the loop never blocks); the next step sends one.
            let _ = self
                .inboxes
                .operator
                .try_send(OperatorCommand { t_ns: now_ns, base });
        }
        let fresh = self.inner.step(now_ns, command, frame, obs);
        if self.lidar_frozen {
            match &self.held {
                // A hung driver: the same scan, the same reception stamp.
                Some(h) => {
                    frame.scan_stamp_ns = h.scan_stamp_ns;
                    frame.ranges.clear();
                    frame.ranges.extend_from_slice(&h.ranges);
                }
                None => {
                    let mut h = SensorFrame::new(frame.ranges.len(), 0);
                    h.scan_stamp_ns = frame.scan_stamp_ns;
                    h.ranges.clear();
                    h.ranges.extend_from_slice(&frame.ranges);
                    self.held = Some(h);
                }
            }
        }
        let clearance_m = self.clearance(frame);
        if self.lidar_nan {
            frame.ranges.fill(f32::NAN);
        }
        // What the people did, as the robot reports it.
        let pressed = frame
            .estop
            .iter()
            .any(|r| matches!(r, EstopReport::Pressed(_)));
        if pressed && !self.was_pressed {
            self.observed.push((EventKind::EstopPressed, t));
        }
        if !pressed && self.was_pressed {
            self.observed.push((EventKind::EstopReleased, t));
        }
        self.was_pressed = pressed;
        if frame.reset_seq > self.last_reset_seq {
            self.last_reset_seq = frame.reset_seq;
            self.observed.push((EventKind::Reset, t));
        }
        let speed_mps = match frame.odom {
            Some(v) => v.vx_mps.hypot(v.vy_mps),
            None if command.drive_enabled => command.base.vx_mps.hypot(command.base.vy_mps),
            None => 0.0,
        };
        self.trace.push(HardwareTick {
            t_s: t,
            speed_mps,
            clearance_m,
            estop_pressed: pressed,
        });
        fresh && !self.camera_stopped
    }
}

/// The scenario as it really happened: each event needing a person moved to when the robot
/// reported it (the first report at or after 1 s before its prompt); unobserved ones stay.
pub fn realized(scenario: &Scenario, observed: &[(EventKind, f64)]) -> Scenario {
    let mut s = scenario.clone();
    let mut used = vec![false; observed.len()];
    for e in s.events.iter_mut().filter(|e| needs_a_person(e.kind)) {
        if let Some(i) = observed
            .iter()
            .enumerate()
            .position(|(i, (k, at))| !used[i] && *k == e.kind && *at >= e.at_s - 1.0)
        {
            used[i] = true;
            e.at_s = observed[i].1;
        }
    }
    s
}

/// What the options for a hardware run must carry: the faults of the timeline that go through
/// the inference worker, and the inboxes the scripted policy feeds.
pub fn options(
    scenario: &Scenario,
    period_ms: f64,
    inboxes: &Inboxes,
) -> reflex_sim::lockstep::SimOptions {
    let first = |kind: EventKind| {
        scenario
            .events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.at_s)
            .reduce(f64::min)
    };
    reflex_sim::lockstep::SimOptions {
        duration_s: scenario.duration_s,
        period_ms,
        seed: scenario.seed,
        kill_inference_at_s: first(EventKind::InferenceHang),
        crash_inference_at_s: first(EventKind::InferenceCrash),
        inboxes: Some(inboxes.clone()),
        ..Default::default()
    }
}

/// Runs `scenario` on `robot` with the real loop; returns the report and the realized scenario
/// (events at their observed times) to check it against.
pub fn run(
    scenario: &Scenario,
    config: &reflex_runner::config::ReflexConfig,
    package: &reflex_policy::PolicyPackage,
    backend: &reflex_policy::BackendConfig,
    robot: &mut dyn RobotIo,
    out: Box<dyn Write + Send + '_>,
    wait_for_setup: &mut dyn FnMut() -> Result<()>,
) -> Result<(RunReport, Scenario)> {
    let inboxes = Inboxes::default();
    let options = options(scenario, config.runtime.period_ms, &inboxes);
    let mut hw = HardwareRobot::new(scenario, &config.safety, robot, inboxes, out)?;
    hw.announce_setup(scenario);
    wait_for_setup()?;
    hw.say("START");
    let port = Arc::new(SwapPort::default());
    let hog = crate::scenario::CpuHog::start(scenario);
    let result = reflex_sim::run_with_faults(
        &config.safety,
        package,
        backend,
        &config.runtime,
        (&scenario.name, ""),
        &options,
        &port,
        &mut hw,
    );
    drop(hog);
    let (summary, rt) = result?;
    let mut report =
        RunReport::from_trace(hw.trace.iter().map(|t| (t.t_s, t.speed_mps, t.clearance_m)));
    report.deadline_misses = summary.deadline_misses;
    report.worker_restarts = rt.worker_restarts;
    report.host_latches = rt.watchdog_trips + rt.rt_stalls;
    report.reasons = rt.reasons.clone();
    let mut realized = realized(scenario, &hw.observed);
    // Deadline checks apply: this ran on the real clock.
    realized.mode = crate::scenario::Mode::Realtime;
    hw.say("END");
    Ok((report, realized))
}
