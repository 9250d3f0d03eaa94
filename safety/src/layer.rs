//! The state machine: [`Safety::evaluate`] turns inputs and a proposed command into a
//! [`Verdict`]. No allocation, no I/O, no panics; the same inputs give bit-identical verdicts.

use core::cmp::Ordering;
use sha2::{Digest, Sha256};

use crate::config::{ArmConfig, BaseKind, ConfigError, SafetyConfig, base_footprint};
use crate::kinematics::{Depths, Zones};
use crate::lidar::{Footprint, Lidar};
use crate::types::{
    Command, CommandSource, EstopReport, EstopSource, JointState, MAX_JOINTS, Monotonic, Reason,
    Reasons, SafetyInputs, StallWindow, StopCategory, Twist, Verdict,
};
use crate::wire::Hold;

/// Below this speed (m/s or rad/s) a motion component counts as not commanded.
const MOTION_EPS: f64 = 1e-9;

fn ms_to_ns(ms: f64) -> u64 {
    // Validated finite and positive; `as` saturates.
    (ms * 1e6).round() as u64
}

/// Base limits and geometry, derived once from the config.
#[derive(Debug, Clone)]
struct Base {
    holonomic: bool,
    max_v: [f64; 3],
    max_accel: [f64; 3],
    brake: [f64; 3],
    odometry_max_age_ns: Option<u64>,
    footprint: Footprint,
    reaction_s: f64,
    margin_m: f64,
    slowdown_depth_m: f64,
    hysteresis_m: f64,
    release_delay_ns: u64,
    max_invalid_fraction: f64,
    intrusion_speed_mps: f64,
    min_points: u32,
}

/// SAF-017 settings, derived once from `[safety.arm.separation]`.
#[derive(Debug, Clone)]
struct Separation {
    /// The arm's base in the lidar's base frame: position and yaw (cos, sin).
    origin: [f64; 2],
    yaw: [f64; 2],
    human_speed_mps: f64,
    reaction_s: f64,
    margin_m: f64,
    max_invalid_fraction: f64,
}

/// The deterministic safety layer. Built once from a validated config that it then owns:
/// nothing can reconfigure it at run time (SAF-008).
#[derive(Debug, Clone)]
pub struct Safety {
    config: SafetyConfig,
    config_hash: [u8; 32],
    period_ns: u64,
    stop_category: StopCategory,
    estop_configured: [bool; EstopSource::COUNT],
    estop_max_age_ns: [Option<u64>; EstopSource::COUNT],
    /// Local policy, cloud, operator.
    command_max_age_ns: [u64; 3],
    base: Option<Base>,
    /// The scan's points, for the base (SAF-003) and the arm (SAF-017).
    lidar: Option<Lidar>,
    scan_max_age_ns: u64,
    separation: Option<Separation>,
    joint_count: usize,
    joint_state_max_age_ns: u64,
    zones: Option<Zones>,
    latched: bool,
    /// SAF-015: per joint, moved by hand while latched (it then follows its measured pose
    /// until the reset).
    yielding: [bool; crate::MAX_JOINTS],
    /// SAF-018, per joint.
    stall: [StallWindow; crate::MAX_JOINTS],
    /// Time since the last tick (s, not capped at a period: the stall timer's clock).
    tick_elapsed_s: f64,
    last_reset_seq: u64,
    last_now: Option<Monotonic>,
    previous: Command,
    translation_hold: Option<Hold>,
    rotation_hold: Option<Hold>,
    reason_counts: [u64; Reason::COUNT],
    evaluations: u64,
}

impl Safety {
    /// Validates `config` and sizes every buffer. Starts latched (SAF-002).
    pub fn new(config: SafetyConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let canonical = serde_json::to_vec(&config).map_err(|e| ConfigError {
            key: String::new(),
            problem: format!("cannot serialise for hashing: {e}"),
            fix: "report this as a bug".into(),
        })?;
        let config_hash: [u8; 32] = Sha256::digest(&canonical).into();
        if let Some(expected) = &config.expected_hash {
            let actual = hex_hash(&config_hash);
            if expected.trim() != actual {
                return Err(ConfigError {
                    key: "safety.expected_hash".into(),
                    problem: format!(
                        "the safety config hashes to {actual}, not the pinned {expected}"
                    ),
                    fix: "review the safety config (and any launch-time override of safety.*); pin the new hash only if the change is intended".into(),
                });
            }
        }
        let mut estop_configured = [false; EstopSource::COUNT];
        let mut estop_max_age_ns = [None; EstopSource::COUNT];
        for source in &config.estop.sources {
            estop_configured[source.name.index()] = true;
            estop_max_age_ns[source.name.index()] = source.max_age_ms.map(ms_to_ns);
        }
        let base = match (&config.base, &config.lidar) {
            (Some(b), Some(l)) => Some(Base {
                holonomic: b.kind == BaseKind::Holonomic,
                max_v: [b.max_vx_mps, b.max_vy_mps, b.max_wz_radps],
                max_accel: [
                    b.max_accel_x_mps2,
                    b.max_accel_y_mps2,
                    b.max_accel_wz_radps2,
                ],
                brake: [
                    b.brake_decel_mps2,
                    b.brake_decel_mps2,
                    b.brake_decel_wz_radps2,
                ],
                odometry_max_age_ns: b.odometry_max_age_ms.map(ms_to_ns),
                footprint: Footprint::new(&base_footprint(b)?),
                reaction_s: l.reaction_time_ms * 1e-3,
                margin_m: l.margin_m,
                slowdown_depth_m: l.slowdown_depth_m,
                hysteresis_m: l.hysteresis_m,
                release_delay_ns: ms_to_ns(l.release_delay_ms),
                max_invalid_fraction: l.max_invalid_fraction,
                intrusion_speed_mps: l.intrusion_speed_mps,
                min_points: l.min_points,
            }),
            _ => None,
        };
        let (joint_count, joint_state_max_age_ns) = config
            .arm
            .as_ref()
            .map_or((0, 0), |a| (a.joints.len(), ms_to_ns(a.state_max_age_ms)));
        let zones = config.arm.as_ref().and_then(|a| {
            a.kinematics.as_ref().map(|k| {
                let mut max_abs = [0.0; MAX_JOINTS];
                for (m, j) in max_abs.iter_mut().zip(&a.joints) {
                    *m = j.min_position.abs().max(j.max_position.abs());
                }
                Zones::new(k, &max_abs, a.workspace, &a.keep_out)
            })
        });
        let separation = config
            .arm
            .as_ref()
            .and_then(|a| a.separation)
            .zip(config.lidar.as_ref())
            .map(|(s, l)| Separation {
                origin: [s.base_from_arm.x_m, s.base_from_arm.y_m],
                yaw: [s.base_from_arm.yaw_rad.cos(), s.base_from_arm.yaw_rad.sin()],
                human_speed_mps: s.human_speed_mps,
                reaction_s: s.reaction_time_ms * 1e-3,
                margin_m: s.margin_m,
                max_invalid_fraction: l.max_invalid_fraction,
            });
        Ok(Self {
            lidar: config.lidar.as_ref().map(Lidar::new),
            scan_max_age_ns: config.lidar.as_ref().map_or(0, |l| ms_to_ns(l.max_age_ms)),
            separation,
            period_ns: ms_to_ns(config.control_period_ms),
            stop_category: match config.estop.stop_category {
                0 => StopCategory::Cat0,
                1 => StopCategory::Cat1,
                _ => StopCategory::Cat2,
            },
            estop_configured,
            estop_max_age_ns,
            command_max_age_ns: [
                ms_to_ns(config.commands.local_policy_max_age_ms),
                ms_to_ns(config.commands.cloud_max_age_ms),
                ms_to_ns(config.commands.operator_max_age_ms),
            ],
            base,
            joint_count,
            joint_state_max_age_ns,
            zones,
            config,
            config_hash,
            latched: true,
            yielding: [false; crate::MAX_JOINTS],
            stall: [StallWindow::default(); crate::MAX_JOINTS],
            tick_elapsed_s: 0.0,
            last_reset_seq: 0,
            last_now: None,
            previous: Command::default(),
            translation_hold: None,
            rotation_hold: None,
            reason_counts: [0; Reason::COUNT],
            evaluations: 0,
        })
    }

