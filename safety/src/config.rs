//! Safety configuration: parsed by serde (stage 1), checked by [`SafetyConfig::validate`] (stage 2).
//!
//! Every error names the key under `[safety]` and the fix. The configuration is moved into
//! [`crate::Safety`] at construction and cannot be changed afterwards (SAF-008).

use serde::{Deserialize, Serialize};

use crate::types::{EstopSource, MAX_JOINTS};

/// Largest number of footprint polygon vertices; bounds the per-beam work.
pub const MAX_FOOTPRINT_VERTICES: usize = 16;
/// Vertices of the regular polygon that circumscribes a circular footprint (radius × 1.035).
pub const CIRCLE_FOOTPRINT_VERTICES: usize = 12;
/// Largest `lidar.min_points`; the k-th nearest point is tracked in a fixed array of this size.
pub const MAX_MIN_POINTS: u32 = 16;
/// Largest scan accepted by `lidar.max_beams` (a 0.1° 360° lidar has 3600 beams).
pub const MAX_BEAMS_LIMIT: usize = 16_384;

/// The `[safety]` table of the Reflex config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Nominal control period in ms (default 10). Ramps never use a longer step than this, so a
    /// late tick cannot turn into a larger velocity jump.
    #[serde(default = "default_control_period_ms")]
    pub control_period_ms: f64,
    pub estop: EstopConfig,
    /// Maximum age of a command per source (SAF-007).
    pub commands: CommandAges,
    /// A mobile base, if the robot has one; it requires `[safety.lidar]`.
    #[serde(default)]
    pub base: Option<BaseConfig>,
    #[serde(default)]
    pub lidar: Option<LidarConfig>,
    /// An arm (joints, gripper, Cartesian workspace), if the robot has one.
    #[serde(default)]
    pub arm: Option<ArmConfig>,
    /// Pins the config (SAF-014): [`crate::Safety::new`] refuses a config whose hash
    /// (`sha256:<hex>`, printed by `reflex check-config`) differs. Not part of the hash itself.
    #[serde(default, skip_serializing)]
    pub expected_hash: Option<String>,
}

fn default_control_period_ms() -> f64 {
    10.0
}

/// `[safety.estop]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstopConfig {
    /// IEC 60204-1 stop category while latched: 0 (remove power now), 1 (brake at the configured
    /// deceleration, then remove power), 2 (brake, then hold with power on).
    pub stop_category: u8,
    /// Sources that must report before the robot may move (SAF-002). Must include `watchdog`
    /// and `internal`, which the runtime itself drives.
    pub sources: Vec<EstopSourceConfig>,
    /// What lets the robot move again after a reset (SAF-013; a reset alone never does):
    /// `start_request` (default: an explicit start, `/reflex/start` or the `~/start` service) or
    /// `new_command` (a command produced after the reset).
    #[serde(default)]
    pub restart: Restart,
}

/// `[safety.estop] restart`: what follows a reset (SAF-013).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// An explicit start request after the reset.
    #[default]
    StartRequest,
    /// A command whose stamp is later than the reset (a fresh policy action, an operator's).
    NewCommand,
}

/// One `[[safety.estop.sources]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstopSourceConfig {
    pub name: EstopSource,
    /// Heartbeat: a "clear" report older than this (ms) latches the E-stop. Leave unset for
    /// event-only sources such as a transient-local ROS topic.
    #[serde(default)]
    pub max_age_ms: Option<f64>,
}

/// `[safety.commands]`: max age (ms) of a command from each source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAges {
    pub local_policy_max_age_ms: f64,
    pub cloud_max_age_ms: f64,
    pub operator_max_age_ms: f64,
}

/// Base kinematics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseKind {
    /// vx and wz only; a non-zero vy is clamped to zero.
    Differential,
    /// vx, vy, wz.
    Holonomic,
}

/// `[safety.base]`: mobile base limits and footprint (base frame: x forward, y left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseConfig {
    pub kind: BaseKind,
    pub max_vx_mps: f64,
    #[serde(default)]
    pub max_vy_mps: f64,
    pub max_wz_radps: f64,
    pub max_accel_x_mps2: f64,
    #[serde(default)]
    pub max_accel_y_mps2: f64,
    pub max_accel_wz_radps2: f64,
    /// Braking deceleration the drive guarantees (m/s²): used for stopping distances and
    /// category 1/2 stops. Must be > 0.
    pub brake_decel_mps2: f64,
    /// Rotational braking deceleration (rad/s²).
    pub brake_decel_wz_radps2: f64,
    /// Circular footprint centred on the base origin (m). Exactly one of this and
    /// `footprint_polygon_m` is set.
    #[serde(default)]
    pub footprint_radius_m: Option<f64>,
    /// Convex footprint polygon in the base frame (m), counter-clockwise or clockwise.
    #[serde(default)]
    pub footprint_polygon_m: Option<Vec<[f64; 2]>>,
    /// If set, measured base velocity (odometry) is a required input with this max age (ms).
    #[serde(default)]
    pub odometry_max_age_ms: Option<f64>,
}

/// Pose of a sensor in the base frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pose2 {
    pub x_m: f64,
    pub y_m: f64,
    pub yaw_rad: f64,
}

