//! The middleware-neutral ROS 2 port: topic names (remappable), QoS profiles, the ROS 2
//! message types Reflex reads and writes (as serde structs whose CDR encoding is byte-equal to
//! what ROS 2 sends: proven against PyPI `rosbags` golden files in `tests/cdr_golden.rs`), the
//! E-stop semantics, and the diagnostics Reflex publishes. The adapters (`ros2` = r2r, `dds` =
//! ros2-client) only move these messages; all ROS I/O runs off the RT thread.
//!
//! E-stop semantics: `/reflex/estop` (std_msgs/Bool, reliable + transient-local, so a latched
//! press published before Reflex started is delivered on discovery): `true` = pressed, which
//! latches in the safety layer; `false` = released, which does **not** reset. A reset is a
//! separate, explicit request on `/reflex/estop_reset` (std_msgs/Empty; a std_srvs/Trigger
//! service under `ros2`). Until the first E-stop message arrives the source is missing, and the
//! safety layer holds the robot stopped (SAF-002).

use serde::{Deserialize, Serialize};

/// Topic names (all remappable in `[ros.topics]`; ROS `--ros-args -r` applies under `ros2`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub scan: String,
    pub joint_states: String,
    pub image: String,
    pub instruction: String,
    pub estop: String,
    pub estop_reset: String,
    /// SAF-013: std_msgs/Empty; after a reset, the robot moves only after a start.
    pub start: String,
    /// nav_msgs/Odometry: the measured base velocity, for the stopping distances.
    pub odom: String,
    pub cmd_vel: String,
    pub diagnostics: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            scan: "/scan".into(),
            joint_states: "/joint_states".into(),
            image: "/camera/image_raw".into(),
            instruction: "/reflex/instruction".into(),
            estop: "/reflex/estop".into(),
            estop_reset: "/reflex/estop_reset".into(),
            start: "/reflex/start".into(),
            odom: "/odom".into(),
            cmd_vel: "/cmd_vel".into(),
            diagnostics: "/diagnostics".into(),
        }
    }
}

impl Topics {
    /// Every name must be a valid ROS 2 topic name (letters, digits, `_`, `/`, optional `~`).
    pub fn validate(&self) -> Result<(), String> {
        for (key, name) in [
            ("scan", &self.scan),
            ("joint_states", &self.joint_states),
            ("image", &self.image),
            ("instruction", &self.instruction),
            ("estop", &self.estop),
            ("estop_reset", &self.estop_reset),
            ("start", &self.start),
            ("odom", &self.odom),
            ("cmd_vel", &self.cmd_vel),
            ("diagnostics", &self.diagnostics),
        ] {
            if check_topic_name(name).is_err() {
                return Err(format!(
                    "ros.topics.{key} = {name:?} is not a ROS 2 topic name; fix: letters, digits, '_' and '/', e.g. \"/scan\""
                ));
            }
        }
        Ok(())
    }

    /// The DDS topic name ROS 2 uses on the wire: `rt` + the fully qualified name.
    pub fn dds_name(namespace: &str, name: &str) -> String {
        if name.starts_with('/') {
            format!("rt{name}")
        } else {
            let ns = namespace.trim_end_matches('/');
            format!("rt{ns}/{name}")
        }
    }
}

/// Whether `name` is a valid ROS 2 topic name (letters, digits, `_`, `/`, optional `~`).
pub fn check_topic_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.ends_with('/')
        && !name.contains("//")
        && name
            .trim_start_matches('~')
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/')
        && !name
            .trim_start_matches(['~', '/'])
            .starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a ROS 2 topic name; fix: letters, digits, '_' and '/', e.g. \"/arm_controller/joint_trajectory\""
        ))
    }
}

/// The QoS profiles Reflex uses (mapped by each adapter to its middleware's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qos {
    pub reliable: bool,
    pub transient_local: bool,
    pub depth: u32,
}

impl Qos {
    /// `rmw_qos_profile_sensor_data`: best effort, volatile, keep last 5.
    pub const SENSOR_DATA: Qos = Qos {
        reliable: false,
        transient_local: false,
        depth: 5,
    };
    /// Commands and status: reliable, volatile, keep last 10 (ROS 2's default profile).
    pub const DEFAULT: Qos = Qos {
        reliable: true,
        transient_local: false,
        depth: 10,
    };
    /// The E-stop: reliable, transient-local, keep last 1 — a press published before Reflex
    /// started is still delivered.
    pub const LATCHED: Qos = Qos {
        reliable: true,
        transient_local: true,
        depth: 1,
    };
    /// Reading an E-stop device: as [`Self::LATCHED`] (compatible with a keep-last-1 writer),
    /// but a reader history of 16, so a press and its release arriving between two takes are
    /// both kept and the press latches (SAF-012); keep-last-1 would keep only the release.
    pub const ESTOP_READER: Qos = Qos {
        reliable: true,
        transient_local: true,
        depth: 16,
    };
}

/// builtin_interfaces/msg/Time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}

impl Time {
    pub fn from_nanos(ns: u64) -> Self {
        Self {
            sec: (ns / 1_000_000_000) as i32,
            nanosec: (ns % 1_000_000_000) as u32,
        }
    }

    pub fn as_nanos(self) -> Option<u64> {
        u64::try_from(self.sec)
            .ok()
            .map(|s| s * 1_000_000_000 + u64::from(self.nanosec))
    }
}

/// std_msgs/msg/Header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub stamp: Time,
    pub frame_id: String,
}

/// sensor_msgs/msg/LaserScan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaserScan {
    pub header: Header,
    pub angle_min: f32,
    pub angle_max: f32,
    pub angle_increment: f32,
    pub time_increment: f32,
    pub scan_time: f32,
    pub range_min: f32,
    pub range_max: f32,
    pub ranges: Vec<f32>,
    pub intensities: Vec<f32>,
}

/// sensor_msgs/msg/JointState.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JointState {
    pub header: Header,
    pub name: Vec<String>,
    pub position: Vec<f64>,
    pub velocity: Vec<f64>,
    pub effort: Vec<f64>,
}

/// sensor_msgs/msg/Image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    pub encoding: String,
    pub is_bigendian: u8,
    pub step: u32,
    pub data: Vec<u8>,
}

/// std_msgs/msg/String.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StringMsg {
    pub data: String,
}

/// std_msgs/msg/Bool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoolMsg {
    pub data: bool,
}

/// std_msgs/msg/Empty (one placeholder byte on the wire, as rosidl generates it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {
    pub structure_needs_at_least_one_member: u8,
}

/// geometry_msgs/msg/Vector3.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Vector3 {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

/// geometry_msgs/msg/Twist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TwistMsg {
    pub linear: Vector3,
    pub angular: Vector3,
}

/// geometry_msgs/msg/TwistStamped (what ros2_control's diff_drive_controller takes from Jazzy on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwistStampedMsg {
    pub header: Header,
    pub twist: TwistMsg,
}

/// geometry_msgs/msg/Point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

/// geometry_msgs/msg/Quaternion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quaternion {
    pub x: f64,
    pub y: f64,
    pub z: f64,
    pub w: f64,
}

/// geometry_msgs/msg/Pose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    pub position: Point,
    pub orientation: Quaternion,
}

/// A row-major 6×6 covariance (`float64[36]`: a fixed array, no length on the wire).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Covariance(pub [f64; 36]);

impl Default for Covariance {
    fn default() -> Self {
        Self([0.0; 36])
    }
}

impl Serialize for Covariance {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(36)?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Covariance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Covariance;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("36 float64")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Covariance, A::Error> {
                let mut out = [0.0; 36];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Covariance(out))
            }
        }
        d.deserialize_tuple(36, V)
    }
}

/// geometry_msgs/msg/PoseWithCovariance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoseWithCovariance {
    pub pose: Pose,
    pub covariance: Covariance,
}

/// geometry_msgs/msg/TwistWithCovariance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwistWithCovariance {
    pub twist: TwistMsg,
    pub covariance: Covariance,
}

/// nav_msgs/msg/Odometry. Reflex reads `twist` (in `child_frame_id`, the base frame, as REP 105
/// has it): the measured base velocity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Odometry {
    pub header: Header,
    pub child_frame_id: String,
    pub pose: PoseWithCovariance,
    pub twist: TwistWithCovariance,
}

/// What `/cmd_vel` carries (`[ros] cmd_vel_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CmdVelType {
    /// geometry_msgs/Twist: Humble's convention (Nav2, teleop, `~/cmd_vel_unstamped`).
    Twist,
    /// geometry_msgs/TwistStamped (`[ros] cmd_vel_stamp`: zero or the send time): what
    /// Jazzy's diff_drive_controller takes.
    TwistStamped,
}

impl CmdVelType {
    /// The convention of a ROS 2 distribution (`$ROS_DISTRO`'s spelling): Twist up to Iron,
    /// TwistStamped from Jazzy on (ros2_controllers dropped the unstamped input there).
    pub fn for_distro(distro: &str) -> Result<Self, String> {
        match distro {
            "foxy" | "galactic" | "humble" | "iron" => Ok(Self::Twist),
            "jazzy" | "kilted" | "lyrical" | "rolling" => Ok(Self::TwistStamped),
            other => Err(format!(
                "ROS distribution {other:?} unknown, so the /cmd_vel type has no default; fix: set [ros] cmd_vel_type = \"twist\" or \"twist_stamped\""
            )),
        }
    }

    pub fn ros_type(self) -> &'static str {
        match self {
            Self::Twist => type_names::TWIST,
            Self::TwistStamped => type_names::TWIST_STAMPED,
        }
    }
}

/// What a TwistStamped `/cmd_vel` carries in `header.stamp` (`[ros] cmd_vel_stamp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CmdVelStamp {
    /// Zero (default): Jazzy's diff_drive_controller stamps such a command with its own clock
    /// on receipt, so its `cmd_vel_timeout` works whatever the two clocks say.
    #[default]
    Zero,
    /// The send time on this host's clock: only where the clocks are shared (PTP/chrony);
    /// the controller then also drops commands delayed in transit. A host clock ahead of the
    /// controller's would stretch its timeout by the difference.
    SendTime,
}