    /// The configuration this layer enforces (read-only).
    pub fn config(&self) -> &SafetyConfig {
        &self.config
    }

    /// SHA-256 of the canonical (JSON) form of the validated config, for logs and diagnostics.
    pub fn config_hash(&self) -> [u8; 32] {
        self.config_hash
    }

    /// [`Self::config_hash`] as `sha256:<hex>`.
    pub fn config_hash_hex(&self) -> String {
        hex_hash(&self.config_hash)
    }

    pub fn is_latched(&self) -> bool {
        self.latched
    }

    /// What changes from tick to tick (for flight recordings); no allocation.
    pub fn state(&self) -> crate::wire::SafetyState {
        crate::wire::SafetyState {
            latched: self.latched,
            last_reset_seq: self.last_reset_seq,
            last_now: self.last_now,
            previous: self.previous,
            translation_hold: self.translation_hold,
            rotation_hold: self.rotation_hold,
            yielding: self.yielding,
            stall: self.stall,
        }
    }

    /// Puts the layer back into a recorded `state` (replay). The config is untouched (SAF-008):
    /// a state never loosens a limit; it is only what the layer itself computed earlier.
    pub fn restore(&mut self, state: &crate::wire::SafetyState) {
        self.latched = state.latched;
        self.last_reset_seq = state.last_reset_seq;
        self.last_now = state.last_now;
        self.previous = state.previous;
        self.translation_hold = state.translation_hold;
        self.rotation_hold = state.rotation_hold;
        self.yielding = state.yielding;
        self.stall = state.stall;
    }

    /// How many verdicts carried each reason, indexed by `Reason as usize`.
    pub fn reason_counts(&self) -> &[u64; Reason::COUNT] {
        &self.reason_counts
    }

    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Decides the command for this tick. Call it last, right before the actuator write.
    pub fn evaluate(
        &mut self,
        inputs: &SafetyInputs<'_>,
        proposed: &Command,
        now: Monotonic,
    ) -> Verdict {
        let mut reasons = Reasons::empty();
        let dt_ns = match self.last_now {
            None => self.period_ns,
            // Time ran backwards: stop, and let stop ramps progress as if a period passed.
            Some(last) => now.age_of(last).unwrap_or_else(|| {
                reasons.insert(Reason::ClockFault);
                self.period_ns
            }),
        };
        if self.last_now.is_none_or(|last| now > last) {
            self.last_now = Some(now);
        }
        // Ramps never step further than one nominal period allows.
        let dt_s = dt_ns.min(self.period_ns) as f64 * 1e-9;
        self.tick_elapsed_s = dt_ns as f64 * 1e-9;

        self.update_estop(inputs, now, &mut reasons);
        let verdict = if self.latched {
            reasons.insert(Reason::EstopLatched);
            self.stall = [StallWindow::default(); crate::MAX_JOINTS];
            self.yield_to_a_push(inputs, now);
            self.estop_verdict(dt_s, reasons, now)
        } else {
            self.yielding = [false; crate::MAX_JOINTS];
            self.motion_verdict(inputs, proposed, now, dt_s, reasons)
        };
        self.previous = verdict.command;
        self.evaluations = self.evaluations.wrapping_add(1);
        let mut bits = verdict.reasons.bits();
        while bits != 0 {
            let index = bits.trailing_zeros() as usize;
            self.reason_counts[index] = self.reason_counts[index].wrapping_add(1);
            bits &= bits - 1;
        }
        verdict
    }

    /// SAF-001/002: latch on any pressed, stale or unknown source; reset only on request while
    /// every configured source is clear and fresh.
    fn update_estop(&mut self, inputs: &SafetyInputs<'_>, now: Monotonic, reasons: &mut Reasons) {
        let mut all_clear = true;
        let mut not_ready = false;
        for source in EstopSource::ALL {
            let i = source.index();
            match inputs.estop[i] {
                // A press is honoured from any source, configured or not.
                EstopReport::Pressed(_) => {
                    self.latched = true;
                    reasons.insert(source.reason());
                    all_clear = false;
                }
                EstopReport::Clear(stamp) => {
                    if let Some(max_age) = self.estop_max_age_ns[i]
                        && self.estop_configured[i]
                        && now.age_of(stamp).is_none_or(|age| age > max_age)
                    {
                        self.latched = true;
                        reasons.insert(Reason::EstopSourceStale);
                        all_clear = false;
                    }
                }
                EstopReport::Unknown => {
                    if self.estop_configured[i] {
                        all_clear = false;
                        not_ready = true;
                    }
                }
            }
        }
        if inputs.reset_request_seq != self.last_reset_seq {
            self.last_reset_seq = inputs.reset_request_seq;
            if self.latched {
                if all_clear {
                    self.latched = false;
                    // The arm may have been moved while latched (power off, pushed, braked
                    // along its path): joint targets restart from the measured pose, never
                    // pull back to the old target (SAF-013, SAF-015).
                    for j in self.previous.joints.iter_mut() {
                        *j = crate::JointTarget::default();
                    }
                } else {
                    reasons.insert(Reason::ResetRefused);
                }
            }
        }
        if self.latched && not_ready {
            reasons.insert(Reason::EstopNotReady);
        }
    }

    /// SAF-015, latched and at rest: a position-driven joint that someone moves further than a
    /// tenth of `max_following_error` from where it is held is from then on (until the reset)
    /// held where it is measured, so a drive that holds under power (a
    /// joint_trajectory_controller has no drive-off) never pushes back against them nor springs
    /// back when they let go. Smaller errors (gravity, the drive's lag) keep the held pose: an
    /// arm nobody touches does not creep. Only with a fresh, well-formed joint state; while the
    /// arm still brakes the hold is the braking path.
    fn yield_to_a_push(&mut self, inputs: &SafetyInputs<'_>, now: Monotonic) {
        let Some(arm) = &self.config.arm else {
            return;
        };
        let Some(bound) = arm.max_following_error else {
            return;
        };
        let Some(state) = inputs.joint_state else {
            return;
        };
        let n = self.joint_count;
        let fresh = now
            .age_of(state.stamp)
            .is_some_and(|age| age <= self.joint_state_max_age_ns);
        if !fresh
            || state.positions.len() != n
            || !state.positions.iter().all(|p| p.is_finite())
            || self.previous.joints[..n]
                .iter()
                .any(|j| j.velocity.is_some_and(|v| v != 0.0))
        {
            return;
        }
        let tolerance = 0.1 * bound;
        for (((target, measured), joint), yielding) in self.previous.joints[..n]
            .iter_mut()
            .zip(state.positions)
            .zip(&arm.joints)
            .zip(&mut self.yielding)
        {
            let Some(held) = target.position else {
                continue;
            };
            // Once moved by hand, the joint follows its measured pose exactly until the reset:
            // letting go leaves it where they left it.
            *yielding |= (measured - held).abs() > tolerance;
            if *yielding {
                target.position = Some(measured.clamp(joint.min_position, joint.max_position));
                target.velocity = Some(0.0);
            }
        }
    }

