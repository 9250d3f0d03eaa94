//! Inputs, commands and verdicts. All are plain `Copy` data or borrowed slices, so building and
//! returning them never allocates.

use serde::{Deserialize, Serialize};

/// Largest number of arm joints a command can carry.
pub const MAX_JOINTS: usize = 16;

/// A point on the monotonic clock, in nanoseconds since an arbitrary origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Monotonic(u64);

impl Monotonic {
    pub const fn from_nanos(ns: u64) -> Self {
        Self(ns)
    }
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1_000_000))
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// `self + ns`, saturating.
    pub const fn add_nanos(self, ns: u64) -> Self {
        Self(self.0.saturating_add(ns))
    }
    /// Age of `stamp` at `self` in ns; `None` when `stamp` lies in the future.
    pub const fn age_of(self, stamp: Monotonic) -> Option<u64> {
        self.0.checked_sub(stamp.0)
    }
}

/// Who proposed a command. Each has its own max age (SAF-007) and none has more authority over
/// safety than another (SAF-008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CommandSource {
    /// Nothing proposed this tick: the robot stops.
    #[default]
    None,
    LocalPolicy,
    Cloud,
    Operator,
}

/// Base velocity in the base frame.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Twist {
    pub vx_mps: f64,
    pub vy_mps: f64,
    pub wz_radps: f64,
}

/// Target for one joint: a position, a velocity, or both (units from the joint's config).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct JointTarget {
    pub position: Option<f64>,
    pub velocity: Option<f64>,
}

/// A proposed or final command for the whole action space.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Command {
    pub source: CommandSource,
    /// When the command was produced (observation time for a policy), monotonic clock.
    pub stamp: Monotonic,
    pub base: Twist,
    /// Joint `i` is `arm.joints[i]` of the config; entries past the configured joints stay default.
    pub joints: [JointTarget; MAX_JOINTS],
    pub gripper_position: Option<f64>,
    /// End-effector position target in the base frame (m).
    pub ee_target_m: Option<[f64; 3]>,
}

impl Command {
    /// A command from `source` that moves only the base.
    pub fn base(
        source: CommandSource,
        stamp: Monotonic,
        vx_mps: f64,
        vy_mps: f64,
        wz_radps: f64,
    ) -> Self {
        Self {
            source,
            stamp,
            base: Twist {
                vx_mps,
                vy_mps,
                wz_radps,
            },
            ..Self::default()
        }
    }

    /// True when no part of the command asks for motion.
    pub fn is_motionless(&self) -> bool {
        self.base == Twist::default()
            && self.joints.iter().all(|j| j.velocity.unwrap_or(0.0) == 0.0)
    }
}

/// E-stop sources (SAF-001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstopSource {
    /// The hardware E-stop circuit, read through an input.
    Hardware,
    /// The ROS `/reflex/estop` topic.
    RosTopic,
    /// The cloud link.
    Cloud,
    /// The runtime's watchdog (missed deadlines, hung worker).
    Watchdog,
    /// Any other internal fault.
    Internal,
}

impl EstopSource {
    pub const COUNT: usize = 5;
    pub const ALL: [EstopSource; Self::COUNT] = [
        Self::Hardware,
        Self::RosTopic,
        Self::Cloud,
        Self::Watchdog,
        Self::Internal,
    ];
    pub const fn index(self) -> usize {
        self as usize
    }
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hardware => "hardware",
            Self::RosTopic => "ros_topic",
            Self::Cloud => "cloud",
            Self::Watchdog => "watchdog",
            Self::Internal => "internal",
        }
    }
    pub(crate) const fn reason(self) -> Reason {
        match self {
            Self::Hardware => Reason::EstopHardware,
            Self::RosTopic => Reason::EstopRosTopic,
            Self::Cloud => Reason::EstopCloud,
            Self::Watchdog => Reason::EstopWatchdog,
            Self::Internal => Reason::EstopInternal,
        }
    }
}

/// The latest report of one E-stop source, with the time it was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EstopReport {
    /// The source has not reported yet.
    #[default]
    Unknown,
    Clear(Monotonic),
    Pressed(Monotonic),
}

/// One laser scan, following `sensor_msgs/LaserScan` and REP 117: `+inf` means no return
/// (clear), `-inf` an object closer than `range_min`, NaN an erroneous beam.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scan<'a> {
    pub stamp: Monotonic,
    pub angle_min_rad: f32,
    pub angle_increment_rad: f32,
    pub range_min_m: f32,
    pub range_max_m: f32,
    pub ranges_m: &'a [f32],
}

/// Measured base velocity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Odometry {
    pub stamp: Monotonic,
    pub twist: Twist,
}

/// Measured joint state, in config joint order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointState<'a> {
    pub stamp: Monotonic,
    pub positions: &'a [f64],
    pub velocities: &'a [f64],
}

/// Everything the safety layer reads besides the proposed command.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SafetyInputs<'a> {
    /// Indexed by [`EstopSource::index`].
    pub estop: [EstopReport; EstopSource::COUNT],
    /// A reset is requested each time this number changes; it is honoured only while every
    /// configured source is clear (SAF-001). A request is consumed whether honoured or not.
    pub reset_request_seq: u64,
    pub scan: Option<Scan<'a>>,
    pub odometry: Option<Odometry>,
    pub joint_state: Option<JointState<'a>>,
}

/// What the safety layer did to the proposed command; ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Unchanged.
    Pass,
    /// Limited to velocity, acceleration, position or workspace limits.
    Clamp,
    /// Scaled down by the slow-down zone.
    Slow,
    /// Some or all motion stopped this tick (obstacle, invalid or stale data); not latched.
    Stop,
    /// E-stop latched: stop per the configured category until an explicit reset.
    Estop,
}