/// diagnostic_msgs/msg/KeyValue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// diagnostic_msgs/msg/DiagnosticStatus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticStatus {
    /// 0 OK, 1 WARN, 2 ERROR, 3 STALE.
    pub level: u8,
    pub name: String,
    pub message: String,
    pub hardware_id: String,
    pub values: Vec<KeyValue>,
}

/// diagnostic_msgs/msg/DiagnosticArray.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticArray {
    pub header: Header,
    pub status: Vec<DiagnosticStatus>,
}

/// The ROS 2 type names (`pkg/msg/Type`) and the DDS type names on the wire.
pub mod type_names {
    pub const LASER_SCAN: &str = "sensor_msgs/msg/LaserScan";
    pub const JOINT_STATE: &str = "sensor_msgs/msg/JointState";
    pub const IMAGE: &str = "sensor_msgs/msg/Image";
    pub const STRING: &str = "std_msgs/msg/String";
    pub const BOOL: &str = "std_msgs/msg/Bool";
    pub const EMPTY: &str = "std_msgs/msg/Empty";
    pub const TWIST: &str = "geometry_msgs/msg/Twist";
    pub const TWIST_STAMPED: &str = "geometry_msgs/msg/TwistStamped";
    pub const ODOMETRY: &str = "nav_msgs/msg/Odometry";
    pub const DIAGNOSTIC_ARRAY: &str = "diagnostic_msgs/msg/DiagnosticArray";

    /// `sensor_msgs/msg/LaserScan` → `sensor_msgs::msg::dds_::LaserScan_`.
    pub fn dds(ros: &str) -> String {
        let mut parts = ros.split('/');
        let (pkg, kind, name) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        format!("{pkg}::{kind}::dds_::{name}_")
    }
}

/// CDR (XCDR1, little endian) with the 4-byte encapsulation header, as ROS 2 puts it on the
/// wire and in bags.
pub mod cdr {
    use serde::{Serialize, de::DeserializeOwned};

    /// `CDR_LE` encapsulation.
    pub const HEADER: [u8; 4] = [0x00, 0x01, 0x00, 0x00];

    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
        let mut out = HEADER.to_vec();
        out.extend(
            cdr_encoding::to_vec::<T, byteorder::LittleEndian>(value)
                .map_err(|e| format!("CDR encode: {e}"))?,
        );
        Ok(out)
    }

    /// Decodes a message with its encapsulation header (little- or big-endian CDR).
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        match bytes.get(..4) {
            Some([0x00, 0x01, _, _]) => {
                cdr_encoding::from_bytes::<T, byteorder::LittleEndian>(&bytes[4..])
                    .map(|(v, _)| v)
                    .map_err(|e| format!("CDR decode: {e}"))
            }
            Some([0x00, 0x00, _, _]) => {
                cdr_encoding::from_bytes::<T, byteorder::BigEndian>(&bytes[4..])
                    .map(|(v, _)| v)
                    .map_err(|e| format!("CDR decode: {e}"))
            }
            _ => Err(format!(
                "not plain CDR: encapsulation {:02x?}",
                bytes.get(..4).unwrap_or(bytes)
            )),
        }
    }
}

/// Counters of what an adapter received and refused.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PortStats {
    pub scans: u64,
    pub scans_refused: u64,
    pub images: u64,
    pub images_refused: u64,
    pub estop_messages: u64,
    /// Press edges (a device reporting pressed after clear or nothing), each latched.
    pub estop_presses: u64,
    /// Publishers seen on the E-stop devices' topics (one state each).
    pub estop_writers: u64,
    pub resets: u64,
    pub resets_refused: u64,
    pub starts: u64,
    pub instructions: u64,
    pub joint_states: u64,
    pub joint_states_refused: u64,
    pub odometry: u64,
    pub odometry_refused: u64,
    /// Times odometry went silent for longer than `[ros] odom_timeout_ms` (then it is not
    /// used: the stopping distances fall back to the commanded speeds).
    pub odometry_lapses: u64,
    /// Scans, joint states and odometry refused for a header stamp outside
    /// `[ros] max_stamp_age_ms` of this host's clock (also counted in their `*_refused`).
    pub stale_stamps: u64,
    pub commands_published: u64,
    /// Observations not made because a camera other than the first had no frame within
    /// `[ros] camera_timeout_ms` (its driver died or lags): the policy never sees a frozen view.
    pub camera_unavailable: u64,
    /// Observations not made because a state source the policy reads had no measurement
    /// within `[ros] odom_timeout_ms` (no joint state yet, gripper missing): no inference then,
    /// so the robot stops rather than act on a guessed state.
    pub state_unavailable: u64,
    /// Joint-command messages published (`[[ros.controllers]]`).
    pub joint_commands_published: u64,
    /// Instructions for which the policy's package has no embedding (a policy with an
    /// `instruction_embedding` input): each replaces the instruction before it, so the
    /// robot stops instead of carrying on with the task it was given before.
    pub instructions_unknown: u64,
    /// Observations not made because no instruction the package knows is set (none received
    /// yet, or the last one unknown): no inference then, so the robot does not move.
    pub instruction_unavailable: u64,
}

/// `[ros] odom_timeout_ms` by default (200 ms): older odometry is not used.
pub const DEFAULT_ODOM_TIMEOUT_NS: u64 = 200_000_000;

/// `[ros] camera_timeout_ms` by default (200 ms: six frames at 30 Hz).
pub const DEFAULT_CAMERA_TIMEOUT_NS: u64 = 200_000_000;

/// Publishers tracked per E-stop device topic set (more are counted as presses only).
pub const MAX_ESTOP_WRITERS: usize = 32;

/// A reset forgets heartbeat publishers silent for longer than this (1 s, or the source's
/// max age if longer) whose last word was "clear" (see [`PortState::on_reset`]).
pub const RESET_FORGETS_SILENT_NS: u64 = 1_000_000_000;

/// One publisher on an E-stop device's topic.
#[derive(Debug, Clone, Copy)]
struct EstopWriter {
    device: usize,
    writer: u64,
    report: reflex_safety::EstopReport,
}

/// The adapter-independent half of a ROS robot: turns port messages into the loop's sensor
/// frame and the policy's observation (on the robot-I/O thread), so `dds` and `ros2` behave
/// identically. Scans and the E-stop are stamped on reception (monotonic clock).
#[derive(Debug)]
pub struct PortState {
    manifest: reflex_policy::PolicyManifest,
    beams: usize,
    scan_stamp_ns: u64,
    geometry: [f32; 4],
    ranges: Vec<f32>,
    /// Source of each E-stop device (index = device), and one state per publisher seen.
    estop_devices: Vec<reflex_safety::EstopSource>,
    estop_writers: Vec<EstopWriter>,
    /// Per device: publishers on its topic that this adapter cannot tell apart (r2r does not
    /// give a message's publisher): more than one makes the device unknown (SAF-012).
    estop_unattributed: Vec<usize>,
    ingress: Option<std::sync::Arc<reflex_core::EstopIngress>>,
    reset_seq: u64,
    start_seq: u64,
    /// The newest reception time seen (monotonic ns), for resets.
    clock_ns: u64,
    /// Per source: the heartbeat period it must keep (`max_age_ms`), if any.
    heartbeat_ns: [Option<u64>; reflex_safety::EstopSource::COUNT],
    tokens: Vec<i64>,
    last_command: reflex_safety::Twist,
    /// A frame of the first camera arrived since the last observation (the trigger of policies
    /// with cameras).
    image_fresh: bool,
    /// Per image input (manifest order): when its last frame was accepted (monotonic ns).
    camera_stamps: Vec<u64>,
    /// Per image input: its last accepted frame, converted. Copied into the observation only
    /// when one is made, so every observation carries each camera's latest frame (frames
    /// written straight into the triple buffer's input would land in whichever buffer was
    /// current, and a slower camera's image in a published buffer could be an old one).
    camera_images: Vec<reflex_policy::ImageData>,
    /// `[ros] camera_timeout_ms` (ns): an observation needs every camera's frame this recent.
    camera_timeout_ns: u64,
    /// `[safety.arm] joints` names, in the safety layer's order.
    joint_names: Vec<String>,
    /// Where each state entry comes from (the policy's `state_sources`, resolved).
    state_sources: Vec<reflex_core::actions::StateSource>,
    /// The gripper's joint name in `/joint_states` (`[ros] gripper_joint`), when the robot has one.
    gripper_joint: Option<String>,
    gripper_position: f64,
    gripper_stamp_ns: u64,
    /// A joint state arrived since the last observation (the trigger of policies without a camera).
    joint_fresh: bool,
    /// The last accepted joint state reported every joint's velocity.
    joint_velocities_known: bool,
    joint_stamp_ns: u64,
    joint_positions: Vec<f64>,
    joint_velocities: Vec<f64>,
    /// The latest accepted `/odom` twist and its reception stamp (monotonic ns; 0 = none yet).
    odom: reflex_safety::Twist,
    odom_stamp_ns: u64,
    /// `[ros] odom_timeout_ms` (ns), and whether odometry was within it at the last step.
    odom_timeout_ns: u64,
    odom_fresh: bool,
    /// `[ros] max_stamp_age_ms` (ns): header stamps are compared with `wall_ns` (clocks shared).
    max_stamp_age_ns: Option<u64>,
    /// This host's wall clock (ROS time), set by the adapter each step.
    wall_ns: u64,
    /// The running model's digest, for `/diagnostics`.
    pub model_digest: String,
    pub stats: PortStats,
}