    /// Output while latched, per the configured stop category.
    fn estop_verdict(&self, dt_s: f64, reasons: Reasons, now: Monotonic) -> Verdict {
        let mut command = self.hold_command(now, dt_s);
        let mut power_enabled = true;
        match self.stop_category {
            StopCategory::Cat0 => power_enabled = false,
            StopCategory::Cat1 | StopCategory::Cat2 => {
                if let Some(braked) = self.braked_base(dt_s) {
                    command.base = braked;
                }
                // Joints decelerate at their max acceleration (hold_command), a
                // position-driven one along its path.
                if self.stop_category == StopCategory::Cat1 {
                    power_enabled = !command.is_motionless();
                }
            }
        }
        Verdict {
            command,
            action: reasons.action(),
            reasons,
            stop_category: Some(self.stop_category),
            power_enabled,
            clearance_m: f32::INFINITY,
            protective_depth_m: 0.0,
        }
    }

    /// The actuator was told zero by something after this layer (the actuator gate, when the
    /// RT thread stalled or an E-stop press arrived between ticks): ramps and category-1/2
    /// braking continue from standstill, never from the last verdict's speed, so the robot is
    /// not pushed back up to it. Joint position targets are kept (held).
    pub fn assume_stopped(&mut self) {
        self.previous.base = Twist::default();
        for j in self.previous.joints.iter_mut() {
            if j.velocity.is_some() {
                j.velocity = Some(0.0);
            }
        }
    }

    /// Joint targets that bring the arm to rest from where the last verdict put it (see
    /// [`Self::hold_command`]), as a proposal: what a caller offers to keep the robot still
    /// (SAF-013's wait for a start, a dry queue). Position-driven joints carry their path
    /// position only, so the layer's tracker (SAF-006) decelerates them.
    pub fn hold_targets(&self) -> [crate::JointTarget; crate::MAX_JOINTS] {
        let mut joints = self
            .hold_command(Monotonic::from_nanos(0), self.period_ns as f64 * 1e-9)
            .joints;
        for j in joints.iter_mut() {
            if j.position.is_some() {
                j.velocity = None;
            }
        }
        joints
    }

    /// Zero base velocity; each joint decelerates at its `max_acceleration` from the last
    /// verdict's velocity, a position-driven one along its path (a position target that froze
    /// at once would ask the drive for an unbounded deceleration). At rest, joints hold their
    /// last target, so a sagging arm is held, not followed.
    fn hold_command(&self, now: Monotonic, dt_s: f64) -> Command {
        let mut command = Command {
            source: CommandSource::None,
            stamp: now,
            ..Command::default()
        };
        self.brake_joints(dt_s, &mut command);
        command
    }

    /// Every joint decelerates at its max acceleration from the last verdict, a
    /// position-driven one along its path.
    fn brake_joints(&self, dt_s: f64, command: &mut Command) {
        if let Some(arm) = &self.config.arm {
            for (i, joint) in arm.joints.iter().enumerate().take(self.joint_count) {
                let previous = self.previous.joints[i];
                let v = toward_zero(
                    previous.velocity.unwrap_or(0.0),
                    joint.max_acceleration * dt_s,
                );
                command.joints[i].velocity = Some(v);
                command.joints[i].position = previous
                    .position
                    .map(|p| (p + v * dt_s).clamp(joint.min_position, joint.max_position));
            }
        }
    }

    /// SAF-016: where the arm would go if it braked from here — every joint decelerating at
    /// its max acceleration from this tick's target and velocity, tick by tick as
    /// [`Self::brake_joints`] would command it — must keep every link in the workspace and
    /// out of the keep-out boxes. Otherwise this tick brakes along the path the last tick
    /// checked, so the arm stops before the zone, not in it. A long stop is checked at most
    /// `ZONE_SAMPLES` poses apart, every link grown by how far it can move between two of them.
    /// An arm already inside a zone (moved there by hand, or a new config) may only move in
    /// ways that take it no deeper.
    fn zone_guard(
        &self,
        arm: &ArmConfig,
        state: &JointState<'_>,
        dt_s: f64,
        command: &mut Command,
        reasons: &mut Reasons,
    ) {
        let Some(zones) = &self.zones else {
            return;
        };
        let n = self.joint_count;
        let mut from = [0.0; MAX_JOINTS];
        let mut next = [0.0; MAX_JOINTS];
        let mut velocity = [0.0; MAX_JOINTS];
        // Ticks until each joint, braking by `step` per tick, stands still.
        let mut moving_ticks = [0.0_f64; MAX_JOINTS];
        let mut ticks = 0.0_f64;
        for (i, joint) in arm.joints.iter().enumerate().take(n) {
            let measured = state.positions[i];
            from[i] = self.previous.joints[i].position.unwrap_or(measured);
            let target = command.joints[i];
            velocity[i] = target.velocity.unwrap_or(0.0);
            next[i] = target.position.unwrap_or(measured + velocity[i] * dt_s);
            let step = joint.max_acceleration * dt_s;
            if step > 0.0 {
                moving_ticks[i] = (velocity[i].abs() / step).floor();
                ticks = ticks.max(moving_ticks[i]);
            }
        }
        let stride = (ticks / ZONE_SAMPLES as f64).ceil().max(1.0);
        // How far any link point can move between two checked poses (the nearest of them is
        // at most half of it away): from the last target to the next, and between the braking
        // path's samples. Every capsule is grown by it, so a path clear at its samples is clear
        // between them too.
        let mut step_to_next = 0.0;
        let mut between_samples = 0.0;
        for i in 0..n {
            step_to_next += zones.reach[i] * (next[i] - from[i]).abs() / 2.0;
            between_samples += zones.reach[i] * velocity[i].abs() * dt_s * stride / 2.0;
        }
        let inflate_m = f64::max(step_to_next, between_samples);
        // Measured with the same margin, pair by pair (link × zone): a pair may not get deeper
        // than it is, so a clear one stays clear by the margin and one already inside (started
        // there, pushed in) may move out but not in; holding still is always allowed.
        let mut before = Depths::default();
        zones.depths(&from[..n], inflate_m, &mut before);
        let mut worst = Depths::default();
        zones.depths(&next[..n], inflate_m, &mut worst);
        let mut sample = Depths::default();
        let mut q = [0.0; MAX_JOINTS];
        let mut k = 0.0;
        while k < ticks {
            k = (k + stride).min(ticks);
            for (i, joint) in arm.joints.iter().enumerate().take(n) {
                // The sum of the braking velocities |v| - j·step, j = 1..k (zero once stopped).
                let step = joint.max_acceleration * dt_s;
                let kk = k.min(moving_ticks[i]);
                let travelled = dt_s * (kk * velocity[i].abs() - step * kk * (kk + 1.0) / 2.0);
                q[i] = (next[i] + travelled.copysign(velocity[i]))
                    .clamp(joint.min_position, joint.max_position);
            }
            zones.depths(&q[..n], inflate_m, &mut sample);
            worst.deepen(&sample);
        }
        let (outside, inside) = worst.deeper_than(&before, ZONE_EPS_M);
        if outside {
            reasons.insert(Reason::ArmWorkspace);
        }
        if inside {
            reasons.insert(Reason::ArmKeepOut);
        }
        if outside || inside {
            self.brake_arm(&from, dt_s, command);
        }
    }

