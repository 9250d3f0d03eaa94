//! The frames between the robot I/O and the RT thread.

use reflex_safety::{
    EstopReport, EstopSource, JointTarget, MAX_JOINTS, Monotonic, Odometry, SafetyInputs, Twist,
    Verdict,
};

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
    /// Explicit start requests so far (SAF-013: after a reset the robot stays stopped until one
    /// arrives, under `[safety.estop] restart = "start_request"`).
    pub start_seq: u64,
    /// Joint states in `[safety.arm] joints` order (empty without an arm); stamped on reception.
    pub joint_stamp_ns: u64,
    pub joint_positions: Vec<f64>,
    pub joint_velocities: Vec<f64>,
}

impl SensorFrame {
    /// A frame with room for `beams` lidar beams and `joints` joints, nothing received yet.
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
            start_seq: 0,
        }
    }
}

impl SensorFrame {
    /// The safety layer's inputs from this frame, with `estop` (the frame's own sources plus
    /// what the loop adds: watchdog, internal, latched presses). A source that never reported
    /// (stamp 0) is absent, so its staleness check stops the robot.
    pub fn safety_inputs(&self, estop: [EstopReport; EstopSource::COUNT]) -> SafetyInputs<'_> {
        SafetyInputs {
            estop,
            reset_request_seq: self.reset_seq,
            scan: (self.scan_stamp_ns > 0).then_some(reflex_safety::Scan {
                stamp: Monotonic::from_nanos(self.scan_stamp_ns),
                angle_min_rad: self.angle_min_rad,
                angle_increment_rad: self.angle_increment_rad,
                range_min_m: self.range_min_m,
                range_max_m: self.range_max_m,
                ranges_m: &self.ranges,
            }),
            odometry: self.odom.map(|twist| Odometry {
                stamp: Monotonic::from_nanos(self.odom_stamp_ns),
                twist,
            }),
            joint_state: (self.joint_stamp_ns > 0 && !self.joint_positions.is_empty()).then_some(
                reflex_safety::JointState {
                    stamp: Monotonic::from_nanos(self.joint_stamp_ns),
                    positions: &self.joint_positions,
                    velocities: &self.joint_velocities,
                },
            ),
        }
    }
}

/// Below 1 cm/s and 0.01 rad/s: the `stationary` swap rule's notion of standing still.
pub fn is_stationary(v: Twist) -> bool {
    v.vx_mps.hypot(v.vy_mps) < 0.01 && v.wz_radps.abs() < 0.01
}

/// The command the robot I/O applies: the safety layer's verdict of one tick, and nothing else.
/// `Copy` and fixed size (triple-buffered from the RT thread).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommandFrame {
    /// Tick number of the verdict (1 = the first tick; 0 = no verdict yet). The robot I/O sees
    /// from it whether the RT thread is still publishing.
    pub seq: u64,
    /// When the verdict was made, monotonic ns (0 = never).
    pub stamp_ns: u64,
    /// Base velocity.
    pub base: Twist,
    /// Joint targets in `[safety.arm] joints` order; entries past the configured joints stay
    /// default.
    pub joints: [JointTarget; MAX_JOINTS],
    /// Gripper position target, when the policy drives one.
    pub gripper_position: Option<f64>,
    /// Drive power may stay on (false: category 0, or category 1 once stopped).
    pub drive_enabled: bool,
    /// E-stop presses ([`crate::EstopIngress::total`]) the RT thread had seen when it made this
    /// verdict: the actuator gate never sends a verdict older than a press it has already
    /// answered with zero.
    pub presses_seen: u64,
}

impl Default for CommandFrame {
    fn default() -> Self {
        Self {
            seq: 0,
            stamp_ns: 0,
            base: Twist::default(),
            joints: [JointTarget::default(); MAX_JOINTS],
            gripper_position: None,
            drive_enabled: false,
            presses_seen: 0,
        }
    }
}

impl CommandFrame {
    /// Zero motion, drive power off: what the actuator gate sends instead of a missing, stale
    /// or pre-press verdict.
    pub fn zero() -> Self {
        Self::default()
    }

    /// Tick `seq`'s verdict, made at `stamp_ns` having seen `presses_seen` E-stop presses.
    pub fn from_verdict(seq: u64, stamp_ns: u64, presses_seen: u64, verdict: &Verdict) -> Self {
        Self {
            seq,
            stamp_ns,
            base: verdict.command.base,
            joints: verdict.command.joints,
            gripper_position: verdict.command.gripper_position,
            drive_enabled: verdict.power_enabled,
            presses_seen,
        }
    }
}