impl PortState {
    pub fn new(
        manifest: &reflex_policy::PolicyManifest,
        beams: usize,
        joint_names: Vec<String>,
    ) -> Self {
        // Token ids (padding at first) or the embedding row (-1 at first: none yet).
        let tokens = manifest.observation().instruction;
        Self {
            manifest: manifest.clone(),
            beams,
            scan_stamp_ns: 0,
            geometry: [0.0; 4],
            ranges: Vec::with_capacity(beams),
            estop_devices: vec![reflex_safety::EstopSource::RosTopic],
            estop_writers: Vec::with_capacity(MAX_ESTOP_WRITERS),
            estop_unattributed: vec![0],
            ingress: None,
            reset_seq: 0,
            start_seq: 0,
            clock_ns: 0,
            heartbeat_ns: [None; reflex_safety::EstopSource::COUNT],
            tokens,
            last_command: reflex_safety::Twist::default(),
            image_fresh: false,
            camera_stamps: vec![0; manifest.image_inputs().count()],
            camera_images: manifest.observation().images,
            camera_timeout_ns: DEFAULT_CAMERA_TIMEOUT_NS,
            joint_positions: vec![0.0; joint_names.len()],
            joint_velocities: vec![0.0; joint_names.len()],
            joint_names,
            state_sources: vec![
                reflex_core::actions::StateSource::BaseVx,
                reflex_core::actions::StateSource::BaseVy,
                reflex_core::actions::StateSource::BaseWz,
            ],
            gripper_joint: None,
            gripper_position: 0.0,
            gripper_stamp_ns: 0,
            joint_fresh: false,
            joint_velocities_known: false,
            joint_stamp_ns: 0,
            odom: reflex_safety::Twist::default(),
            odom_stamp_ns: 0,
            odom_timeout_ns: DEFAULT_ODOM_TIMEOUT_NS,
            odom_fresh: false,
            max_stamp_age_ns: None,
            wall_ns: 0,
            model_digest: String::new(),
            stats: PortStats::default(),
        }
    }

    /// The policy's state sources (resolved against the robot's config: `PolicyManifest::resolve`)
    /// and the gripper's joint name in `/joint_states`, when the robot has a gripper.
    pub fn with_state_sources(
        mut self,
        sources: Vec<reflex_core::actions::StateSource>,
        gripper_joint: Option<String>,
    ) -> Self {
        self.state_sources = sources;
        self.gripper_joint = gripper_joint;
        self
    }

    /// `[ros] max_stamp_age_ms`: refuse inputs whose header stamp is further than this from the
    /// host's clock (either way). Only meaningful when the robot's clock is shared (PTP/chrony,
    /// or the same host): unset, header stamps are not read at all.
    pub fn with_max_stamp_age(mut self, max_age_ns: Option<u64>) -> Self {
        self.max_stamp_age_ns = max_age_ns;
        self
    }

    /// `[ros] camera_timeout_ms` (ns): an observation needs a frame this recent from every camera.
    pub fn with_camera_timeout(mut self, timeout_ns: u64) -> Self {
        self.camera_timeout_ns = timeout_ns;
        self
    }

    /// `[ros] odom_timeout_ms` (ns): odometry older than this is not handed to the loop.
    pub fn with_odom_timeout(mut self, timeout_ns: u64) -> Self {
        self.odom_timeout_ns = timeout_ns;
        self
    }

    /// A step begins at `now_ns` (monotonic) and `wall_ns` (the host's wall clock, ROS time):
    /// the adapter calls this before it hands over the step's inputs.
    pub fn begin_step(&mut self, now_ns: u64, wall_ns: u64) {
        self.clock_ns = self.clock_ns.max(now_ns);
        self.wall_ns = wall_ns;
    }

    /// When a message received at `now_ns` was made: with `[ros] max_stamp_age_ms` (clocks
    /// shared), reception minus its header's lag, so transport and driver delay count in the
    /// input's age; otherwise the reception time.
    fn made_at(&self, now_ns: u64, header: &Header) -> u64 {
        match (self.max_stamp_age_ns, header.stamp.as_nanos()) {
            (Some(_), Some(stamp)) => now_ns
                .saturating_sub(self.wall_ns.saturating_sub(stamp))
                .max(1),
            _ => now_ns,
        }
    }

    /// Whether a header stamp passes `[ros] max_stamp_age_ms` (always, when unset). A zero stamp
    /// (a driver that does not stamp) and a stamp from the future beyond the bound (clocks not
    /// in fact shared) fail too.
    fn stamp_ok(&mut self, header: &Header) -> bool {
        let Some(max_age) = self.max_stamp_age_ns else {
            return true;
        };
        let ok = header.stamp.as_nanos().is_some_and(|stamp| {
            stamp != 0
                && self.wall_ns.saturating_sub(stamp) <= max_age
                && stamp.saturating_sub(self.wall_ns) <= max_age
        });
        if !ok {
            self.stats.stale_stamps += 1;
        }
        ok
    }

    /// `/odom`: the measured base velocity (linear x/y, angular z of `twist`, in the base frame),
    /// stamped on reception; non-finite values or a stamp outside `max_stamp_age_ms` are
    /// refused (the last good one ages; with `[safety.base] odometry_max_age_ms` the robot
    /// then stops).
    pub fn on_odom(&mut self, odom: &Odometry, now_ns: u64) {
        self.clock_ns = self.clock_ns.max(now_ns);
        let t = &odom.twist.twist;
        let twist = reflex_safety::Twist {
            vx_mps: t.linear.x,
            vy_mps: t.linear.y,
            wz_radps: t.angular.z,
        };
        let finite =
            twist.vx_mps.is_finite() && twist.vy_mps.is_finite() && twist.wz_radps.is_finite();
        if !finite || !self.stamp_ok(&odom.header) {
            self.stats.odometry_refused += 1;
            return;
        }
        self.odom = twist;
        self.odom_stamp_ns = self.made_at(now_ns, &odom.header);
        self.stats.odometry += 1;
    }

    /// `/joint_states`, matched by name to the configured joints; a message missing one of them
    /// (or with non-finite values) is refused, so the joint state ages and the arm stops.
    /// Velocities may be absent (then zero, as REP says for unknown).
    pub fn on_joint_state(&mut self, js: &JointState, now_ns: u64) {
        self.clock_ns = self.clock_ns.max(now_ns);
        if self.joint_names.is_empty() && self.gripper_joint.is_none() {
            return;
        }
        if !self.stamp_ok(&js.header) {
            self.stats.joint_states_refused += 1;
            return;
        }
        // The gripper may come in the arm's message or in its own (a gripper driver's).
        // A bad gripper value is refused (its reading ages); a message with no arm joint is
        // the gripper's own and is not an arm message missing its joints.
        if let Some(g) = &self.gripper_joint
            && let Some(k) = js.name.iter().position(|n| n == g)
        {
            match js.position.get(k) {
                Some(&p) if p.is_finite() => {
                    self.gripper_position = p;
                    self.gripper_stamp_ns = self.made_at(now_ns, &js.header);
                }
                _ => self.stats.joint_states_refused += 1,
            }
            if !self.joint_names.iter().any(|j| js.name.contains(j)) {
                return;
            }
        }
        if self.joint_names.is_empty() {
            return;
        }
        let mut positions = [0.0f64; 16];
        let mut velocities = [0.0f64; 16];
        let mut all_velocities = true;
        for (i, name) in self.joint_names.iter().enumerate().take(16) {
            let Some(k) = js.name.iter().position(|n| n == name) else {
                self.stats.joint_states_refused += 1;
                return;
            };
            let (Some(&p), v) = (js.position.get(k), js.velocity.get(k).copied()) else {
                self.stats.joint_states_refused += 1;
                return;
            };
            all_velocities &= v.is_some();
            let v = v.unwrap_or(0.0);
            if !p.is_finite() || !v.is_finite() {
                self.stats.joint_states_refused += 1;
                return;
            }
            positions[i] = p;
            velocities[i] = v;
        }
        let n = self.joint_names.len().min(16);
        self.joint_positions[..n].copy_from_slice(&positions[..n]);
        self.joint_velocities[..n].copy_from_slice(&velocities[..n]);
        self.joint_stamp_ns = self.made_at(now_ns, &js.header);
        self.joint_fresh = true;
        self.joint_velocities_known = all_velocities;
        self.stats.joint_states += 1;
    }

    /// A scan; malformed or larger than the configured beams → refused (the last good one
    /// ages until the safety layer stops the robot).
    pub fn on_scan(&mut self, scan: &LaserScan, now_ns: u64) {
        self.clock_ns = self.clock_ns.max(now_ns);
        let ok = !scan.ranges.is_empty()
            && scan.ranges.len() <= self.beams
            && scan.angle_increment.is_finite()
            && scan.angle_increment != 0.0
            && scan.angle_min.is_finite()
            && scan.range_max > scan.range_min;
        if !ok || !self.stamp_ok(&scan.header) {
            self.stats.scans_refused += 1;
            return;
        }
        self.stats.scans += 1;
        self.ranges.clear();
        self.ranges.extend_from_slice(&scan.ranges);
        self.geometry = [
            scan.angle_min,
            scan.angle_increment,
            scan.range_min,
            scan.range_max,
        ];
        self.scan_stamp_ns = self.made_at(now_ns, &scan.header);
    }

    /// The latest accepted scan: its reception stamp (monotonic ns) and ranges.
    pub fn latest_scan(&self) -> (u64, &[f32]) {
        (self.scan_stamp_ns, &self.ranges)
    }

    /// The E-stop devices (`[ros] estop_devices`): device `i` feeds `sources[i]`.
    pub fn with_estop_devices(mut self, sources: Vec<reflex_safety::EstopSource>) -> Self {
        self.estop_unattributed = vec![0; sources.len()];
        self.estop_devices = sources;
        self
    }

    /// For an adapter that cannot say which publisher sent an E-stop message (`ros2`: every
    /// message comes as publisher 0): how many publishers device `device`'s topic has now (from
    /// the ROS graph). With more than one, their messages would overwrite each other (a
    /// "clear" from one hiding the other's press, and a reset then accepted), so the device
    /// reports unknown — the robot stays stopped, a press still latches — until one is left.
    pub fn set_unattributed_publishers(&mut self, device: usize, publishers: usize) {
        if let Some(n) = self.estop_unattributed.get_mut(device) {
            if *n != publishers && publishers > 1 {
                eprintln!(
                    "reflex: E-stop device {device} has {publishers} publishers on its topic and this adapter cannot tell them apart (r2r does not give a message's publisher): the device counts as unknown (robot stopped) until one is left; fix: one topic per E-stop device ([[ros.estop_devices]]), or --io dds"
                );
            }
            *n = publishers;
        }
    }