/// `[safety.lidar]`: proximity protection for the base (SAF-003/004/005).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LidarConfig {
    pub base_from_lidar: Pose2,
    /// Buffers are sized for this many beams at construction; a larger scan is invalid (stop).
    pub max_beams: usize,
    /// A scan older than this (ms) is stale (stop).
    pub max_age_ms: f64,
    /// Reaction time of the whole chain, sensor to brake (ms): the t_r of the S_p formula.
    pub reaction_time_ms: f64,
    /// Extra distance added to the stopping distance (m): sensor error plus intrusion margin.
    pub margin_m: f64,
    /// Depth of the slow-down zone beyond the protective zone (m); speed scales linearly to
    /// zero across it.
    pub slowdown_depth_m: f64,
    /// Points needed inside a zone before it triggers; one noisy beam never stops the robot.
    pub min_points: u32,
    /// Extra depth a triggered protective zone keeps until released (m).
    pub hysteresis_m: f64,
    /// Time the zone must stay clear before motion toward it is released again (ms).
    pub release_delay_ms: f64,
    /// Fraction of beams in the direction of motion that may be invalid before that motion
    /// stops (0..1).
    pub max_invalid_fraction: f64,
    /// Speed (m/s) at which a person may walk into the robot's path (ISO 13855 uses 1.6). The
    /// path ahead is widened on both sides by this speed × the stopping time, so someone about
    /// to step in front of the robot already counts. Set 0 only where nothing moves.
    pub intrusion_speed_mps: f64,
    /// SAF-019: the fixed cell's static returns (table legs, fences, the robot's own column),
    /// taught with `reflex teach-background`; allowed only on a lidar that does not move (no
    /// `[safety.base]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<BackgroundConfig>,
}

/// Largest `lidar.background.tolerance_m`: a wider band would hide a person standing just in
/// front of a taught object.
pub const MAX_BACKGROUND_TOLERANCE_M: f64 = 0.1;

/// `[safety.lidar.background]` (SAF-019): per beam, the nearest return of the cell's static
/// scene, taught from a recording of the empty cell (`reflex teach-background`). A return in
/// the band from `tolerance_m`/2 nearer to `tolerance_m` farther than its beam's background is
/// that object, not a person: it counts as no return (the taught range is the recording's
/// minimum, so live noise falls mostly beyond it). Any other return is a point, as without a
/// background: nearer (a person in front of the object) or farther (the object is gone and
/// whatever is behind it is seen). No return where the object stood is an invalid beam. When
/// more than `max_invalid_fraction` of the taught beams do not see their background (nor
/// anything nearer), the cell or the scanner moved and the arm stops
/// (`scan_background_mismatch`), as it does for a scan of another geometry or a scanner whose
/// `base_from_lidar` changed since teaching: re-teach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackgroundConfig {
    /// Where the scanner was when taught (`lidar.base_from_lidar` must still say this).
    pub base_from_lidar: Pose2,
    /// The taught scans' `angle_min` and `angle_increment` (rad); live scans must match.
    pub angle_min_rad: f64,
    pub angle_increment_rad: f64,
    /// The masked band around each background range (m), (0, 0.1]: from half of it nearer to
    /// all of it farther.
    pub tolerance_m: f64,
    /// One entry per beam (the taught scans' beam count): the background range (m), above
    /// `tolerance_m`, or 0 for a beam with no static return (it is never masked).
    pub ranges_m: Vec<f64>,
}

/// `[safety.arm]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    /// Joint states older than this (ms) are stale (stop).
    pub state_max_age_ms: f64,
    pub joints: Vec<JointLimits>,
    #[serde(default)]
    pub gripper: Option<GripperLimits>,
    /// Cartesian box (base frame) that end-effector targets are clamped into.
    #[serde(default)]
    pub workspace: Option<WorkspaceBox>,
    /// Following-error bound (rad, or m for prismatic joints; SAF-015): a joint measured
    /// further than this from the position it was last commanded to (blocked, pushed, or a
    /// drive not tracking) stops the arm where it is measured, and targets restart from there.
    /// Checked on a fresh joint state only (a stale one is its own stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_following_error: Option<f64>,
    /// Stall detection (SAF-018): a position-driven joint that its moving target keeps
    /// `min_error` or more ahead of it, one way, while it moves less than `min_error`, for
    /// `time_ms`, is held by something (a hand, a fixture): the arm stops where it is
    /// measured and latches, as for a following error. For a closed-loop policy that
    /// re-plans from the measured pose, whose targets never run `max_following_error` ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallConfig>,
    /// The arm's kinematic chain (SAF-016): with it, `workspace` holds every link and the tool,
    /// and no link may enter a `keep_out` box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinematics: Option<KinematicsConfig>,
    /// Boxes (arm base frame, m) that no link, the tool included, may enter (SAF-016).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_out: Vec<WorkspaceBox>,
    /// Speed and separation monitoring (SAF-017) against `[safety.lidar]`'s scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separation: Option<SeparationConfig>,
}