impl Action {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Clamp => "clamp",
            Self::Slow => "slow",
            Self::Stop => "stop",
            Self::Estop => "estop",
        }
    }
}

/// IEC 60204-1 stop categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopCategory {
    /// Remove power immediately.
    Cat0,
    /// Controlled deceleration, then remove power.
    Cat1,
    /// Controlled deceleration, then hold with power on.
    Cat2,
}

macro_rules! reasons {
    ($($variant:ident => $name:literal, $action:ident;)*) => {
        /// Why a verdict differs from the proposal. Names are stable (metrics, recordings).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Reason { $($variant,)* }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();
            pub const fn name(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }
            /// The least severe action that carries this reason.
            pub const fn action(self) -> Action {
                match self { $(Reason::$variant => Action::$action,)* }
            }
        }
    };
}

reasons! {
    EstopHardware => "estop_hardware", Estop;
    EstopRosTopic => "estop_ros_topic", Estop;
    EstopCloud => "estop_cloud", Estop;
    EstopWatchdog => "estop_watchdog", Estop;
    EstopInternal => "estop_internal", Estop;
    EstopSourceStale => "estop_source_stale", Estop;
    EstopNotReady => "estop_not_ready", Estop;
    EstopLatched => "estop_latched", Estop;
    ResetRefused => "reset_refused", Estop;
    ClockFault => "clock_fault", Stop;
    NoCommand => "no_command", Stop;
    InvalidCommand => "invalid_command", Stop;
    StaleCommand => "stale_command", Stop;
    CommandFromFuture => "command_from_future", Stop;
    ScanMissing => "scan_missing", Stop;
    ScanStale => "scan_stale", Stop;
    ScanInvalid => "scan_invalid", Stop;
    InvalidBeams => "invalid_beams", Stop;
    MotionUnobserved => "motion_unobserved", Stop;
    OdometryMissing => "odometry_missing", Stop;
    OdometryStale => "odometry_stale", Stop;
    OdometryInvalid => "odometry_invalid", Stop;
    JointStateMissing => "joint_state_missing", Stop;
    JointStateStale => "joint_state_stale", Stop;
    JointStateInvalid => "joint_state_invalid", Stop;
    FollowingError => "following_error", Stop;
    FootprintIntrusion => "footprint_intrusion", Stop;
    ProtectiveZone => "protective_zone", Stop;
    SlowdownZone => "slowdown_zone", Slow;
    VelocityLimit => "velocity_limit", Clamp;
    AccelLimit => "accel_limit", Clamp;
    NonHolonomic => "non_holonomic", Clamp;
    JointPositionLimit => "joint_position_limit", Clamp;
    JointVelocityLimit => "joint_velocity_limit", Clamp;
    GripperLimit => "gripper_limit", Clamp;
    WorkspaceLimit => "workspace_limit", Clamp;
    ArmWorkspace => "arm_workspace", Stop;
    ArmKeepOut => "arm_keep_out", Stop;
    ArmSeparation => "arm_separation", Stop;
    ArmSeparationSlow => "arm_separation_slow", Slow;
    JointStalled => "joint_stalled", Stop;
    ScanBackgroundMismatch => "scan_background_mismatch", Stop;
}

/// A fixed-size set of [`Reason`]s (a bit set; no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Reasons(u64);

impl Reasons {
    pub const fn empty() -> Self {
        Self(0)
    }
    pub fn insert(&mut self, reason: Reason) {
        self.0 |= 1 << reason as u8;
    }
    pub const fn contains(self, reason: Reason) -> bool {
        self.0 & (1 << reason as u8) != 0
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn bits(self) -> u64 {
        self.0
    }
    pub fn iter(self) -> impl Iterator<Item = Reason> {
        Reason::ALL
            .iter()
            .copied()
            .filter(move |r| self.contains(*r))
    }
    /// The most severe action among the reasons; `Pass` when empty.
    pub fn action(self) -> Action {
        self.iter()
            .map(Reason::action)
            .max()
            .unwrap_or(Action::Pass)
    }
}

impl std::fmt::Display for Reasons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for reason in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(reason.name())?;
            first = false;
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// The safety layer's decision for one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The command to send to the actuators; the only one that may be sent.
    pub command: Command,
    pub action: Action,
    pub reasons: Reasons,
    /// Set while the E-stop is latched.
    pub stop_category: Option<StopCategory>,
    /// False when drive power must be removed (category 0, or category 1 once stopped).
    pub power_enabled: bool,
    /// Distance (m) from the footprint to the `min_points`-th nearest obstacle point along the
    /// translation; `+inf` when there is none within reach of the zones, or the base is not
    /// translating. On a robot without a base, with SAF-017: the arm's separation (the
    /// `min_points`-th nearest point's horizontal distance to its links; +inf when nobody is
    /// near enough to matter).
    pub clearance_m: f32,
    /// Depth (m) of the protective zone used this tick (stopping distance + margin).
    pub protective_depth_m: f32,
}

/// SAF-018, one joint's stall window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct StallWindow {
    /// Which way the target is ahead (0: no window).
    pub(crate) sign: i8,
    /// The measured position when the window began.
    pub(crate) anchor: f64,
    /// How long (s) since the target opened the gap by moving.
    pub(crate) since_s: f64,
    /// The target has moved the gap's way during the window (a joint sagging from a still
    /// target has not).
    pub(crate) opened: bool,
    /// The target last tick.
    pub(crate) last_target: f64,
}