    /// A refused arm command: every joint brakes at its max acceleration (`brake_joints`); a
    /// position-driven joint with no target yet (the first tick after a start) is held at
    /// `from`, where it is measured.
    fn brake_arm(&self, from: &[f64; MAX_JOINTS], dt_s: f64, command: &mut Command) {
        let wanted = command.joints;
        self.brake_joints(dt_s, command);
        for i in 0..self.joint_count {
            if wanted[i].position.is_some() && command.joints[i].position.is_none() {
                command.joints[i].position = Some(from[i]);
                command.joints[i].velocity = Some(0.0);
            }
        }
    }

    /// SAF-017, speed and separation monitoring (ISO/TS 15066 idea). The separation d is the
    /// `min_points`-th nearest scan point's horizontal distance to the arm's capsules, at its
    /// last target and where it is measured (each point a person, any height). For this tick's
    /// joint speeds v (scaled by s), the protective separation is
    /// S_p(s) = v_h·(T_r + s·T_s) + s·V·T_r + s²·S_s + C, with V = Σ reach·|v| (no link point
    /// moves faster), T_s = max |v|/a and S_s = Σ reach·(v²/2a + |v|·dt/2) (the joints braking at
    /// `max_acceleration`, tick by tick), T_r the configured reaction time plus the scan's age
    /// plus a tick. On a mobile base the base's speed at the links (`base_motion`: xy speed and
    /// yaw rate, the fastest of commanded, last and measured) adds to v_h, and to the braking
    /// time. The largest s ≤ 1 with S_p(s) ≤ d scales every joint's speed (slow); at s = 0 — a
    /// person within v_h·T_r + C — or when a joint cannot slow to s·v this tick, the arm and the
    /// base brake (stop). A scan with too many invalid beams stops it too (it cannot see), and
    /// so does anything not finite.
    #[allow(clippy::too_many_arguments)]
    fn separation_guard(
        &self,
        arm: &ArmConfig,
        state: &JointState<'_>,
        scan_age_s: f64,
        base_motion: [f64; 2],
        dt_s: f64,
        command: &mut Command,
        reasons: &mut Reasons,
    ) -> f32 {
        let (Some(sep), Some(zones), Some(lidar)) = (&self.separation, &self.zones, &self.lidar)
        else {
            return f32::INFINITY;
        };
        let n = self.joint_count;
        let mut from = [0.0; MAX_JOINTS];
        for (i, f) in from.iter_mut().enumerate().take(n) {
            *f = self.previous.joints[i]
                .position
                .unwrap_or(state.positions[i]);
        }
        // The capsules in the lidar's base frame, at the last target and the measured pose.
        // When no link point is more than MERGE_M apart between the two (tracking, the usual
        // case), the measured pose's capsules grown by that distance hold both poses' (each
        // segment between points at most δ away stays within δ): half the work, at most
        // MERGE_M more conservative.
        const MERGE_M: f64 = 0.02;
        let mut capsules = [([0.0_f32; 2], [0.0_f32; 2], 0.0_f32); 2 * (MAX_JOINTS + 1)];
        let mut count = 0;
        let mut extent_m = 0.0_f64;
        let chain = &zones.kinematics;
        let (c, sn) = (sep.yaw[0], sep.yaw[1]);
        let poses = [
            chain.link_points(&from[..n]),
            chain.link_points(state.positions),
        ];
        let apart_m = poses[0].points[..=poses[0].count]
            .iter()
            .zip(&poses[1].points[..=poses[1].count])
            .map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1]))
            .fold(0.0_f64, |m, d| {
                if m.is_nan() || d.is_nan() {
                    f64::NAN
                } else {
                    m.max(d)
                }
            });
        let (poses, grow_m) = if apart_m <= MERGE_M {
            (&poses[1..], apart_m)
        } else {
            (&poses[..], 0.0)
        };
        for p in poses {
            let mut planar = [[0.0_f32; 2]; MAX_JOINTS + 1];
            for (out, point) in planar.iter_mut().zip(&p.points[..=p.count]) {
                extent_m = extent_m.max(point[0].hypot(point[1]));
                *out = [
                    (sep.origin[0] + c * point[0] - sn * point[1]) as f32,
                    (sep.origin[1] + sn * point[0] + c * point[1]) as f32,
                ];
            }
            for i in 0..=p.count {
                let r = chain.radius[i] + grow_m;
                capsules[count] = (planar[i], planar[(i + 1).min(p.count)], r as f32);
                count += 1;
            }
        }
        let max_radius = chain.radius.iter().copied().fold(0.0, f64::max) + grow_m;
        extent_m += max_radius;

        // This tick's joint speeds: the position step, or the velocity sent with it if faster;
        // a joint without a target, as measured.
        let mut speed = [0.0; MAX_JOINTS];
        let (mut t_s, mut v_r, mut s_s) = (0.0_f64, 0.0_f64, 0.0_f64);
        for (i, joint) in arm.joints.iter().enumerate().take(n) {
            let target = command.joints[i];
            let step = match target.position {
                Some(p) if dt_s > 0.0 => (p - from[i]) / dt_s,
                _ => 0.0,
            };
            speed[i] = match (target.position, target.velocity) {
                (None, None) => state.velocities[i],
                (_, Some(v)) if v.abs() > step.abs() => v,
                _ => step,
            };
            let v = speed[i].abs();
            let a = joint.max_acceleration;
            t_s = t_s.max(v / a);
            v_r += zones.reach[i] * v;
            s_s += zones.reach[i] * (v * v / (2.0 * a) + v * dt_s / 2.0);
        }
        let t_r = sep.reaction_s + scan_age_s + dt_s;
        // The base carries the links toward a person too: its speed at the farthest link
        // point, for the reaction time and until it has braked (SAF-017 then brakes it).
        let base_closing =
            base_motion[0] + base_motion[1] * (sep.origin[0].hypot(sep.origin[1]) + extent_m);
        let base_stop_s = self.base.as_ref().map_or(0.0, |b| {
            base_motion[0] / b.brake[0] + base_motion[1] / b.brake[2]
        });
        let closing = sep.human_speed_mps + base_closing;
        let standing_m = closing * t_r + base_closing * base_stop_s + sep.margin_m;
        let (a2, a1) = (s_s, closing * t_s + v_r * t_r);
        // Points farther than S_p at full speed limit nothing: not measured.
        let relevant_m = standing_m + a1 + a2;
        let cull_m = extent_m + max_radius + relevant_m;
        let d = lidar.kth_separation(
            &capsules[..count],
            [sep.origin[0] as f32, sep.origin[1] as f32],
            (extent_m * 1.001 + 1e-3) as f32,
            (cull_m * 1.001 + 1e-3) as f32,
        );
        let (invalid, beams) = lidar.invalid_fraction_inputs();
        if beams == 0 || f64::from(invalid) > sep.max_invalid_fraction * f64::from(beams) {
            reasons.insert(Reason::InvalidBeams);
            self.brake_arm_and_base(&from, dt_s, command);
            return d;
        }
        // The largest s in [0, 1] with a2·s² + a1·s + a0 <= 0 (the root in its stable form).
        let a0 = standing_m - f64::from(d);
        let scale = if a0.partial_cmp(&0.0) != Some(Ordering::Less) {
            // Inside what a still arm needs; or NaN: stop.
            0.0
        } else if a2 + a1 + a0 <= 0.0 {
            1.0
        } else {
            2.0 * -a0 / (a1 + (a1 * a1 - 4.0 * a2 * a0).sqrt())
        };
        if scale >= 1.0 {
            return d;
        }
        // Each joint to s times its speed, unless it cannot slow that much this tick (from the
        // last command or the measured speed): then the arm is inside the distance it needs to
        // stop, and brakes.
        let mut slowed = [0.0; MAX_JOINTS];
        let mut brake = scale.partial_cmp(&0.0) != Some(Ordering::Greater);
        for (i, joint) in arm.joints.iter().enumerate().take(n) {
            let previous = self.previous.joints[i];
            let moving = previous
                .velocity
                .unwrap_or(0.0)
                .abs()
                .max(state.velocities[i].abs());
            let reachable = (moving - joint.max_acceleration * dt_s).max(0.0);
            let wanted = scale * speed[i].abs();
            brake |= !matches!(
                reachable.partial_cmp(&(wanted + 1e-12)),
                Some(Ordering::Less | Ordering::Equal)
            );
            slowed[i] = wanted.copysign(speed[i]);
        }
        if brake {
            reasons.insert(Reason::ArmSeparation);
            self.brake_arm_and_base(&from, dt_s, command);
            return d;
        }
        reasons.insert(Reason::ArmSeparationSlow);
        for (i, joint) in arm.joints.iter().enumerate().take(n) {
            let target = &mut command.joints[i];
            if target.position.is_some() {
                target.position = Some(
                    (from[i] + slowed[i] * dt_s).clamp(joint.min_position, joint.max_position),
                );
                target.velocity = Some(slowed[i]);
            } else if target.velocity.is_some() {
                target.velocity = Some(slowed[i]);
            }
        }
        d
    }

    /// SAF-017's stop: the arm brakes (`brake_arm`) and so does the base, at its brake limits
    /// from the last verdict (it would carry the arm into the person).
    fn brake_arm_and_base(&self, from: &[f64; MAX_JOINTS], dt_s: f64, command: &mut Command) {
        self.brake_arm(from, dt_s, command);
        if let Some(braked) = self.braked_base(dt_s) {
            command.base = braked;
        }
    }

    /// The base one tick nearer rest from the last verdict, at its brake limits (`None`
    /// without a base).
    fn braked_base(&self, dt_s: f64) -> Option<Twist> {
        let base = self.base.as_ref()?;
        let p = self.previous.base;
        Some(Twist {
            vx_mps: toward_zero(p.vx_mps, base.brake[0] * dt_s),
            vy_mps: toward_zero(p.vy_mps, base.brake[1] * dt_s),
            wz_radps: toward_zero(p.wz_radps, base.brake[2] * dt_s),
        })
    }

    fn stop_verdict(&self, reasons: Reasons, now: Monotonic, dt_s: f64) -> Verdict {
        Verdict {
            command: self.hold_command(now, dt_s),
            action: reasons.action(),
            reasons,
            stop_category: None,
            power_enabled: true,
            clearance_m: f32::INFINITY,
            protective_depth_m: 0.0,
        }
    }

    fn motion_verdict(
        &mut self,
        inputs: &SafetyInputs<'_>,
        proposed: &Command,
        now: Monotonic,
        dt_s: f64,
        mut reasons: Reasons,
    ) -> Verdict {
        self.check_command(proposed, now, &mut reasons);
        let joint_state = self.check_inputs(inputs, now, &mut reasons);
        // SAF-015: a joint far from where it was commanded (blocked, pushed, not tracking) is
        // a protective stop that latches (reset + start to move again), held where the arm
        // is measured: it never pushes on against what blocks it.
        // Only on a fresh joint state: a stale one is frozen while the stop's braking targets
        // move on along the path (the stall windows pause; the staleness itself stops the
        // arm). A following error measured against it would latch a stop for nothing and
        // hold the arm at where it was measured last, pulling it back along its path.
        let fresh = !reasons.contains(Reason::JointStateStale);
        let stalled = match joint_state.as_ref() {
            Some(state) if fresh => self.stalled(state),
            _ => false,
        };
        let following = match joint_state.as_ref() {
            Some(state) if fresh => self.following_error(state),
            _ => false,
        };
        if let Some(state) = joint_state.as_ref().filter(|_| following || stalled) {
            if following {
                reasons.insert(Reason::FollowingError);
            }
            if stalled {
                reasons.insert(Reason::JointStalled);
            }
            reasons.insert(Reason::EstopLatched);
            self.latched = true;
            for (target, measured) in self.previous.joints[..self.joint_count]
                .iter_mut()
                .zip(state.positions)
            {
                if target.position.is_some() {
                    *target = crate::JointTarget {
                        position: Some(*measured),
                        velocity: Some(0.0),
                    };
                }
            }
            return self.estop_verdict(dt_s, reasons, now);
        }
        if reasons.action() >= crate::Action::Stop {
            return self.stop_verdict(reasons, now, dt_s);
        }
        let mut command = Command {
            source: proposed.source,
            stamp: proposed.stamp,
            ..Command::default()
        };
        let (mut clearance_m, mut protective_depth_m) = (f32::INFINITY, 0.0);
        let measured_base = inputs
            .odometry
            .map(|o| o.twist)
            .filter(|t| t.vx_mps.is_finite() && t.vy_mps.is_finite() && t.wz_radps.is_finite());
        if self.base.is_some() {
            let measured = measured_base;
            let (ramped, target) = self.limit_base(proposed.base, measured, dt_s, &mut reasons);
            command.base = ramped;
            let target_speed_xy = target.vx_mps.hypot(target.vy_mps);
            (clearance_m, protective_depth_m) = self.proximity(
                &mut command.base,
                target_speed_xy,
                inputs,
                now,
                &mut reasons,
            );
        }
        if let Some(state) = joint_state {
            let scan_age_s = inputs
                .scan
                .as_ref()
                .and_then(|scan| now.age_of(scan.stamp))
                .map_or(0.0, |ns| ns as f64 * 1e-9);
            // How fast the base moves (SAF-017): the fastest of commanded, last and measured.
            let mut base_motion = [0.0_f64; 2];
            for t in [Some(command.base), Some(self.previous.base), measured_base]
                .into_iter()
                .flatten()
            {
                base_motion[0] = base_motion[0].max(t.vx_mps.hypot(t.vy_mps));
                base_motion[1] = base_motion[1].max(t.wz_radps.abs());
            }
            let separation_m = self.limit_arm(
                proposed,
                &state,
                (scan_age_s, base_motion),
                dt_s,
                &mut command,
                &mut reasons,
            );
            // On an arm alone the clearance reported is the arm's separation (SAF-017); with
            // a base it stays the footprint's.
            if self.base.is_none() {
                clearance_m = separation_m;
            }
        }
        Verdict {
            command,
            action: reasons.action(),
            reasons,
            stop_category: None,
            power_enabled: true,
            clearance_m,
            protective_depth_m,
        }
    }

    /// SAF-006/007: a command must be finite, fit the action space and be fresh.
    fn check_command(&self, proposed: &Command, now: Monotonic, reasons: &mut Reasons) {
        let max_age_ns = match proposed.source {
            CommandSource::None => {
                reasons.insert(Reason::NoCommand);
                return;
            }
            CommandSource::LocalPolicy => self.command_max_age_ns[0],
            CommandSource::Cloud => self.command_max_age_ns[1],
            CommandSource::Operator => self.command_max_age_ns[2],
        };
        match now.age_of(proposed.stamp) {
            None => reasons.insert(Reason::CommandFromFuture),
            Some(age) if age > max_age_ns => reasons.insert(Reason::StaleCommand),
            Some(_) => {}
        }
        let b = proposed.base;
        let mut finite = b.vx_mps.is_finite() && b.vy_mps.is_finite() && b.wz_radps.is_finite();
        for joint in &proposed.joints {
            finite &= joint.position.is_none_or(f64::is_finite);
            finite &= joint.velocity.is_none_or(f64::is_finite);
        }
        finite &= proposed.gripper_position.is_none_or(f64::is_finite);
        finite &= proposed
            .ee_target_m
            .is_none_or(|p| p.iter().all(|v| v.is_finite()));
        // Anything outside the configured action space is a malformed command, not a no-op.
        let arm = self.config.arm.as_ref();
        let fits = (self.base.is_some() || b == Twist::default())
            && proposed.joints[self.joint_count..]
                .iter()
                .all(|j| j.position.is_none() && j.velocity.is_none())
            && (proposed.gripper_position.is_none() || arm.is_some_and(|a| a.gripper.is_some()))
            // SAF-016: with a kinematic chain the zones hold every link, which a Cartesian
            // target (no inverse kinematics here) cannot be checked against: refused.
            && (proposed.ee_target_m.is_none()
                || arm.is_some_and(|a| a.workspace.is_some() && a.kinematics.is_none()));
        if !(finite && fits) {
            reasons.insert(Reason::InvalidCommand);
        }
    }

    /// SAF-005: every configured input must be present, fresh and well-formed.
    fn check_inputs<'a>(
        &mut self,
        inputs: &SafetyInputs<'a>,
        now: Monotonic,
        reasons: &mut Reasons,
    ) -> Option<JointState<'a>> {
        if let Some(lidar) = &mut self.lidar {
            match &inputs.scan {
                None => reasons.insert(Reason::ScanMissing),
                Some(scan) => {
                    if now
                        .age_of(scan.stamp)
                        .is_none_or(|age| age > self.scan_max_age_ns)
                    {
                        reasons.insert(Reason::ScanStale);
                    }
                    if let Err(reason) = lidar.prepare(scan) {
                        reasons.insert(reason);
                    }
                }
            }
        }
        if let Some(max_age) = self.base.as_ref().and_then(|b| b.odometry_max_age_ns) {
            match &inputs.odometry {
                None => reasons.insert(Reason::OdometryMissing),
                Some(odom) => {
                    if now.age_of(odom.stamp).is_none_or(|age| age > max_age) {
                        reasons.insert(Reason::OdometryStale);
                    }
                    let t = odom.twist;
                    if !(t.vx_mps.is_finite() && t.vy_mps.is_finite() && t.wz_radps.is_finite()) {
                        reasons.insert(Reason::OdometryInvalid);
                    }
                }
            }
        }
        if self.joint_count == 0 {
            return None;
        }
        let Some(state) = inputs.joint_state else {
            reasons.insert(Reason::JointStateMissing);
            return None;
        };
        if now
            .age_of(state.stamp)
            .is_none_or(|age| age > self.joint_state_max_age_ns)
        {
            reasons.insert(Reason::JointStateStale);
        }
        let well_formed = state.positions.len() == self.joint_count
            && state.velocities.len() == self.joint_count
            && state.positions.iter().all(|p| p.is_finite())
            && state.velocities.iter().all(|v| v.is_finite());
        if !well_formed {
            reasons.insert(Reason::JointStateInvalid);
            return None;
        }
        Some(state)
    }

    /// SAF-006 for the base: kinematics, per-axis velocity, then acceleration ramps. A reversal
    /// is commanded only from standstill: while odometry (`measured`) still moves the other
    /// way, the axis is commanded to zero so the drive brakes (drives ramp a reversed setpoint
    /// at their acceleration limit, not their brake limit). Returns (ramped output,
    /// velocity-limited target).
    fn limit_base(
        &self,
        proposed: Twist,
        measured: Option<Twist>,
        dt_s: f64,
        reasons: &mut Reasons,
    ) -> (Twist, Twist) {
        let Some(base) = &self.base else {
            return (Twist::default(), Twist::default());
        };
        let mut v = [proposed.vx_mps, proposed.vy_mps, proposed.wz_radps];
        if !base.holonomic && v[1] != 0.0 {
            v[1] = 0.0;
            reasons.insert(Reason::NonHolonomic);
        }
        let previous = [
            self.previous.base.vx_mps,
            self.previous.base.vy_mps,
            self.previous.base.wz_radps,
        ];
        let measured = measured.map(|t| [t.vx_mps, t.vy_mps, t.wz_radps]);
        let mut target = [0.0; 3];
        for axis in 0..3 {
            let mut clamped = v[axis].clamp(-base.max_v[axis], base.max_v[axis]);
            target[axis] = clamped;
            if clamped != v[axis] {
                reasons.insert(Reason::VelocityLimit);
            }
            if let Some(m) = measured
                && m[axis] * clamped < 0.0
                && m[axis].abs() > REVERSAL_STANDSTILL
            {
                clamped = 0.0;
                reasons.insert(Reason::AccelLimit);
            }
            let ramped = ramp(
                previous[axis],
                clamped,
                base.max_accel[axis] * dt_s,
                base.brake[axis] * dt_s,
            );
            if ramped != clamped {
                reasons.insert(Reason::AccelLimit);
            }
            v[axis] = ramped;
        }
        let twist = |a: [f64; 3]| Twist {
            vx_mps: a[0],
            vy_mps: a[1],
            wz_radps: a[2],
        };
        (twist(v), twist(target))
    }

    /// SAF-003/004/005: restrict each motion component that would bring the footprint into an
    /// obstacle within its stopping distance; cap the speed in the slow-down zone at a share of
    /// `target_speed_xy` (the request after velocity limits). Returns (clearance, depth).
    fn proximity(
        &mut self,
        v: &mut Twist,
        target_speed_xy: f64,
        inputs: &SafetyInputs<'_>,
        now: Monotonic,
        reasons: &mut Reasons,
    ) -> (f32, f32) {
        let (Some(base), Some(lidar)) = (&self.base, &mut self.lidar) else {
            return (f32::INFINITY, 0.0);
        };
        let previous = self.previous.base;
        let odometry = inputs
            .odometry
            .map(|o| o.twist)
            .filter(|t| t.vx_mps.is_finite() && t.vy_mps.is_finite() && t.wz_radps.is_finite());
        // Stopping distances use the fastest of: what is commanded, what the drive was last
        // told, and what it reports; rotation adds the speed of the footprint's far corner.
        let mut speed_xy = v
            .vx_mps
            .hypot(v.vy_mps)
            .max(previous.vx_mps.hypot(previous.vy_mps));
        let mut speed_wz = v.wz_radps.abs().max(previous.wz_radps.abs());
        if let Some(t) = odometry {
            speed_xy = speed_xy.max(t.vx_mps.hypot(t.vy_mps));
            speed_wz = speed_wz.max(t.wz_radps.abs());
        }
        let radius = f64::from(base.footprint.circumradius_m);
        let s = speed_xy + speed_wz * radius;
        // The scan in use is already this old: everything in it may have moved (a lost scan
        // or two widens every zone; the configured reaction time covers the rest).
        let scan_age_s = inputs
            .scan
            .as_ref()
            .and_then(|scan| now.age_of(scan.stamp))
            .map_or(0.0, |ns| ns as f64 * 1e-9);
        let reaction_s = base.reaction_s + scan_age_s;
        let depth = s * reaction_s + s * s / (2.0 * base.brake[0]) + base.margin_m;
        let mut clearance = f32::INFINITY;
        let stop_time_s = reaction_s + s / base.brake[0];
        let intrusion_m = base.intrusion_speed_mps * stop_time_s;
        // Nothing farther than this from the origin can be in any zone this tick.
        let relevant_m = radius + depth + base.slowdown_depth_m + base.hysteresis_m + intrusion_m;
        lidar.select_near((relevant_m * 1.001 + 1e-3) as f32);

        let magnitude = v.vx_mps.hypot(v.vy_mps);
        if magnitude > MOTION_EPS {
            let u = [v.vx_mps / magnitude, v.vy_mps / magnitude];
            let (ux, uy) = (u[0] as f32, u[1] as f32);
            let same_side = self
                .translation_hold
                .is_some_and(|h| h.direction[0] * u[0] + h.direction[1] * u[1] > 0.0);
            let mut blocked = None;
            let mut waiting = false;
            if !lidar.observes(ux, uy) {
                blocked = Some(Reason::MotionUnobserved);
            } else {
                // ISO 13855-style: a person may walk `intrusion_m` toward the path while the
                // robot reacts and brakes.
                let sweep = lidar.sweep(&base.footprint, ux, uy, intrusion_m as f32);
                clearance = sweep.kth_contact_m;
                let kth = f64::from(sweep.kth_contact_m);
                let protect = depth + if same_side { base.hysteresis_m } else { 0.0 };
                if f64::from(sweep.invalid_in_direction)
                    > base.max_invalid_fraction * f64::from(sweep.beams_in_direction)
                {
                    blocked = Some(Reason::InvalidBeams);
                } else if kth <= 0.0 {
                    blocked = Some(Reason::FootprintIntrusion);
                } else if kth <= protect {
                    blocked = Some(Reason::ProtectiveZone);
                } else if same_side {
                    waiting =
                        release_pending(&mut self.translation_hold, now, base.release_delay_ns);
                }
                if blocked.is_none()
                    && !waiting
                    && base.slowdown_depth_m > 0.0
                    && kth <= depth + base.slowdown_depth_m
                {
                    // A speed cap, not a factor on the ramped output: the robot may still
                    // accelerate up to the scaled request instead of creeping forever.
                    let cap =
                        target_speed_xy * ((kth - depth) / base.slowdown_depth_m).clamp(0.0, 1.0);
                    if magnitude > cap {
                        v.vx_mps *= cap / magnitude;
                        v.vy_mps *= cap / magnitude;
                        reasons.insert(Reason::SlowdownZone);
                    }
                }
            }
            if let Some(reason) = blocked {
                reasons.insert(reason);
                self.translation_hold = Some(Hold {
                    direction: u,
                    clear_since: None,
                });
            }
            if blocked.is_some() || waiting {
                reasons.insert(blocked.unwrap_or(Reason::ProtectiveZone));
                v.vx_mps = 0.0;
                v.vy_mps = 0.0;
            }
        }

        if v.wz_radps.abs() > MOTION_EPS {
            let sign = v.wz_radps.signum();
            let same_side = self.rotation_hold.is_some_and(|h| h.direction[0] == sign);
            let (invalid, beams) = lidar.invalid_fraction_inputs();
            let slack = base.margin_m + if same_side { base.hysteresis_m } else { 0.0 };
            let angle = speed_wz * reaction_s
                + speed_wz * speed_wz / (2.0 * base.brake[2])
                + slack / radius;
            let mut blocked = None;
            let mut waiting = false;
            if f64::from(invalid) > base.max_invalid_fraction * f64::from(beams) {
                blocked = Some(Reason::InvalidBeams);
            } else if lidar.rotation_hits(&base.footprint, (sign * angle) as f32) >= base.min_points
            {
                blocked = Some(Reason::ProtectiveZone);
            } else if same_side {
                waiting = release_pending(&mut self.rotation_hold, now, base.release_delay_ns);
            }
            if let Some(reason) = blocked {
                reasons.insert(reason);
                self.rotation_hold = Some(Hold {
                    direction: [sign, 0.0],
                    clear_since: None,
                });
            }
            if blocked.is_some() || waiting {
                reasons.insert(blocked.unwrap_or(Reason::ProtectiveZone));
                v.wz_radps = 0.0;
            }
        }
        (clearance, depth as f32)
    }

    /// SAF-018: some position-driven joint has had its target ahead of it, one way, for
    /// `time_ms` since the target moved that way, while the joint moved less than `min_error`
    /// toward it. A window opens when the gap reaches `min_error` and closes when it falls
    /// below half of that (hysteresis) or the joint moves `min_error` toward the target; its
    /// timer runs from the first tick in it on which the target moved the gap's way (a joint
    /// sagging from a still target, or pushed from it at rest, is not held by anything — until
    /// the target moves on into it). Time is the clock's, not capped at a period.
    fn stalled(&mut self, state: &JointState<'_>) -> bool {
        let Some(stall) = self.config.arm.as_ref().and_then(|a| a.stall) else {
            return false;
        };
        let (time_s, elapsed_s) = (stall.time_ms * 1e-3, self.tick_elapsed_s);
        let mut any = false;
        for ((target, measured), w) in self.previous.joints[..self.joint_count]
            .iter()
            .zip(state.positions)
            .zip(&mut self.stall)
        {
            let Some(position) = target.position else {
                *w = StallWindow::default();
                continue;
            };
            let ahead = position - measured;
            if w.sign == 0 {
                if ahead.abs() >= stall.min_error {
                    let sign = ahead.signum();
                    *w = StallWindow {
                        sign: sign as i8,
                        anchor: *measured,
                        since_s: 0.0,
                        opened: (position - w.last_target) * sign > 0.0,
                        last_target: position,
                    };
                } else {
                    w.last_target = position;
                }
                continue;
            }
            let sign = f64::from(w.sign);
            if ahead * sign < stall.min_error / 2.0
                || (measured - w.anchor) * sign >= stall.min_error
            {
                *w = StallWindow {
                    last_target: position,
                    ..StallWindow::default()
                };
                continue;
            }
            if !w.opened && (position - w.last_target) * sign > 0.0 {
                (w.opened, w.anchor, w.since_s) = (true, *measured, 0.0);
            } else if w.opened {
                w.since_s += elapsed_s;
            }
            w.last_target = position;
            any |= w.opened && w.since_s >= time_s;
        }
        any
    }

    /// SAF-015: some joint is measured further than `max_following_error` from its last
    /// commanded position.
    fn following_error(&self, state: &JointState<'_>) -> bool {
        let Some(bound) = self.config.arm.as_ref().and_then(|a| a.max_following_error) else {
            return false;
        };
        self.previous.joints[..self.joint_count]
            .iter()
            .zip(state.positions)
            .any(|(target, measured)| {
                target
                    .position
                    .is_some_and(|p| (p - measured).abs() > bound)
            })
    }

    /// SAF-006 for the arm: position range, rate, velocity, acceleration, gripper, workspace;
    /// then separation (SAF-017) and zones (SAF-016). Returns the separation (m; +inf without
    /// SAF-017, or with nobody near).
    fn limit_arm(
        &self,
        proposed: &Command,
        state: &JointState<'_>,
        (scan_age_s, base_motion): (f64, [f64; 2]),
        dt_s: f64,
        command: &mut Command,
        reasons: &mut Reasons,
    ) -> f32 {
        let Some(arm) = &self.config.arm else {
            return f32::INFINITY;
        };
        for (i, joint) in arm.joints.iter().enumerate().take(MAX_JOINTS) {
            let target = proposed.joints[i];
            let previous = self.previous.joints[i];
            let measured = state.positions[i];
            if let Some(position) = target.position {
                let clamped = position.clamp(joint.min_position, joint.max_position);
                if clamped != position {
                    reasons.insert(Reason::JointPositionLimit);
                }
                // A trapezoidal tracker from the last target (or the measured position): the
                // speed toward the target is at most max_velocity and what can still stop at
                // the target (so it never overshoots), and changes by at most
                // max_acceleration per tick. The velocity it implies is sent with the target.
                let from = previous.position.unwrap_or(measured);
                let v_prev = match previous.position {
                    Some(_) => previous.velocity.unwrap_or(0.0),
                    None => state.velocities[i],
                };
                let distance = clamped - from;
                // The speed from which braking by a·dt per tick stops within the distance
                // (d = v²/2a + v·dt/2 for ticks of dt).
                let half = joint.max_acceleration * dt_s / 2.0;
                let stoppable =
                    (half * half + 2.0 * joint.max_acceleration * distance.abs()).sqrt() - half;
                let wanted = if dt_s > 0.0 { distance / dt_s } else { 0.0 };
                let speed_cap = joint.max_velocity.min(stoppable);
                let capped = wanted.clamp(-speed_cap, speed_cap);
                if capped != wanted && speed_cap == joint.max_velocity {
                    reasons.insert(Reason::JointVelocityLimit);
                }
                let dv = joint.max_acceleration * dt_s;
                let v = v_prev + (capped - v_prev).clamp(-dv, dv);
                if v != capped && (capped - v_prev).abs() > dv {
                    reasons.insert(Reason::AccelLimit);
                }
                let v = v.clamp(-joint.max_velocity, joint.max_velocity);
                let limited = if (clamped - from).abs() <= (v * dt_s).abs() && v * distance >= 0.0 {
                    clamped
                } else {
                    (from + v * dt_s).clamp(joint.min_position, joint.max_position)
                };
                command.joints[i].position = Some(limited);
                if target.velocity.is_none() {
                    command.joints[i].velocity = Some(if dt_s > 0.0 {
                        (limited - from) / dt_s
                    } else {
                        0.0
                    });
                }
            }
            if let Some(velocity) = target.velocity {
                let clamped = velocity.clamp(-joint.max_velocity, joint.max_velocity);
                if clamped != velocity {
                    reasons.insert(Reason::JointVelocityLimit);
                }
                let from = previous.velocity.unwrap_or(state.velocities[i]);
                let step = joint.max_acceleration * dt_s;
                let mut limited = from + (clamped - from).clamp(-step, step);
                if limited != clamped {
                    reasons.insert(Reason::AccelLimit);
                }
                // Never faster toward a position limit than can still stop before it.
                let room = if limited > 0.0 {
                    joint.max_position - measured
                } else {
                    measured - joint.min_position
                };
                let allowed = (2.0 * joint.max_acceleration * room.max(0.0)).sqrt();
                if limited.abs() > allowed {
                    limited = allowed.copysign(limited);
                    reasons.insert(Reason::JointPositionLimit);
                }
                command.joints[i].velocity = Some(limited);
            }
        }
        let separation_m =
            self.separation_guard(arm, state, scan_age_s, base_motion, dt_s, command, reasons);
        self.zone_guard(arm, state, dt_s, command, reasons);
        if let (Some(position), Some(gripper)) = (proposed.gripper_position, arm.gripper) {
            let clamped = position.clamp(gripper.min_position, gripper.max_position);
            if clamped != position {
                reasons.insert(Reason::GripperLimit);
            }
            command.gripper_position = Some(clamped);
        }
        if let (Some(target), Some(ws)) = (proposed.ee_target_m, arm.workspace) {
            let mut clamped = target;
            for axis in 0..3 {
                clamped[axis] = target[axis].clamp(ws.min_m[axis], ws.max_m[axis]);
            }
            if clamped != target {
                reasons.insert(Reason::WorkspaceLimit);
            }
            command.ee_target_m = Some(clamped);
        }
        separation_m
    }
}