    /// Devices whose topic has several publishers this adapter cannot tell apart.
    pub fn ambiguous_devices(&self) -> usize {
        self.estop_unattributed.iter().filter(|n| **n > 1).count()
    }

    /// Where press edges go the moment they are seen (the RT thread and the actuator gate).
    pub fn attach_ingress(&mut self, ingress: std::sync::Arc<reflex_core::EstopIngress>) {
        self.ingress = Some(ingress);
    }

    /// `/reflex/estop` from its only publisher: see [`Self::on_estop_from`].
    pub fn on_estop(&mut self, pressed: bool, now_ns: u64) {
        self.on_estop_from(0, 0, pressed, now_ns);
    }

    /// An E-stop message on device `device`'s topic from publisher `writer` (a key of its
    /// GID; 0 when the middleware does not say): true = pressed, false = released (never a
    /// reset). SAF-012: each publisher has its own state, so one cannot overwrite another's
    /// press; a press edge goes to the ingress at once, so a press released before the next
    /// tick still latches; a publisher that falls silent ages, and its source turns stale
    /// after `[safety.estop] sources.max_age_ms`.
    pub fn on_estop_from(&mut self, device: usize, writer: u64, pressed: bool, now_ns: u64) {
        self.stats.estop_messages += 1;
        self.clock_ns = self.clock_ns.max(now_ns);
        let Some(&source) = self.estop_devices.get(device) else {
            return;
        };
        let at = reflex_safety::Monotonic::from_nanos(now_ns);
        let report = if pressed {
            reflex_safety::EstopReport::Pressed(at)
        } else {
            reflex_safety::EstopReport::Clear(at)
        };
        let known = self
            .estop_writers
            .iter()
            .position(|w| w.device == device && w.writer == writer);
        let was_pressed = match known {
            Some(k) => {
                let w = &mut self.estop_writers[k];
                let was = matches!(w.report, reflex_safety::EstopReport::Pressed(_));
                w.report = report;
                was
            }
            None => {
                self.stats.estop_writers += 1;
                let w = EstopWriter {
                    device,
                    writer,
                    report,
                };
                if self.estop_writers.len() < MAX_ESTOP_WRITERS {
                    self.estop_writers.push(w);
                } else if let Some(k) = self
                    .estop_writers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| matches!(w.report, reflex_safety::EstopReport::Clear(_)))
                    .min_by_key(|(_, w)| match w.report {
                        reflex_safety::EstopReport::Clear(at) => at,
                        _ => reflex_safety::Monotonic::from_nanos(0),
                    })
                    .map(|(k, _)| k)
                {
                    // Full: the publisher silent longest with "clear" makes room (a press is
                    // never evicted; if every slot holds a press, resets stay refused anyway).
                    self.estop_writers[k] = w;
                }
                false
            }
        };
        if pressed && !was_pressed {
            self.stats.estop_presses += 1;
            if let Some(ingress) = &self.ingress {
                ingress.press(source);
            }
        }
    }

    /// One source's report over its devices and their publishers: pressed if any publisher
    /// says so; unknown while a device has not reported; else clear, stamped with the oldest
    /// publisher's last report (so one silent publisher ages the whole source).
    fn source_report(&self, source: reflex_safety::EstopSource) -> reflex_safety::EstopReport {
        use reflex_safety::EstopReport;
        let mut oldest: Option<reflex_safety::Monotonic> = None;
        let mut unreported = false;
        // A press on any device wins over a device that has not reported yet.
        for (device, s) in self.estop_devices.iter().enumerate() {
            if *s != source {
                continue;
            }
            let mut reported = false;
            let ambiguous = self.estop_unattributed.get(device).is_some_and(|n| *n > 1);
            for w in self.estop_writers.iter().filter(|w| w.device == device) {
                reported = true;
                match w.report {
                    EstopReport::Pressed(at) => return EstopReport::Pressed(at),
                    EstopReport::Clear(at) => oldest = Some(oldest.map_or(at, |o| o.min(at))),
                    EstopReport::Unknown => {}
                }
            }
            unreported |= !reported || ambiguous;
        }
        if unreported {
            return EstopReport::Unknown;
        }
        oldest.map_or(EstopReport::Unknown, EstopReport::Clear)
    }

    /// Whether any E-stop publisher reports pressed now.
    pub fn any_pressed(&self) -> bool {
        self.estop_writers
            .iter()
            .any(|w| matches!(w.report, reflex_safety::EstopReport::Pressed(_)))
    }

    /// `/reflex/start` (or the `~/start` service): one explicit start request (SAF-013).
    pub fn on_start(&mut self) {
        self.stats.starts += 1;
        self.start_seq += 1;
    }

    /// `/reflex/estop_reset` (or the Trigger service): one explicit reset request. A reset is
    /// the operator's confirmation of the E-stop devices as they are now: a heartbeat publisher
    /// that said "clear" but not for [`RESET_FORGETS_SILENT_NS`] is forgotten (a safety controller
    /// that restarted comes back as a new publisher; the dead one would keep the source stale
    /// for ever). A publisher whose last word was "pressed" is never forgotten, and a device
    /// left with no live publisher is unknown again, so the robot stays stopped.
    pub fn on_reset(&mut self) {
        self.stats.resets += 1;
        self.reset_seq += 1;
        let now = reflex_safety::Monotonic::from_nanos(self.clock_ns);
        let devices = &self.estop_devices;
        let heartbeats = &self.heartbeat_ns;
        self.estop_writers.retain(|w| {
            let source = devices[w.device];
            let heartbeat = heartbeats[source.index()];
            match (w.report, heartbeat) {
                // Event-only devices (a latched button topic) are silent by design: kept.
                (_, None) => true,
                (reflex_safety::EstopReport::Clear(at), Some(max_age)) => now
                    .age_of(at)
                    .is_some_and(|age| age <= max_age.max(RESET_FORGETS_SILENT_NS)),
                _ => true,
            }
        });
    }

    /// Sources that must report as a heartbeat (`[safety.estop] sources` with `max_age_ms`),
    /// and how often (ns): what a reset may forget (see [`Self::on_reset`]).
    pub fn set_heartbeats(&mut self, heartbeats: [Option<u64>; reflex_safety::EstopSource::COUNT]) {
        self.heartbeat_ns = heartbeats;
    }

    /// A reset asked for by a service (it can answer): refused with the reason while the ROS
    /// E-stop topic reports pressed (the safety layer would refuse it too), else passed on as
    /// [`Self::on_reset`]. Other sources (the hardware circuit) can still refuse it later.
    pub fn on_reset_request(&mut self) -> Result<(), String> {
        if self.ambiguous_devices() > 0 {
            self.stats.resets_refused += 1;
            return Err(
                "reset refused: an E-stop device's topic has several publishers this adapter cannot tell apart; give each E-stop its own topic ([[ros.estop_devices]]), or stop the extra publisher, then reset"
                    .into(),
            );
        }
        if self.any_pressed() {
            self.stats.resets_refused += 1;
            return Err(
                "reset refused: an E-stop device reports pressed; release it (false), then reset"
                    .into(),
            );
        }
        self.on_reset();
        Ok(())
    }

    pub fn on_instruction(&mut self, text: &str) {
        self.stats.instructions += 1;
        if !self.manifest.encode_instruction(text, &mut self.tokens) {
            self.stats.instructions_unknown += 1;
        }
    }

    /// A frame of camera `camera` (the index of its image input among the policy's image
    /// inputs, the order of [`crate::RosConfig::camera_topics`]), received at `now_ns`
    /// (monotonic); see [`write_image`]. [`PortState::finish_step`] hands it to the policy.
    pub fn on_image(&mut self, camera: usize, img: &Image, now_ns: u64) {
        let written = match (
            self.manifest.image_inputs().nth(camera),
            self.camera_images.get_mut(camera),
        ) {
            (Some(spec), Some(dst)) => write_image(img, dst, spec),
            _ => false,
        };
        if written {
            if camera == 0 {
                self.image_fresh = true;
            }
            self.camera_stamps[camera] = now_ns.max(1);
            self.stats.images += 1;
        } else {
            self.stats.images_refused += 1;
        }
    }

    /// The command to publish on `/cmd_vel`: zero whenever the verdict removed drive power.
    pub fn command(&mut self, base: reflex_safety::Twist, power_enabled: bool) -> TwistMsg {
        let base = if power_enabled {
            base
        } else {
            reflex_safety::Twist::default()
        };
        self.last_command = base;
        twist_of(base)
    }

    /// Writes the whole sensor frame (the triple buffer hands out older buffers) and, when a
    /// new image arrived since the last call, completes the observation; returns whether it did.
    pub fn finish_step(
        &mut self,
        frame: &mut reflex_core::SensorFrame,
        obs: &mut reflex_policy::Observation,
    ) -> bool {
        use reflex_safety::{EstopReport, EstopSource};
        let [angle_min, increment, range_min, range_max] = self.geometry;
        frame.scan_stamp_ns = self.scan_stamp_ns;
        frame.angle_min_rad = angle_min;
        frame.angle_increment_rad = increment;
        frame.range_min_m = range_min;
        frame.range_max_m = range_max;
        frame.ranges.clear();
        frame.ranges.extend_from_slice(&self.ranges);
        // Odometry silent past its timeout is not used (counted once per lapse): a frozen
        // value would pose as the robot's motion. Required odometry then stops the robot.
        let fresh = self.odom_stamp_ns != 0
            && self.clock_ns.saturating_sub(self.odom_stamp_ns) <= self.odom_timeout_ns;
        if self.odom_fresh && !fresh {
            self.stats.odometry_lapses += 1;
        }
        self.odom_fresh = fresh;
        frame.odom_stamp_ns = self.odom_stamp_ns;
        frame.odom = fresh.then_some(self.odom);
        frame.estop = [EstopReport::Unknown; EstopSource::COUNT];
        for source in [EstopSource::Hardware, EstopSource::RosTopic] {
            if self.estop_devices.contains(&source) {
                frame.estop[source.index()] = self.source_report(source);
            }
        }
        frame.reset_seq = self.reset_seq;
        frame.start_seq = self.start_seq;
        frame.joint_stamp_ns = self.joint_stamp_ns;
        if frame.joint_positions.len() == self.joint_positions.len() {
            frame.joint_positions.copy_from_slice(&self.joint_positions);
            frame
                .joint_velocities
                .copy_from_slice(&self.joint_velocities);
        }
        // A new observation when the newest input the policy sees arrived: a frame of the
        // first camera, or, for a policy without a camera, a joint state.
        let trigger = if self.camera_stamps.is_empty() {
            std::mem::take(&mut self.joint_fresh)
        } else {
            std::mem::take(&mut self.image_fresh)
        };
        if !trigger {
            return false;
        }
        // Every other camera must have shown a recent frame: never a frozen view.
        let clock = self.clock_ns;
        let timeout = self.camera_timeout_ns;
        if self
            .camera_stamps
            .iter()
            .any(|&t| t == 0 || clock.saturating_sub(t) > timeout)
        {
            self.stats.camera_unavailable += 1;
            return false;
        }
        // The measured base velocity. Schema 1 (whose state is always the base velocity) falls
        // back to the last command without fresh odometry; schema 2 reads measurements only.
        let base = if self.odom_fresh {
            Some(self.odom)
        } else if self.manifest.state_sources.is_none() {
            Some(self.last_command)
        } else {
            None
        };
        // Joint and gripper readings older than the timeout are no measurement.
        let recent =
            |stamp: u64| stamp != 0 && self.clock_ns.saturating_sub(stamp) <= self.odom_timeout_ns;
        let joints_ok = recent(self.joint_stamp_ns);
        let measured = reflex_core::actions::Measured {
            base,
            joint_positions: if joints_ok {
                &self.joint_positions
            } else {
                &[]
            },
            // A joint state without velocities gives no velocity state (never a guessed 0).
            joint_velocities: if joints_ok && self.joint_velocities_known {
                &self.joint_velocities
            } else {
                &[]
            },
            gripper_position: recent(self.gripper_stamp_ns).then_some(self.gripper_position),
        };
        let n = self.state_sources.len().min(obs.state.len());
        obs.state[n..].fill(0.0);
        if !reflex_core::actions::fill_state(
            &self.state_sources[..n],
            &measured,
            &mut obs.state[..n],
        ) {
            self.stats.state_unavailable += 1;
            return false;
        }
        if self.tokens.first().is_some_and(|&row| row < 0) {
            self.stats.instruction_unavailable += 1;
            return false;
        }
        obs.instruction.copy_from_slice(&self.tokens);
        for (dst, src) in obs.images.iter_mut().zip(&self.camera_images) {
            dst.clone_from(src);
        }
        true
    }

    pub fn manifest(&self) -> &reflex_policy::PolicyManifest {
        &self.manifest
    }
}