/// `[safety.arm.separation]`: speed and separation monitoring (ISO/TS 15066 idea, SAF-017).
/// Every point of `[safety.lidar]`'s scan is taken as a person standing there (a vertical line:
/// any height), and the arm's joint speeds are scaled so that the arm, braking at its joints'
/// `max_acceleration`, stops before someone walking toward it at `human_speed_mps` reaches
/// it: protective separation S_p = v_h·(T_r + T_s) + v_r·T_r + S_s + C. At or inside
/// S_p of a standing arm (v_h·T_r + C) the arm stops; it moves again, slowly at first, once
/// the separation grows. Requires `[safety.arm.kinematics]` (the links' capsules).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeparationConfig {
    /// The arm's base frame in the lidar's base frame (`lidar.base_from_lidar` places the
    /// lidar in that same frame): x, y and yaw; heights do not matter (people are vertical).
    /// The arm's base z axis must be vertical (a table or floor mount): a tilted or wall-mounted
    /// arm's links would be projected wrongly.
    pub base_from_arm: Pose2,
    /// How fast a person may approach (ISO 13855: 1.6 m/s walking, 2.0 m/s reaching).
    pub human_speed_mps: f64,
    /// Sensor to brake (ms): the scan period, one control tick, the drive's latency (T_r).
    /// The scan's age and one more tick are added every tick.
    pub reaction_time_ms: f64,
    /// C + Z (m): how far a person reaches past the point the lidar sees (ISO 13855's
    /// intrusion distance for a horizontal scan plane at height H: 1.2 − 0.4·H m, never below
    /// 0.85 m), plus the lidar's and the arm's position uncertainty.
    pub margin_m: f64,
}

/// `[safety.arm.kinematics]`: a URDF subset. From the arm's base frame (the frame of
/// `workspace` and `keep_out`) outward, one link per `[safety.arm] joints` entry, in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinematicsConfig {
    pub links: Vec<LinkConfig>,
    pub tool: ToolConfig,
}

/// A joint and the link it moves: `xyz_m`/`rpy_rad` place the joint's frame in the previous
/// joint's frame (URDF `<origin>`, fixed-axis roll-pitch-yaw), `axis` is its URDF `<axis>` in its
/// own frame, and the link from this joint to the next one (or the tool point) is a capsule of
/// `radius_m`: set it to the link's size plus a margin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub joint: String,
    #[serde(default, rename = "type")]
    pub kind: JointKind,
    pub xyz_m: [f64; 3],
    #[serde(default)]
    pub rpy_rad: [f64; 3],
    pub axis: [f64; 3],
    pub radius_m: f64,
}

/// URDF joint types Reflex models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JointKind {
    #[default]
    Revolute,
    Prismatic,
}

/// The tool point (gripper tip) in the last joint's frame, and a sphere around it that holds
/// the gripper and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    pub xyz_m: [f64; 3],
    pub radius_m: f64,
}

/// At most this many `keep_out` boxes (bounded work per tick).
pub const MAX_KEEP_OUT: usize = 16;

/// One `[[safety.arm.joints]]` entry; units are rad (revolute) or m (prismatic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointLimits {
    pub name: String,
    pub min_position: f64,
    pub max_position: f64,
    pub max_velocity: f64,
    pub max_acceleration: f64,
}

/// `[safety.arm] stall` (SAF-018).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StallConfig {
    /// How far (rad, or m for prismatic joints) the target must stay ahead of the joint, and
    /// the most it may move meanwhile. Above the drive's lag at low speed and the noise of its
    /// encoder; below `max_following_error`.
    pub min_error: f64,
    /// How long (ms) before that is a stall. Longer than the drive takes to start moving.
    pub time_ms: f64,
}

/// `[safety.arm.gripper]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GripperLimits {
    pub min_position: f64,
    pub max_position: f64,
}

/// `[safety.arm.workspace]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceBox {
    pub min_m: [f64; 3],
    pub max_m: [f64; 3],
}

/// A configuration the safety layer refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("safety config: `safety.{key}`: {problem}; fix: {fix}")]
pub struct ConfigError {
    /// The key below `[safety]`, e.g. `base.brake_decel_mps2`.
    pub key: String,
    pub problem: String,
    pub fix: String,
}

fn err(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn positive(key: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(err(
            key,
            format!("must be a finite number > 0, got {value}"),
            "set a positive value",
        ))
    }
}

fn non_negative(key: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(err(
            key,
            format!("must be a finite number >= 0, got {value}"),
            "set a value of 0 or more",
        ))
    }
}