/// A blocked direction that now looks clear stays blocked until it has been clear for
/// `delay_ns` (SAF-004); then the hold is dropped. Returns whether it is still held.
fn release_pending(hold: &mut Option<Hold>, now: Monotonic, delay_ns: u64) -> bool {
    let Some(h) = hold.as_mut() else {
        return false;
    };
    let since = *h.clear_since.get_or_insert(now);
    if now.age_of(since).unwrap_or(0) < delay_ns {
        true
    } else {
        *hold = None;
        false
    }
}

/// Poses checked along an arm's braking path (SAF-016), besides the next target: a shorter
/// stop is checked at every tick.
const ZONE_SAMPLES: usize = 16;

/// Deeper into a zone than this (m) counts as entering it: rounding, not motion.
const ZONE_EPS_M: f64 = 1e-9;

/// Below this measured speed (m/s, rad/s) an axis counts as standing still for a reversal.
const REVERSAL_STANDSTILL: f64 = 0.02;

/// Moves `value` toward zero by at most `step`.
fn toward_zero(value: f64, step: f64) -> f64 {
    value - value.clamp(-step, step)
}

/// Moves `from` toward `to`: by at most `brake_step` when slowing down on the same side of
/// zero, `accel_step` when speeding up; across a sign change, to standstill first.
fn ramp(from: f64, to: f64, accel_step: f64, brake_step: f64) -> f64 {
    if from * to < 0.0 {
        // A reversal brakes to standstill first (at the brake limit, as any slowing down),
        // then accelerates the other way from the next tick: the motion still heading where
        // it was going ends as fast as the drive allows.
        return toward_zero(from, brake_step);
    }
    let step = if to.abs() <= from.abs() {
        brake_step
    } else {
        accel_step
    };
    from + (to - from).clamp(-step, step)
}

fn hex_hash(hash: &[u8; 32]) -> String {
    let mut s = String::from("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