/// rgb8/bgr8 `img` → the image input `spec` into `dst`, as its `preprocess` says
/// ([`reflex_policy::image::fill_image`]). False when the image is malformed or in another
/// encoding (nothing is written then).
pub fn write_image(
    img: &Image,
    dst: &mut reflex_policy::ImageData,
    spec: &reflex_policy::InputSpec,
) -> bool {
    let bgr = match img.encoding.as_str() {
        "rgb8" => false,
        "bgr8" => true,
        _ => return false,
    };
    let frame = reflex_policy::image::RgbFrame {
        width: img.width as usize,
        height: img.height as usize,
        step: img.step as usize,
        bgr,
        data: &img.data,
    };
    reflex_policy::image::fill_image(&frame, spec, dst)
}

/// What the loop reports for `/diagnostics`.
#[derive(Debug, Clone, Default)]
pub struct LoopDiagnostics {
    pub ticks: u64,
    pub deadline_misses: u64,
    pub tick_p99_us: f64,
    pub model: String,
    pub model_digest: String,
    pub estop_latched: bool,
    /// What the robot is doing (SAF-013): latched, stopping, awaiting_start, protective_stop,
    /// running.
    pub state: reflex_core::RunState,
    /// `sha256:<hex>` of the safety config in force.
    pub safety_config_hash: String,
    pub vetoes: Vec<(String, u64)>,
    /// Every safety reason given so far (clamps included) with the ticks that gave it, as
    /// `reasons.<reason>` (as Prometheus' `reflex_safety_reasons_total`); absent = never given.
    pub reasons: Vec<(String, u64)>,
    /// The actuator gate's and the RT supervisor's counters (SAF-011), as `gate.<name>`.
    pub gate: Vec<(String, u64)>,
    /// What the adapter received and refused (`PortStats`), as `inputs.<name>`.
    pub inputs: Vec<(String, u64)>,
}