impl SafetyConfig {
    /// Stage 2: semantic checks. Called by [`crate::Safety::new`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("control_period_ms", self.control_period_ms)?;
        self.validate_estop()?;
        positive(
            "commands.local_policy_max_age_ms",
            self.commands.local_policy_max_age_ms,
        )?;
        positive("commands.cloud_max_age_ms", self.commands.cloud_max_age_ms)?;
        positive(
            "commands.operator_max_age_ms",
            self.commands.operator_max_age_ms,
        )?;
        match (&self.base, &self.lidar) {
            (Some(base), Some(lidar)) => {
                if lidar.background.is_some() {
                    return Err(err(
                        "lidar.background",
                        "a taught background is for a scanner that stands still in a fixed cell, and this lidar rides on the mobile base (its scene moves as the base drives)",
                        "remove [safety.lidar.background], or mount a fixed scanner for an arm without a base",
                    ));
                }
                validate_base(base)?;
                validate_lidar(lidar, base)?;
            }
            (Some(_), None) => {
                return Err(err(
                    "lidar",
                    "a mobile base is configured without proximity protection",
                    "add a [safety.lidar] table for the base's lidar",
                ));
            }
            (None, Some(lidar)) => {
                if self.arm.as_ref().is_none_or(|a| a.separation.is_none()) {
                    return Err(err(
                        "lidar",
                        "a lidar is configured but neither [safety.base] nor [safety.arm.separation] uses it",
                        "add [safety.base] or [safety.arm.separation], or remove [safety.lidar]",
                    ));
                }
                validate_lidar_sensor(lidar)?;
            }
            (None, None) => {}
        }
        if let Some(arm) = &self.arm {
            validate_arm(arm)?;
            if let Some(separation) = &arm.separation {
                validate_separation(separation, arm, self.lidar.is_some())?;
            }
        }
        if self.base.is_none() && self.arm.is_none() {
            return Err(err(
                "base",
                "neither [safety.base] nor [safety.arm] is configured, so nothing may move",
                "describe the robot's base and/or arm",
            ));
        }
        Ok(())
    }

    fn validate_estop(&self) -> Result<(), ConfigError> {
        if self.estop.stop_category > 2 {
            return Err(err(
                "estop.stop_category",
                format!(
                    "IEC 60204-1 defines categories 0, 1 and 2, got {}",
                    self.estop.stop_category
                ),
                "set 0, 1 or 2",
            ));
        }
        if self.estop.sources.is_empty() {
            return Err(err(
                "estop.sources",
                "no E-stop source is configured",
                "list the sources, at least `watchdog` and `internal` (and `hardware` on a real robot)",
            ));
        }
        for (i, source) in self.estop.sources.iter().enumerate() {
            if self.estop.sources[..i]
                .iter()
                .any(|earlier| earlier.name == source.name)
            {
                return Err(err(
                    format!("estop.sources[{i}].name"),
                    format!("source `{}` is listed twice", source.name.name()),
                    "list each source once",
                ));
            }
            if let Some(age) = source.max_age_ms {
                positive(&format!("estop.sources[{i}].max_age_ms"), age)?;
            }
        }
        for required in [EstopSource::Watchdog, EstopSource::Internal] {
            if !self.estop.sources.iter().any(|s| s.name == required) {
                return Err(err(
                    "estop.sources",
                    format!(
                        "source `{}` is missing; the runtime reports its own faults through it",
                        required.name()
                    ),
                    format!(
                        "add {{ name = \"{}\" }} to safety.estop.sources",
                        required.name()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn validate_base(base: &BaseConfig) -> Result<(), ConfigError> {
    positive("base.max_vx_mps", base.max_vx_mps)?;
    positive("base.max_wz_radps", base.max_wz_radps)?;
    positive("base.max_accel_x_mps2", base.max_accel_x_mps2)?;
    positive("base.max_accel_wz_radps2", base.max_accel_wz_radps2)?;
    positive("base.brake_decel_mps2", base.brake_decel_mps2)?;
    positive("base.brake_decel_wz_radps2", base.brake_decel_wz_radps2)?;
    match base.kind {
        BaseKind::Holonomic => {
            positive("base.max_vy_mps", base.max_vy_mps)?;
            positive("base.max_accel_y_mps2", base.max_accel_y_mps2)?;
        }
        BaseKind::Differential => {
            non_negative("base.max_vy_mps", base.max_vy_mps)?;
            non_negative("base.max_accel_y_mps2", base.max_accel_y_mps2)?;
        }
    }
    if let Some(age) = base.odometry_max_age_ms {
        positive("base.odometry_max_age_ms", age)?;
    }
    base_footprint(base).map(|_| ())
}

/// The footprint as a convex polygon (counter-clockwise), from either footprint key.
pub(crate) fn base_footprint(base: &BaseConfig) -> Result<Vec<[f64; 2]>, ConfigError> {
    match (base.footprint_radius_m, &base.footprint_polygon_m) {
        (Some(_), Some(_)) => Err(err(
            "base.footprint_radius_m",
            "both footprint_radius_m and footprint_polygon_m are set",
            "keep exactly one of them",
        )),
        (None, None) => Err(err(
            "base.footprint_polygon_m",
            "the footprint is empty: neither footprint_radius_m nor footprint_polygon_m is set",
            "set footprint_radius_m = <m> or footprint_polygon_m = [[x, y], ...]",
        )),
        (Some(radius), None) => {
            positive("base.footprint_radius_m", radius)?;
            // Circumscribed regular polygon: conservative (never smaller than the circle).
            let n = CIRCLE_FOOTPRINT_VERTICES;
            let r = radius / (std::f64::consts::PI / n as f64).cos();
            Ok((0..n)
                .map(|i| {
                    let a = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
                    [r * a.cos(), r * a.sin()]
                })
                .collect())
        }
        (None, Some(polygon)) => {
            let key = "base.footprint_polygon_m";
            if polygon.len() < 3 {
                return Err(err(
                    key,
                    format!(
                        "a footprint polygon needs at least 3 vertices, got {}",
                        polygon.len()
                    ),
                    "list the corners of the robot outline",
                ));
            }
            if polygon.len() > MAX_FOOTPRINT_VERTICES {
                return Err(err(
                    key,
                    format!(
                        "{} vertices is more than the {MAX_FOOTPRINT_VERTICES} supported",
                        polygon.len()
                    ),
                    "simplify the outline (a convex hull of a few corners)",
                ));
            }
            if polygon.iter().flatten().any(|v| !v.is_finite()) {
                return Err(err(
                    key,
                    "a vertex is not a finite number",
                    "use finite coordinates in m",
                ));
            }
            let mut poly = polygon.clone();
            let area2: f64 = (0..poly.len())
                .map(|i| {
                    let a = poly[i];
                    let b = poly[(i + 1) % poly.len()];
                    a[0] * b[1] - b[0] * a[1]
                })
                .sum();
            if area2.abs() < 1e-9 {
                return Err(err(
                    key,
                    "the footprint polygon has zero area",
                    "list the corners of the robot outline",
                ));
            }
            if area2 < 0.0 {
                poly.reverse();
            }
            let n = poly.len();
            for i in 0..n {
                let a = poly[i];
                let b = poly[(i + 1) % n];
                let c = poly[(i + 2) % n];
                let cross = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]);
                if cross < -1e-12 {
                    return Err(err(
                        key,
                        format!(
                            "the footprint polygon is not convex at vertex {}",
                            (i + 1) % n
                        ),
                        "use the convex hull of the robot outline",
                    ));
                }
            }
            // The base origin must lie inside: rotation sweeps are computed about it.
            for i in 0..n {
                let a = poly[i];
                let b = poly[(i + 1) % n];
                if (b[0] - a[0]) * (-a[1]) - (b[1] - a[1]) * (-a[0]) <= 0.0 {
                    return Err(err(
                        key,
                        "the base origin (0, 0) is not strictly inside the footprint",
                        "express the polygon in the base frame, around the rotation centre",
                    ));
                }
            }
            Ok(poly)
        }
    }
}

fn validate_lidar(lidar: &LidarConfig, base: &BaseConfig) -> Result<(), ConfigError> {
    validate_lidar_sensor(lidar)?;
    let pose = lidar.base_from_lidar;
    // The protective zone is the footprint swept over the stopping distance plus this margin;
    // with no margin it shrinks to the bare footprint for a stationary robot.
    if !(lidar.margin_m.is_finite() && lidar.margin_m > 0.0) {
        return Err(err(
            "lidar.margin_m",
            format!(
                "the protective zone must be larger than the footprint, but margin_m = {}",
                lidar.margin_m
            ),
            "set margin_m > 0: sensor error plus a safety margin (e.g. 0.05)",
        ));
    }
    let footprint = base_footprint(base)?;
    let lidar_in_footprint = footprint.iter().enumerate().all(|(i, a)| {
        let b = footprint[(i + 1) % footprint.len()];
        (b[0] - a[0]) * (pose.y_m - a[1]) - (b[1] - a[1]) * (pose.x_m - a[0]) >= 0.0
    });
    if !lidar_in_footprint {
        return Err(err(
            "lidar.base_from_lidar",
            "the lidar lies outside the footprint, so the footprint does not cover the robot",
            "enlarge the footprint to include the lidar mount",
        ));
    }
    Ok(())
}

/// What every user of the lidar needs: a finite pose and sane beam, age and noise settings.
/// (The zone keys — reaction time, margin, slow-down, hysteresis, release delay, intrusion
/// speed — are the base's, checked with it; an arm-only robot still sets them, unused: SAF-017
/// has its own in `[safety.arm.separation]`.)
fn validate_lidar_sensor(lidar: &LidarConfig) -> Result<(), ConfigError> {
    let pose = lidar.base_from_lidar;
    if !(pose.x_m.is_finite() && pose.y_m.is_finite() && pose.yaw_rad.is_finite()) {
        return Err(err(
            "lidar.base_from_lidar",
            "the lidar pose has a non-finite value",
            "set x_m, y_m, yaw_rad to finite numbers",
        ));
    }
    if lidar.max_beams == 0 || lidar.max_beams > MAX_BEAMS_LIMIT {
        return Err(err(
            "lidar.max_beams",
            format!(
                "must be between 1 and {MAX_BEAMS_LIMIT}, got {}",
                lidar.max_beams
            ),
            "set the beam count of the lidar (e.g. 1081)",
        ));
    }
    positive("lidar.max_age_ms", lidar.max_age_ms)?;
    non_negative("lidar.reaction_time_ms", lidar.reaction_time_ms)?;
    non_negative("lidar.slowdown_depth_m", lidar.slowdown_depth_m)?;
    non_negative("lidar.hysteresis_m", lidar.hysteresis_m)?;
    non_negative("lidar.release_delay_ms", lidar.release_delay_ms)?;
    if lidar.min_points == 0 || lidar.min_points > MAX_MIN_POINTS {
        return Err(err(
            "lidar.min_points",
            format!(
                "must be between 1 and {MAX_MIN_POINTS}, got {}",
                lidar.min_points
            ),
            "set 2 or 3 so that one noisy beam does not stop the robot",
        ));
    }
    non_negative("lidar.intrusion_speed_mps", lidar.intrusion_speed_mps)?;
    if !(lidar.max_invalid_fraction.is_finite() && (0.0..1.0).contains(&lidar.max_invalid_fraction))
    {
        return Err(err(
            "lidar.max_invalid_fraction",
            format!("must be in [0, 1), got {}", lidar.max_invalid_fraction),
            "set e.g. 0.2",
        ));
    }
    if let Some(background) = &lidar.background {
        validate_background(background, lidar.max_beams)?;
        let (a, b) = (background.base_from_lidar, lidar.base_from_lidar);
        if !((a.x_m - b.x_m).abs() <= 1e-9
            && (a.y_m - b.y_m).abs() <= 1e-9
            && (a.yaw_rad - b.yaw_rad).abs() <= 1e-9)
        {
            return Err(err(
                "lidar.background.base_from_lidar",
                format!(
                    "the background was taught with the scanner at {a:?} and lidar.base_from_lidar now says {b:?}: the scanner was moved or recalibrated since, and the taught ranges belong to where it was"
                ),
                "teach it again from a recording of the empty cell: reflex teach-background --recording FILE.mcap --config CONFIG",
            ));
        }
    }
    Ok(())
}

/// SAF-019's taught background: its geometry, band and ranges.
fn validate_background(bg: &BackgroundConfig, max_beams: usize) -> Result<(), ConfigError> {
    let reteach = "teach it again from a recording of the empty cell: reflex teach-background --recording FILE.mcap --config CONFIG";
    if !(bg.angle_min_rad.is_finite()
        && bg.angle_increment_rad.is_finite()
        && bg.angle_increment_rad != 0.0)
    {
        return Err(err(
            "lidar.background.angle_increment_rad",
            format!(
                "the taught scan geometry must be finite with a non-zero increment, got angle_min_rad {} and angle_increment_rad {}",
                bg.angle_min_rad, bg.angle_increment_rad
            ),
            reteach,
        ));
    }
    if !(bg.tolerance_m.is_finite()
        && bg.tolerance_m > 0.0
        && bg.tolerance_m <= MAX_BACKGROUND_TOLERANCE_M)
    {
        return Err(err(
            "lidar.background.tolerance_m",
            format!(
                "must be in (0, {MAX_BACKGROUND_TOLERANCE_M}] m (a wider band hides a person standing just in front of a taught object), got {}",
                bg.tolerance_m
            ),
            "set the scanner's range noise plus a little, e.g. 0.03",
        ));
    }
    if bg.ranges_m.is_empty() || bg.ranges_m.len() > max_beams {
        return Err(err(
            "lidar.background.ranges_m",
            format!(
                "has {} entries; it needs one per beam of the scan, between 1 and lidar.max_beams ({max_beams})",
                bg.ranges_m.len()
            ),
            reteach,
        ));
    }
    if let Some((i, r)) = bg.ranges_m.iter().enumerate().find(|(_, r)| {
        !(r.is_finite() && (**r == 0.0 || (**r > bg.tolerance_m && **r <= 10_000.0)))
    }) {
        return Err(err(
            "lidar.background.ranges_m",
            format!(
                "beam {i} has {r}; each entry is a range above tolerance_m ({}) and at most 10000 m, or 0 for no background",
                bg.tolerance_m
            ),
            reteach,
        ));
    }
    if bg.ranges_m.iter().all(|r| *r == 0.0) {
        return Err(err(
            "lidar.background.ranges_m",
            "no beam has a background, so nothing is masked",
            "remove [safety.lidar.background], or teach it from a recording of the cell",
        ));
    }
    Ok(())
}

/// SAF-017's settings, and what they need: the links' capsules and a lidar.
fn validate_separation(
    separation: &SeparationConfig,
    arm: &ArmConfig,
    lidar: bool,
) -> Result<(), ConfigError> {
    if arm.kinematics.is_none() {
        return Err(err(
            "arm.separation",
            "speed and separation monitoring measures the distance to the arm's links, but there is no kinematic chain",
            "add [safety.arm.kinematics] (the links' capsules), or remove [safety.arm.separation]",
        ));
    }
    if !lidar {
        return Err(err(
            "arm.separation",
            "speed and separation monitoring needs a lidar, and there is no [safety.lidar]",
            "add [safety.lidar] for the scanner that watches the arm's surroundings",
        ));
    }
    let pose = separation.base_from_arm;
    let within = |v: f64, limit: f64| v.is_finite() && v.abs() <= limit;
    if !(within(pose.x_m, 100.0) && within(pose.y_m, 100.0) && within(pose.yaw_rad, 10.0)) {
        return Err(err(
            "arm.separation.base_from_arm",
            "the arm's pose is not finite or not near the lidar (|x|, |y| <= 100 m, |yaw| <= 10 rad)",
            "set x_m, y_m (m) and yaw_rad (rad) of the arm's base in the lidar's base frame",
        ));
    }
    if !(separation.human_speed_mps > 0.0 && separation.human_speed_mps <= 10.0) {
        return Err(err(
            "arm.separation.human_speed_mps",
            format!(
                "must be > 0 (people approach) and at most 10 m/s, got {}",
                separation.human_speed_mps
            ),
            "set 1.6 (ISO 13855 walking speed) or 2.0 (reaching)",
        ));
    }
    if !(separation.reaction_time_ms >= 0.0 && separation.reaction_time_ms <= 10_000.0) {
        return Err(err(
            "arm.separation.reaction_time_ms",
            format!(
                "must be between 0 and 10000 ms, got {}",
                separation.reaction_time_ms
            ),
            "set the scan period plus the drive's latency (e.g. 80)",
        ));
    }
    if !(separation.margin_m > 0.0 && separation.margin_m <= 100.0) {
        return Err(err(
            "arm.separation.margin_m",
            format!(
                "a person would be allowed to touch a standing arm, margin_m = {}",
                separation.margin_m
            ),
            "set ISO 13855's intrusion distance for the scan plane's height H (1.2 - 0.4·H m, at least 0.85) plus the lidar's and the arm's position error",
        ));
    }
    Ok(())
}

fn validate_arm(arm: &ArmConfig) -> Result<(), ConfigError> {
    positive("arm.state_max_age_ms", arm.state_max_age_ms)?;
    if arm.joints.is_empty() {
        return Err(err(
            "arm.joints",
            "an arm with no joints",
            "add [[safety.arm.joints]] entries or remove [safety.arm]",
        ));
    }
    if arm.joints.len() > MAX_JOINTS {
        return Err(err(
            "arm.joints",
            format!(
                "{} joints is more than the {MAX_JOINTS} supported",
                arm.joints.len()
            ),
            "split the robot into arms of at most 16 joints",
        ));
    }
    for (i, joint) in arm.joints.iter().enumerate() {
        let key = |field: &str| format!("arm.joints[{i}].{field}");
        if !(joint.min_position.is_finite()
            && joint.max_position.is_finite()
            && joint.min_position < joint.max_position)
        {
            return Err(err(
                key("min_position"),
                format!(
                    "joint `{}` needs finite limits with min_position < max_position, got [{}, {}]",
                    joint.name, joint.min_position, joint.max_position
                ),
                "set the joint's position range from its URDF",
            ));
        }
        positive(&key("max_velocity"), joint.max_velocity)?;
        positive(&key("max_acceleration"), joint.max_acceleration)?;
    }
    if let Some(bound) = arm.max_following_error {
        positive("arm.max_following_error", bound)?;
    }
    if let Some(stall) = arm.stall {
        positive("arm.stall.min_error", stall.min_error)?;
        positive("arm.stall.time_ms", stall.time_ms)?;
        // A stall latches like a following error; without the bound, the latched hold would
        // not yield to the person who pulls the joint free (SAF-015) and would spring back.
        let Some(bound) = arm.max_following_error else {
            return Err(err(
                "arm.stall",
                "stall detection needs max_following_error: a latched stop yields to a push only with it (SAF-015), else the held joint springs back at the person when they let go",
                "set [safety.arm] max_following_error (e.g. 0.2 rad) or remove stall",
            ));
        };
        if stall.min_error >= bound {
            return Err(err(
                "arm.stall.min_error",
                format!(
                    "{} is not below max_following_error = {bound}: the following-error stop would always come first",
                    stall.min_error
                ),
                "set min_error to a few times the drive's lag at low speed (e.g. 0.02 rad)",
            ));
        }
    }
    if let Some(gripper) = arm.gripper
        && !(gripper.min_position.is_finite()
            && gripper.max_position.is_finite()
            && gripper.min_position <= gripper.max_position)
    {
        return Err(err(
            "arm.gripper.min_position",
            "the gripper range needs finite limits with min_position <= max_position",
            "set the gripper's range",
        ));
    }
    if let Some(ws) = arm.workspace
        && !valid_box(&ws)
    {
        return Err(err(
            "arm.workspace.min_m",
            "the workspace box needs finite corners with min_m < max_m on every axis",
            "set min_m and max_m in the base frame",
        ));
    }
    for (i, b) in arm.keep_out.iter().enumerate() {
        if !valid_box(b) {
            return Err(err(
                format!("arm.keep_out[{i}].min_m"),
                "a keep-out box needs finite corners with min_m < max_m on every axis",
                "set min_m and max_m in the arm's base frame",
            ));
        }
    }
    if arm.keep_out.len() > MAX_KEEP_OUT {
        return Err(err(
            "arm.keep_out",
            format!(
                "{} keep-out boxes is more than the {MAX_KEEP_OUT} supported",
                arm.keep_out.len()
            ),
            "merge boxes",
        ));
    }
    match &arm.kinematics {
        None if !arm.keep_out.is_empty() => Err(err(
            "arm.keep_out",
            "keep-out boxes are checked against the arm's links, which need forward kinematics",
            "add [safety.arm.kinematics] (links and tool, from the URDF)",
        )),
        None => Ok(()),
        Some(k) => validate_kinematics(arm, k),
    }
}

fn valid_box(b: &WorkspaceBox) -> bool {
    (0..3).all(|i| b.min_m[i].is_finite() && b.max_m[i].is_finite() && b.min_m[i] < b.max_m[i])
}

fn validate_kinematics(arm: &ArmConfig, k: &KinematicsConfig) -> Result<(), ConfigError> {
    if k.links.len() != arm.joints.len() {
        return Err(err(
            "arm.kinematics.links",
            format!(
                "{} links for {} joints in [safety.arm] joints",
                k.links.len(),
                arm.joints.len()
            ),
            "give one link per joint, in the order of [safety.arm] joints",
        ));
    }
    let finite = |v: &[f64; 3]| v.iter().all(|x| x.is_finite());
    for (i, (link, joint)) in k.links.iter().zip(&arm.joints).enumerate() {
        let key = |field: &str| format!("arm.kinematics.links[{i}].{field}");
        if link.joint != joint.name {
            return Err(err(
                key("joint"),
                format!(
                    "`{}`, but joint {i} of [safety.arm] joints is `{}`",
                    link.joint, joint.name
                ),
                "list the links in the order of [safety.arm] joints, one per joint",
            ));
        }
        if !finite(&link.xyz_m) || !finite(&link.rpy_rad) {
            return Err(err(
                key("xyz_m"),
                "the joint's origin needs finite xyz_m and rpy_rad",
                "copy <origin xyz rpy> from the URDF joint",
            ));
        }
        let norm = link.axis.iter().map(|a| a * a).sum::<f64>().sqrt();
        if !(norm.is_finite() && (norm - 1.0).abs() < 1e-3) {
            return Err(err(
                key("axis"),
                format!("{:?} is not a unit vector", link.axis),
                "copy <axis xyz> from the URDF joint (a unit vector)",
            ));
        }
        if !(link.radius_m.is_finite() && link.radius_m > 0.0) {
            return Err(err(
                key("radius_m"),
                format!("{} is not a link's radius (> 0)", link.radius_m),
                "set the link's half-width plus a margin, in m",
            ));
        }
        if link.kind == JointKind::Prismatic && !along_axis(&link.xyz_m, &link.rpy_rad, &link.axis)
        {
            return Err(err(
                key("xyz_m"),
                "a prismatic joint's origin must lie along its axis (its capsule runs straight \
                 from the previous joint through the slide; an offset rail is not modelled)",
                "put the offset in the previous link (its xyz_m) so this joint's xyz_m is zero \
                 or along its axis",
            ));
        }
    }
    if !(finite(&k.tool.xyz_m) && k.tool.radius_m.is_finite() && k.tool.radius_m > 0.0) {
        return Err(err(
            "arm.kinematics.tool",
            "the tool needs a finite xyz_m and a radius_m > 0",
            "set the tool point in the last joint's frame and the gripper's size",
        ));
    }
    if let Some(ws) = arm.workspace {
        let widest = k
            .links
            .iter()
            .map(|l| l.radius_m)
            .fold(k.tool.radius_m, f64::max);
        if (0..3).any(|i| ws.max_m[i] - ws.min_m[i] <= 2.0 * widest) {
            return Err(err(
                "arm.workspace",
                format!("the box is too small to hold a link of radius {widest} m"),
                "widen the workspace or check the links' radius_m",
            ));
        }
    }
    // The first joint's origin never moves (unless it slides): a box over it, or a workspace
    // without it, would leave that link in a zone for ever and let it set no limit.
    if let Some(first) = k.links.first().filter(|l| l.kind == JointKind::Revolute) {
        let (p, r) = (first.xyz_m, first.radius_m);
        if let Some(ws) = arm.workspace
            && (0..3).any(|i| p[i] - r < ws.min_m[i] || p[i] + r > ws.max_m[i])
        {
            return Err(err(
                "arm.kinematics.links[0].xyz_m",
                format!("the first joint at {p:?} (radius {r} m) is not inside arm.workspace"),
                "the arm's base must be inside its workspace: check the box and the origin",
            ));
        }
        for (z, b) in arm.keep_out.iter().enumerate() {
            if (0..3).all(|i| p[i] + r > b.min_m[i] && p[i] - r < b.max_m[i]) {
                return Err(err(
                    format!("arm.keep_out[{z}]"),
                    format!(
                        "the box covers the first joint at {p:?} (radius {r} m), which never moves"
                    ),
                    "keep-out boxes are for what the arm must not reach: move the box off its base",
                ));
            }
        }
    }
    Ok(())
}

/// Whether `xyz` (in the parent frame) is zero or parallel to the joint's axis after `rpy`.
fn along_axis(xyz: &[f64; 3], rpy: &[f64; 3], axis: &[f64; 3]) -> bool {
    let len = xyz.iter().map(|x| x * x).sum::<f64>().sqrt();
    if len < 1e-9 {
        return true;
    }
    let a = crate::rotation::apply(&crate::rotation::rpy(rpy), axis);
    let norm = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let cross = [
        xyz[1] * a[2] - xyz[2] * a[1],
        xyz[2] * a[0] - xyz[0] * a[2],
        xyz[0] * a[1] - xyz[1] * a[0],
    ];
    cross.iter().map(|v| v * v).sum::<f64>().sqrt() <= 1e-6 * len * norm
}