impl LoopDiagnostics {
    /// From the loop's published atomics and the adapter's state.
    pub fn from_port(status: &reflex_core::LoopStatus, state: &PortState) -> Self {
        let manifest = state.manifest();
        use std::sync::atomic::Ordering;
        let run_state = status.run_state();
        let estop_latched = matches!(
            run_state,
            reflex_core::RunState::Latched | reflex_core::RunState::Stopping
        );
        Self {
            ticks: status.ticks.load(Ordering::Relaxed),
            deadline_misses: status.deadline_misses.load(Ordering::Relaxed),
            tick_p99_us: 0.0,
            model: format!("{} {}", manifest.name, manifest.version),
            model_digest: state.model_digest.clone(),
            estop_latched,
            state: run_state,
            safety_config_hash: status.safety_config_hash.get().cloned().unwrap_or_default(),
            vetoes: vec![(
                "ticks_slowed_or_stopped".into(),
                status.vetoed_ticks.load(Ordering::Relaxed),
            )],
            reasons: reflex_safety::Reason::ALL
                .iter()
                .map(|r| (r.name().to_string(), status.reasons.get(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            gate: vec![
                (
                    "verdicts_sent".into(),
                    status.gate_verdicts.load(Ordering::Relaxed),
                ),
                (
                    "zeros_stale".into(),
                    status.gate_stale_zeros.load(Ordering::Relaxed),
                ),
                (
                    "zeros_estop".into(),
                    status.gate_press_zeros.load(Ordering::Relaxed),
                ),
                ("rt_stalls".into(), status.rt_stalls.load(Ordering::Relaxed)),
            ],
            inputs: {
                let s = &state.stats;
                [
                    ("estop_messages", s.estop_messages),
                    ("estop_presses", s.estop_presses),
                    ("estop_writers", s.estop_writers),
                    ("resets", s.resets),
                    ("resets_refused", s.resets_refused),
                    ("starts", s.starts),
                    ("scans", s.scans),
                    ("scans_refused", s.scans_refused),
                    ("images", s.images),
                    ("images_refused", s.images_refused),
                    ("camera_unavailable", s.camera_unavailable),
                    ("joint_states", s.joint_states),
                    ("joint_states_refused", s.joint_states_refused),
                    ("odometry", s.odometry),
                    ("odometry_refused", s.odometry_refused),
                    ("odometry_lapses", s.odometry_lapses),
                    ("stale_stamps", s.stale_stamps),
                    ("state_unavailable", s.state_unavailable),
                    ("instructions", s.instructions),
                    ("instructions_unknown", s.instructions_unknown),
                    ("instruction_unavailable", s.instruction_unavailable),
                    ("commands_published", s.commands_published),
                    ("joint_commands_published", s.joint_commands_published),
                    ("estop_ambiguous_devices", state.ambiguous_devices() as u64),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
            },
        }
    }

    /// One DiagnosticStatus named `reflex: control loop`: ERROR while the E-stop is latched
    /// (stopping or stopped), WARN while waiting for a start after a reset, in a protective
    /// stop or after deadline misses, else OK; `state` says which, values carry the numbers.
    pub fn to_msg(&self, stamp_ns: u64, hardware_id: &str) -> DiagnosticArray {
        use reflex_core::RunState;
        let (level, message) = match self.state {
            RunState::Latched => (2, "E-stop latched: robot stopped"),
            RunState::Stopping => (2, "E-stop latched: robot stopping"),
            RunState::AwaitingStart => (1, "reset: held at zero until a start request"),
            RunState::ProtectiveStop => (1, "protective stop"),
            RunState::Running if self.deadline_misses > 0 => (1, "running; deadline misses"),
            RunState::Running => (0, "running"),
        };
        let mut values = vec![
            kv("state", self.state.name()),
            kv("safety_config_hash", &self.safety_config_hash),
            kv("ticks", self.ticks),
            kv("deadline_misses", self.deadline_misses),
            kv("tick_p99_us", self.tick_p99_us),
            kv("model", &self.model),
            kv("model_digest", &self.model_digest),
            kv("estop_latched", self.estop_latched),
        ];
        values.extend(
            self.vetoes
                .iter()
                .map(|(reason, n)| kv(&format!("vetoes.{reason}"), n)),
        );
        values.extend(
            self.reasons
                .iter()
                .map(|(reason, n)| kv(&format!("reasons.{reason}"), n)),
        );
        values.extend(
            self.gate
                .iter()
                .map(|(name, n)| kv(&format!("gate.{name}"), n)),
        );
        values.extend(
            self.inputs
                .iter()
                .map(|(name, n)| kv(&format!("inputs.{name}"), n)),
        );
        DiagnosticArray {
            header: Header {
                stamp: Time::from_nanos(stamp_ns),
                frame_id: String::new(),
            },
            status: vec![DiagnosticStatus {
                level,
                name: "reflex: control loop".into(),
                message: message.into(),
                hardware_id: hardware_id.into(),
                values,
            }],
        }
    }
}

/// `$ROS_DOMAIN_ID` (default 0), checked before a middleware reads it (rcl panics inside r2r
/// on a bad value; RustDDS would take another domain).
pub fn ros_domain_id() -> Result<u16, String> {
    match std::env::var("ROS_DOMAIN_ID") {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<u16>() {
            Ok(d) if d <= 232 => Ok(d),
            _ => Err(format!(
                "ROS_DOMAIN_ID={v:?}: expected a number 0-232 (unset it for domain 0)"
            )),
        },
        _ => Ok(0),
    }
}

/// Whether discovery stays on this host: `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` (Jazzy) or
/// `ROS_LOCALHOST_ONLY=1` (Humble's, deprecated in Jazzy); `SUBNET`, `SYSTEM_DEFAULT` or unset
/// use every interface. rcl reads these itself; the `dds` adapter follows them through this.
pub fn discovery_localhost_only() -> Result<bool, String> {
    let range = std::env::var("ROS_AUTOMATIC_DISCOVERY_RANGE").unwrap_or_default();
    match range.trim() {
        "LOCALHOST" => Ok(true),
        "" | "SUBNET" | "SYSTEM_DEFAULT" => {
            Ok(std::env::var("ROS_LOCALHOST_ONLY").is_ok_and(|v| v.trim() == "1"))
        }
        other => Err(format!(
            "ROS_AUTOMATIC_DISCOVERY_RANGE={other:?}: the dds adapter supports LOCALHOST and SUBNET (OFF needs static peers, which it does not have); use --io ros2 for the others"
        )),
    }
}

/// Header stamps of what Reflex publishes: the wall clock (ROS time without `use_sim_time`).
/// Reflex's own timing never uses message stamps: inputs are stamped on reception with the
/// monotonic clock, so a jump of the wall clock cannot make stale data look fresh.
pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kv(key: &str, value: impl std::fmt::Display) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.to_string(),
    }
}

/// What the actuator gate's `command` becomes on `/cmd_vel`: zero whenever the verdict
/// removed drive power (and for the gate's own zero).
pub fn command_twist(command: &reflex_core::CommandFrame) -> TwistMsg {
    if command.drive_enabled {
        twist_of(command.base)
    } else {
        twist_of(reflex_safety::Twist::default())
    }
}

/// [`command_twist`] as geometry_msgs/TwistStamped, stamped `stamp_ns` (the send time, ROS time).
pub fn command_twist_stamped(
    command: &reflex_core::CommandFrame,
    stamp_ns: u64,
    frame_id: &str,
) -> TwistStampedMsg {
    TwistStampedMsg {
        header: Header {
            stamp: Time::from_nanos(stamp_ns),
            frame_id: frame_id.into(),
        },
        twist: command_twist(command),
    }
}

/// The base command a verdict becomes on `/cmd_vel`.
pub fn twist_of(base: reflex_safety::Twist) -> TwistMsg {
    TwistMsg {
        linear: Vector3 {
            x: base.vx_mps,
            y: base.vy_mps,
            z: 0.0,
        },
        angular: Vector3 {
            x: 0.0,
            y: 0.0,
            z: base.wz_radps,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked_and_mapped_to_dds() {
        assert!(Topics::default().validate().is_ok());
        let bad = Topics {
            scan: "/scan topic".into(),
            ..Topics::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("ros.topics.scan"), "{err}");
        assert_eq!(Topics::dds_name("/", "/scan"), "rt/scan");
        assert_eq!(Topics::dds_name("/robot1", "scan"), "rt/robot1/scan");
        assert_eq!(
            type_names::dds(type_names::LASER_SCAN),
            "sensor_msgs::msg::dds_::LaserScan_"
        );
    }

    fn demo_manifest() -> reflex_policy::PolicyManifest {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/demo/reflex-demo-vla");
        reflex_policy::PolicyPackage::open(&dir).unwrap().manifest
    }

    #[test]
    fn an_arm_policy_observes_measured_joints_and_never_a_guessed_state() {
        let pkg = reflex_policy::PolicyPackage::open(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/demo/reflex-demo-arm-reach"),
        )
        .unwrap();
        let m = pkg.manifest;
        let shape = reflex_core::actions::RobotShape {
            has_base: false,
            joints: ["shoulder", "elbow", "wrist"].map(String::from).to_vec(),
            has_gripper: true,
        };
        let (_, sources) = m.resolve(&shape).unwrap();
        let js = |names: &[&str], pos: &[f64]| JointState {
            name: names.iter().map(|s| s.to_string()).collect(),
            position: pos.to_vec(),
            ..JointState::default()
        };
        let mut st = PortState::new(&m, 8, shape.joints.clone())
            .with_state_sources(sources, Some("gripper".into()));
        let mut frame = reflex_core::SensorFrame::new(8, 3);
        let mut obs = m.observation();
        let image = Image {
            height: 64,
            width: 64,
            encoding: "rgb8".into(),
            step: 64 * 3,
            data: vec![120; 64 * 64 * 3],
            ..Image::default()
        };
        // A camera frame but no joint state yet: no observation (the policy is not run).
        st.begin_step(1_000, 0);
        st.on_image(1, &image, 1_000);
        st.on_image(0, &image, 1_000);
        assert!(!st.finish_step(&mut frame, &mut obs));
        assert_eq!(st.stats.state_unavailable, 1);
        // The arm's joints, then the gripper in its own message (a gripper driver's).
        st.on_joint_state(
            &js(&["wrist", "shoulder", "elbow"], &[0.3, 0.1, 0.2]),
            2_000,
        );
        let gripper = js(&["gripper"], &[0.04]);
        st.on_joint_state(&gripper, 2_000);
        assert_eq!(
            st.stats.joint_states_refused, 0,
            "the gripper's own message is not a bad arm message"
        );
        st.begin_step(3_000, 0);
        st.on_image(1, &image, 3_000);
        st.on_image(0, &image, 3_000);
        assert!(st.finish_step(&mut frame, &mut obs));
        assert_eq!(obs.state, [0.1, 0.2, 0.3, 0.04]);
        // A NaN gripper is refused; once the gripper reading is older than the timeout the
        // state is unavailable again, although the arm's joints keep coming.
        st.on_joint_state(&js(&["gripper"], &[f64::NAN]), 4_000);
        assert_eq!(st.stats.joint_states_refused, 1);
        let later = 3_000 + DEFAULT_ODOM_TIMEOUT_NS + 1;
        st.on_joint_state(
            &js(&["wrist", "shoulder", "elbow"], &[0.3, 0.1, 0.2]),
            later,
        );
        st.begin_step(later, 0);
        st.on_image(1, &image, later);
        st.on_image(0, &image, later);
        assert!(!st.finish_step(&mut frame, &mut obs));
        assert_eq!(st.stats.state_unavailable, 2);
        assert_eq!(st.stats.camera_unavailable, 0);
    }

    #[test]
    fn an_instruction_the_package_has_no_embedding_for_stops_observations() {
        // tiny-language: no camera, so a joint state triggers each observation.
        let pkg = reflex_policy::PolicyPackage::open(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/demo/tiny-language"),
        )
        .unwrap();
        let m = pkg.manifest;
        let shape = reflex_core::actions::RobotShape {
            has_base: false,
            joints: ["shoulder", "elbow", "wrist"].map(String::from).to_vec(),
            has_gripper: true,
        };
        let (_, sources) = m.resolve(&shape).unwrap();
        let mut st = PortState::new(&m, 8, shape.joints.clone())
            .with_state_sources(sources, Some("gripper".into()));
        let mut obs = m.observation();
        let step = |st: &mut PortState, obs: &mut reflex_core::Observation, t: u64| {
            let js = JointState {
                name: ["shoulder", "elbow", "wrist", "gripper"]
                    .map(String::from)
                    .to_vec(),
                position: vec![0.1, 0.2, 0.3, 0.04],
                ..JointState::default()
            };
            st.on_joint_state(&js, t);
            st.begin_step(t, 0);
            st.finish_step(&mut reflex_core::SensorFrame::new(8, 3), obs)
        };
        // No instruction yet: the policy is not run (the robot does not move).
        assert!(!step(&mut st, &mut obs, 1_000));
        assert_eq!(st.stats.instruction_unavailable, 1);
        st.on_instruction("Open the gripper.");
        assert!(step(&mut st, &mut obs, 2_000));
        assert_eq!(obs.instruction, [2]);
        // An instruction the package does not know replaces it: no observation, never the
        // previous task carried on.
        st.on_instruction("wave hello");
        assert!(!step(&mut st, &mut obs, 3_000));
        assert_eq!(
            (
                st.stats.instructions_unknown,
                st.stats.instruction_unavailable
            ),
            (1, 2)
        );
        st.on_instruction("raise the arm");
        assert!(step(&mut st, &mut obs, 4_000));
        assert_eq!(obs.instruction, [0]);
    }

    #[test]
    fn two_cameras_are_bound_by_input_name_and_a_silent_one_stops_observations() {
        let m = reflex_policy::PolicyPackage::open(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/demo/reflex-demo-arm-reach"),
        )
        .unwrap()
        .manifest;
        // [ros.cameras] binds each image input's topic; a missing or unknown key is refused.
        let mut ros = crate::RosConfig::default();
        let err = ros.camera_topics(&m).unwrap_err();
        assert!(
            err.contains("image input `front` has no topic") && err.contains("fix: add `front"),
            "{err}"
        );
        ros.cameras
            .insert("front".into(), "/front/image_raw".into());
        ros.cameras
            .insert("wrist".into(), "/wrist/image_raw".into());
        assert_eq!(
            ros.camera_topics(&m).unwrap(),
            ["/front/image_raw", "/wrist/image_raw"]
        );
        ros.cameras.insert("side".into(), "/side/image_raw".into());
        let err = ros.camera_topics(&m).unwrap_err();
        assert!(
            err.contains("ros.cameras.side") && err.contains("no image input `side`"),
            "{err}"
        );
        ros.cameras.remove("side");
        // Both views from one camera: refused, naming both inputs and the topic.
        ros.cameras
            .insert("wrist".into(), "/front/image_raw".into());
        let err = ros.camera_topics(&m).unwrap_err();
        assert!(
            err.contains("`front` and `wrist`")
                && err.contains("/front/image_raw")
                && err.contains("fix: bind each input"),
            "{err}"
        );
        ros.cameras.insert("wrist".into(), "bad topic".into());
        assert!(
            ros.camera_topics(&m)
                .unwrap_err()
                .contains("ros.cameras.wrist")
        );
        // One camera: topics.image without [ros.cameras].
        let one = demo_manifest();
        assert_eq!(
            crate::RosConfig::default().camera_topics(&one).unwrap(),
            ["/camera/image_raw"]
        );

        let shape = reflex_core::actions::RobotShape {
            has_base: false,
            joints: ["shoulder", "elbow", "wrist"].map(String::from).to_vec(),
            has_gripper: true,
        };
        let (_, sources) = m.resolve(&shape).unwrap();
        let mut st = PortState::new(&m, 8, shape.joints.clone())
            .with_state_sources(sources, Some("gripper".into()));
        let mut frame = reflex_core::SensorFrame::new(8, 3);
        let mut obs = m.observation();
        let joints = JointState {
            name: ["shoulder", "elbow", "wrist", "gripper"]
                .map(String::from)
                .to_vec(),
            position: vec![0.1, 0.2, 0.3, 0.04],
            ..JointState::default()
        };
        let frame_of = |w: u32, h: u32, encoding: &str| Image {
            height: h,
            width: w,
            encoding: encoding.into(),
            step: w * 3,
            data: vec![120; (w * h * 3) as usize],
            ..Image::default()
        };
        let front = frame_of(640, 480, "rgb8");
        let wrist = frame_of(320, 240, "bgr8");
        let ms = 1_000_000;
        // Front camera and joints, but the wrist camera has never sent: no observation.
        st.begin_step(10 * ms, 0);
        st.on_joint_state(&joints, 10 * ms);
        st.on_image(0, &front, 10 * ms);
        assert!(!st.finish_step(&mut frame, &mut obs));
        assert_eq!(st.stats.camera_unavailable, 1);
        // Both: an observation, each camera in its input's layout and dtype.
        st.begin_step(20 * ms, 0);
        st.on_joint_state(&joints, 20 * ms);
        st.on_image(1, &wrist, 20 * ms);
        st.on_image(0, &front, 20 * ms);
        assert!(st.finish_step(&mut frame, &mut obs));
        assert!(
            matches!(&obs.images[0], reflex_policy::ImageData::U8(d) if d.len() == 3 * 64 * 64)
        );
        assert!(
            matches!(&obs.images[1], reflex_policy::ImageData::F32(d) if d.len() == 48 * 48 * 3)
        );
        // The wrist camera falls silent: past camera_timeout_ms, frames of the front camera no
        // longer make observations (the policy would see a frozen wrist view).
        let late = 20 * ms + DEFAULT_CAMERA_TIMEOUT_NS + ms;
        st.begin_step(late, 0);
        st.on_joint_state(&joints, late);
        st.on_image(0, &front, late);
        assert!(!st.finish_step(&mut frame, &mut obs));
        assert_eq!(st.stats.camera_unavailable, 2);
        // A frame of the wrist camera alone is no trigger; with the next front frame, again one.
        st.on_image(1, &wrist, late);
        assert!(!st.finish_step(&mut frame, &mut obs));
        st.on_image(0, &front, late);
        assert!(st.finish_step(&mut frame, &mut obs));
        // A mono8 frame is refused and counted, nothing written.
        st.on_image(1, &frame_of(4, 4, "mono8"), late);
        assert_eq!(st.stats.images_refused, 1);
        // Observations leave through a triple buffer: the next step may fill another buffer
        // than the one current when a frame arrived. Each observation made carries every
        // camera's latest frame, whichever buffer it is built in (here: a fresh one that never
        // saw the dark wrist frame arrive).
        let dark_wrist = Image {
            data: vec![5; 160 * 120 * 3],
            ..frame_of(160, 120, "bgr8")
        };
        st.on_image(1, &dark_wrist, late);
        let mut other = m.observation();
        st.on_image(0, &front, late);
        assert!(st.finish_step(&mut frame, &mut other));
        let reflex_policy::ImageData::F32(w) = &other.images[1] else {
            panic!("wrist is float32")
        };
        let want = (5.0 / 255.0 - 0.485) / 0.229;
        assert!((w[0] - want).abs() < 1e-4, "{} vs {want}", w[0]);
        assert!(
            matches!(&other.images[0], reflex_policy::ImageData::U8(d) if d[32 * 64 + 32] == 120)
        );
    }

    #[test]
    fn joint_states_are_matched_by_name_and_incomplete_ones_refused() {
        let mut st = PortState::new(&demo_manifest(), 8, vec!["elbow".into(), "shoulder".into()]);
        let js = |names: &[&str], pos: &[f64]| JointState {
            name: names.iter().map(|s| s.to_string()).collect(),
            position: pos.to_vec(),
            ..JointState::default()
        };
        st.on_joint_state(&js(&["shoulder", "elbow"], &[0.5, -1.0]), 7);
        assert_eq!(st.joint_positions, [-1.0, 0.5]);
        assert_eq!(st.joint_stamp_ns, 7);
        st.on_joint_state(&js(&["shoulder"], &[0.1]), 9);
        st.on_joint_state(&js(&["shoulder", "elbow"], &[f64::NAN, 0.0]), 9);
        assert_eq!(st.stats.joint_states_refused, 2);
        assert_eq!(
            st.joint_stamp_ns, 7,
            "refused messages leave the state to age"
        );
    }

    #[test]
    fn scans_that_do_not_fit_are_refused_and_images_convert_to_nchw() {
        let m = demo_manifest();
        let mut st = PortState::new(&m, 4, vec![]);
        let scan = |n: usize| LaserScan {
            angle_increment: 0.1,
            range_max: 30.0,
            ranges: vec![1.0; n],
            ..LaserScan::default()
        };
        st.on_scan(&scan(5), 3);
        assert_eq!((st.stats.scans_refused, st.scan_stamp_ns), (1, 0));
        st.on_scan(&scan(4), 3);
        assert_eq!((st.stats.scans, st.scan_stamp_ns), (1, 3));
        // A 2×2 bgr8 image, top-left pixel blue: NCHW rgb with nearest-neighbour scaling.
        let img = Image {
            height: 2,
            width: 2,
            encoding: "bgr8".into(),
            step: 6,
            data: vec![255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Image::default()
        };
        let spec = m.input(reflex_policy::InputRole::Image).unwrap();
        let mut dst = reflex_policy::ImageData::U8(vec![7u8; 3 * 96 * 96]);
        assert!(write_image(&img, &mut dst, spec));
        let reflex_policy::ImageData::U8(d) = &dst else {
            unreachable!()
        };
        assert_eq!((d[0], d[96 * 96], d[2 * 96 * 96]), (0, 0, 255));
        let mono = Image {
            encoding: "mono8".into(),
            ..img
        };
        assert!(!write_image(&mono, &mut dst, spec));
    }

    #[test]
    fn a_service_reset_is_refused_while_the_estop_topic_is_pressed() {
        let mut st = PortState::new(&demo_manifest(), 8, vec![]);
        st.on_estop(true, 5);
        let err = st.on_reset_request().unwrap_err();
        assert!(err.contains("release it"), "{err}");
        assert_eq!((st.reset_seq, st.stats.resets_refused), (0, 1));
        st.on_estop(false, 6);
        st.on_reset_request().unwrap();
        assert_eq!(st.reset_seq, 1);
        let d = LoopDiagnostics::from_port(&reflex_core::LoopStatus::default(), &st);
        let msg = d.to_msg(0, "/reflex");
        let value = |k: &str| {
            msg.status[0]
                .values
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(value("inputs.estop_messages").as_deref(), Some("2"));
        assert_eq!(value("inputs.resets_refused").as_deref(), Some("1"));
    }

    #[test]
    fn diagnostics_name_every_reason_the_loop_gave_while_it_runs() {
        use reflex_safety::{Reason, Reasons};
        let st = PortState::new(&demo_manifest(), 8, vec![]);
        let status = reflex_core::LoopStatus::default();
        let mut held = Reasons::empty();
        held.insert(Reason::ArmKeepOut);
        held.insert(Reason::JointVelocityLimit);
        status.reasons.count(held);
        let mut stale = Reasons::empty();
        stale.insert(Reason::EstopSourceStale);
        status.reasons.count(stale);
        status.reasons.count(held);
        let msg = LoopDiagnostics::from_port(&status, &st).to_msg(0, "/reflex");
        let value = |k: &str| {
            msg.status[0]
                .values
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(value("reasons.arm_keep_out").as_deref(), Some("2"));
        assert_eq!(value("reasons.joint_velocity_limit").as_deref(), Some("2"));
        assert_eq!(value("reasons.estop_source_stale").as_deref(), Some("1"));
        // A reason never given is absent, not a row of zeros.
        assert_eq!(value("reasons.protective_zone"), None);
        assert_eq!(
            value("vetoes.ticks_slowed_or_stopped").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn diagnostics_say_what_matters_first() {
        let d = LoopDiagnostics {
            estop_latched: true,
            state: reflex_core::RunState::Stopping,
            ..LoopDiagnostics::default()
        };
        let msg = d.to_msg(1_500_000_000, "robot-1");
        assert_eq!(msg.status[0].level, 2);
        assert_eq!(
            msg.header.stamp,
            Time {
                sec: 1,
                nanosec: 500_000_000
            }
        );
    }

    #[test]
    fn saf_012_a_press_released_before_the_next_step_still_reaches_the_ingress() {
        use reflex_safety::{EstopReport, EstopSource};
        let ingress = std::sync::Arc::new(reflex_core::EstopIngress::default());
        let mut st = PortState::new(&demo_manifest(), 8, vec![]);
        st.attach_ingress(ingress.clone());
        st.on_estop(false, 1);
        // Pressed and released between two steps: the state says clear, the counter does not.
        st.on_estop(true, 2);
        st.on_estop(false, 3);
        let mut frame = reflex_core::SensorFrame::new(8, 0);
        let mut obs = st.manifest().observation();
        st.finish_step(&mut frame, &mut obs);
        assert!(matches!(
            frame.estop[EstopSource::RosTopic.index()],
            EstopReport::Clear(_)
        ));
        assert_eq!(ingress.presses()[EstopSource::RosTopic.index()], 1);
        assert_eq!((ingress.total(), st.stats.estop_presses), (1, 1));
        // A held press is one edge, not one per message.
        st.on_estop(true, 4);
        st.on_estop(true, 5);
        assert_eq!(ingress.total(), 2);
    }

    #[test]
    fn saf_012_one_state_per_publisher_and_device() {
        use reflex_safety::{EstopReport, EstopSource, Monotonic};
        let mut st = PortState::new(&demo_manifest(), 8, vec![])
            .with_estop_devices(vec![EstopSource::RosTopic, EstopSource::Hardware]);
        let mut frame = reflex_core::SensorFrame::new(8, 0);
        let mut obs = st.manifest().observation();
        let report = |st: &mut PortState, frame: &mut reflex_core::SensorFrame, obs: &mut _| {
            st.finish_step(frame, obs);
            (
                frame.estop[EstopSource::RosTopic.index()],
                frame.estop[EstopSource::Hardware.index()],
            )
        };
        // Nothing reported: both sources unknown (the robot stays stopped).
        assert_eq!(
            report(&mut st, &mut frame, &mut obs),
            (EstopReport::Unknown, EstopReport::Unknown)
        );
        // Two pendants on the ROS topic: A presses, B keeps saying clear — B cannot overwrite A.
        st.on_estop_from(0, 0xA, true, 10);
        st.on_estop_from(0, 0xB, false, 11);
        st.on_estop_from(1, 0, false, 12);
        assert_eq!(
            report(&mut st, &mut frame, &mut obs).0,
            EstopReport::Pressed(Monotonic::from_nanos(10))
        );
        assert!(
            st.on_reset_request().is_err(),
            "a reset is refused while A holds it"
        );
        // A releases; B then falls silent: the source is as old as B's last report, so the
        // safety layer's max_age turns a dead publisher into a stale (latched) source.
        st.on_estop_from(0, 0xA, false, 20);
        st.on_estop_from(0, 0xA, false, 30);
        st.on_estop_from(1, 0, false, 30);
        let (ros, hw) = report(&mut st, &mut frame, &mut obs);
        assert_eq!(ros, EstopReport::Clear(Monotonic::from_nanos(11)));
        assert_eq!(hw, EstopReport::Clear(Monotonic::from_nanos(30)));
        assert_eq!(st.stats.estop_writers, 3);
    }

    #[test]
    fn saf_012_a_press_wins_over_a_silent_device_and_a_full_table_keeps_every_press() {
        use reflex_safety::{EstopReport, EstopSource, Monotonic};
        let m = demo_manifest();
        let mut st = PortState::new(&m, 8, vec![])
            .with_estop_devices(vec![EstopSource::Hardware, EstopSource::Hardware]);
        st.on_estop_from(1, 7, true, 5);
        let mut frame = reflex_core::SensorFrame::new(8, 0);
        let mut obs = m.observation();
        st.finish_step(&mut frame, &mut obs);
        assert_eq!(
            frame.estop[EstopSource::Hardware.index()],
            EstopReport::Pressed(Monotonic::from_nanos(5)),
            "device 1's press, though device 0 never reported"
        );
        // 40 publishers come and go on one topic; a press held by one of them, and one made by
        // a newcomer after the table is full, both stay visible.
        let mut st = PortState::new(&m, 8, vec![]);
        st.on_estop_from(0, 1000, true, 1);
        for k in 0..40 {
            st.on_estop_from(0, k, false, 10 + k);
        }
        st.on_estop_from(0, 2000, true, 100);
        st.on_estop_from(0, 1000, false, 101);
        assert!(st.any_pressed(), "the newcomer's press is kept");
        assert!(st.on_reset_request().is_err());
        st.on_estop_from(0, 2000, false, 102);
        assert!(!st.any_pressed());
    }

    fn odom(vx: f64, stamp_ns: u64) -> Odometry {
        let mut o = Odometry {
            header: Header {
                stamp: Time::from_nanos(stamp_ns),
                frame_id: "odom".into(),
            },
            child_frame_id: "base_link".into(),
            ..Odometry::default()
        };
        o.twist.twist.linear.x = vx;
        o.twist.twist.angular.z = 0.25;
        o
    }

    #[test]
    fn odometry_feeds_the_frame_and_bad_or_stale_messages_are_refused() {
        let m = demo_manifest();
        let mut st = PortState::new(&m, 8, vec![]);
        let mut frame = reflex_core::SensorFrame::new(8, 0);
        let mut obs = m.observation();
        st.finish_step(&mut frame, &mut obs);
        assert_eq!(
            frame.odom, None,
            "no odometry yet: none (the command stands in)"
        );
        // Clocks not shared (no bound): the header stamp is not read, even a zero one.
        st.on_odom(&odom(0.75, 0), 40);
        st.on_odom(&odom(f64::NAN, 0), 41);
        st.finish_step(&mut frame, &mut obs);
        let t = frame.odom.expect("accepted");
        assert_eq!(
            (t.vx_mps, t.wz_radps, frame.odom_stamp_ns),
            (0.75, 0.25, 40)
        );
        assert_eq!((st.stats.odometry, st.stats.odometry_refused), (1, 1));

        // Clocks shared, 100 ms bound: old, future, zero stamps refused (odometry and scans);
        // an accepted message is as old as its header says (its lag counts in its age).
        let (wall, now) = (1_000_000_000_000, 5_000_000_000);
        let mut st = PortState::new(&m, 8, vec![]).with_max_stamp_age(Some(100_000_000));
        st.begin_step(now, wall);
        st.on_odom(&odom(0.5, wall - 50_000_000), now);
        st.on_odom(&odom(2.0, wall - 150_000_000), now);
        st.on_odom(&odom(2.0, wall + 150_000_000), now);
        st.on_odom(&odom(2.0, 0), now);
        st.finish_step(&mut frame, &mut obs);
        assert_eq!(frame.odom.map(|t| t.vx_mps), Some(0.5));
        assert_eq!(
            frame.odom_stamp_ns,
            now - 50_000_000,
            "made 50 ms before reception"
        );
        assert_eq!((st.stats.odometry_refused, st.stats.stale_stamps), (3, 3));
        let scan = LaserScan {
            header: Header {
                stamp: Time::from_nanos(wall - 300_000_000),
                frame_id: "laser".into(),
            },
            angle_increment: 0.1,
            range_max: 30.0,
            ranges: vec![1.0; 4],
            ..LaserScan::default()
        };
        st.on_scan(&scan, now);
        assert_eq!((st.stats.scans_refused, st.scan_stamp_ns), (1, 0));
        assert_eq!(st.stats.stale_stamps, 4);
        // The policy's state is the measured velocity once there is odometry.
        st.on_image(
            0,
            &Image {
                height: 1,
                width: 1,
                encoding: "rgb8".into(),
                step: 3,
                data: vec![0, 0, 0],
                ..Image::default()
            },
            now,
        );
        assert!(st.finish_step(&mut frame, &mut obs));
        assert_eq!(obs.state[0], 0.5);
        // Silent past odom_timeout_ms (default 200 ms): not used any more, counted once.
        st.begin_step(now + 260_000_000, wall + 260_000_000);
        st.finish_step(&mut frame, &mut obs);
        st.finish_step(&mut frame, &mut obs);
        assert_eq!((frame.odom, st.stats.odometry_lapses), (None, 1));
    }

    #[test]
    fn the_cmd_vel_type_follows_the_distribution_and_stamps_the_send_time() {
        assert_eq!(CmdVelType::for_distro("humble"), Ok(CmdVelType::Twist));
        assert_eq!(
            CmdVelType::for_distro("jazzy"),
            Ok(CmdVelType::TwistStamped)
        );
        let err = CmdVelType::for_distro("ardent2").unwrap_err();
        assert!(err.contains("cmd_vel_type"), "{err}");
        let mut command = reflex_core::CommandFrame::zero();
        command.drive_enabled = true;
        command.base.vx_mps = 0.4;
        let m = command_twist_stamped(&command, 1_500_000_000, "base_link");
        assert_eq!(
            (m.header.stamp.sec, m.header.stamp.nanosec),
            (1, 500_000_000)
        );
        assert_eq!(
            (m.twist.linear.x, m.header.frame_id.as_str()),
            (0.4, "base_link")
        );
        command.drive_enabled = false;
        assert_eq!(command_twist_stamped(&command, 0, "").twist.linear.x, 0.0);
    }

    #[test]
    fn saf_012_a_device_topic_with_publishers_that_cannot_be_told_apart_is_unknown() {
        use reflex_safety::{EstopReport, EstopSource, Monotonic};
        let m = demo_manifest();
        // The ros2 adapter: every message comes as publisher 0; the graph says how many there are.
        let mut st = PortState::new(&m, 8, vec![]).with_estop_devices(vec![EstopSource::RosTopic]);
        let mut frame = reflex_core::SensorFrame::new(8, 0);
        let mut obs = m.observation();
        st.set_unattributed_publishers(0, 1);
        st.on_estop_from(0, 0, false, 5);
        st.finish_step(&mut frame, &mut obs);
        assert_eq!(
            frame.estop[EstopSource::RosTopic.index()],
            EstopReport::Clear(Monotonic::from_nanos(5))
        );
        // A second pendant joins: its "clear" could hide the first one's press, so the device
        // is unknown (the robot stays stopped) and a reset is refused, naming the fix.
        st.set_unattributed_publishers(0, 2);
        st.on_estop_from(0, 0, false, 6);
        st.finish_step(&mut frame, &mut obs);
        assert_eq!(
            frame.estop[EstopSource::RosTopic.index()],
            EstopReport::Unknown
        );
        let err = st.on_reset_request().unwrap_err();
        assert!(err.contains("own topic"), "{err}");
        assert_eq!(st.reset_seq, 0);
        // A press still wins (and latches).
        st.on_estop_from(0, 0, true, 7);
        st.finish_step(&mut frame, &mut obs);
        assert_eq!(
            frame.estop[EstopSource::RosTopic.index()],
            EstopReport::Pressed(Monotonic::from_nanos(7))
        );
        // One publisher left: its own word counts again.
        st.set_unattributed_publishers(0, 1);
        st.on_estop_from(0, 0, false, 8);
        st.finish_step(&mut frame, &mut obs);
        assert_eq!(
            frame.estop[EstopSource::RosTopic.index()],
            EstopReport::Clear(Monotonic::from_nanos(8))
        );
        st.on_reset_request().unwrap();
    }
}
