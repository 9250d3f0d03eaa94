//! The deterministic safety layer of Reflex: every command passes through
//! [`Safety::evaluate`], which can always veto it.
//!
//! # Guarantees
//! - Fail-safe: missing, stale or invalid data (NaN, Inf, out-of-range beams, old timestamps)
//!   stops the robot; nothing is guessed. (SAF-005, SAF-006, SAF-007)
//! - E-stop latches from any source and is released only by an explicit reset while every
//!   source is clear; the layer starts latched. (SAF-001, SAF-002)
//! - Direction-aware lidar proximity: the footprint swept over the ISO/TS 15066-style stopping
//!   distance `S = v·t_r + v²/(2·a) + margin`, plus a slow-down zone. (SAF-003, SAF-004)
//! - Authority: the config is validated and moved in at construction and can never change; its
//!   SHA-256 is reported. Nothing in [`SafetyInputs`] or [`Command`] can loosen it. (SAF-008)
//! - Deterministic, panic-free, allocation-free and O(beams) per call; no I/O, no threads, no
//!   `unsafe`. (SAF-009, SAF-010)
//!
//! # Config keys (`[safety]`, see [`SafetyConfig`])
//! | key | type, unit | default | meaning |
//! |---|---|---|---|
//! | `control_period_ms` | f64, ms | 10 | longest step a ramp may take |
//! | `estop.stop_category` | 0, 1, 2 | — | IEC 60204-1 stop while latched |
//! | `estop.sources` | `[{ name, max_age_ms? }]` | — | `hardware`, `ros_topic`, `cloud`, `watchdog`, `internal`; the last two required |
//! | `estop.restart` | `start_request`/`new_command` | `start_request` | what lets the robot move after a reset (SAF-013; a reset alone never does) |
//! | `expected_hash` | `sha256:<hex>` | unset | refuse to start unless the config hashes to this (SAF-014) |
//! | `commands.{local_policy,cloud,operator}_max_age_ms` | f64, ms | — | a command older than this is never executed |
//! | `base.kind` | `differential`/`holonomic` | — | kinematics |
//! | `base.max_{vx,vy}_mps`, `base.max_wz_radps` | f64 | vy: 0 | per-axis velocity limits |
//! | `base.max_accel_{x,y}_mps2`, `base.max_accel_wz_radps2` | f64 | y: 0 | ramp limits |
//! | `base.brake_decel_mps2`, `base.brake_decel_wz_radps2` | f64 | — | guaranteed braking; stopping distances and category 1/2 stops |
//! | `base.footprint_radius_m` / `base.footprint_polygon_m` | f64 / `[[x, y]]`, m | — | exactly one; polygon convex, around the origin |
//! | `base.odometry_max_age_ms` | f64, ms | unset | makes odometry a required input |
//! | `lidar.base_from_lidar` | `{ x_m, y_m, yaw_rad }` | — | lidar pose in the base frame |
//! | `lidar.max_beams` | usize | — | buffer size; longer scans are invalid |
//! | `lidar.max_age_ms` | f64, ms | — | scan staleness limit |
//! | `lidar.reaction_time_ms`, `lidar.margin_m` | f64 | — | `t_r` and margin (> 0) of the stopping distance; the age of the scan in use is added to `t_r` |
//! | `lidar.slowdown_depth_m` | f64, m | — | slow-down zone depth beyond the protective zone |
//! | `lidar.min_points` | 1..=16 | — | points needed to trigger a zone |
//! | `lidar.hysteresis_m`, `lidar.release_delay_ms` | f64 | — | release only when clear by this much, for this long |
//! | `lidar.max_invalid_fraction` | [0, 1) | — | invalid beams tolerated in the direction of motion |
//! | `lidar.background` | `{ base_from_lidar, angle_min_rad, angle_increment_rad, tolerance_m, ranges_m }` | unset | SAF-019, a fixed cell's scanner only (no `[safety.base]`): per beam the static scene's nearest return, taught by `reflex teach-background`; returns from `tolerance_m`/2 nearer to `tolerance_m` (≤ 0.1 m) farther are no return, others are points, none where the object stood is an invalid beam; more than `max_invalid_fraction` of the taught beams not seeing their background, another scan geometry or a moved `base_from_lidar` stops (`scan_background_mismatch`) |
//! | `arm.state_max_age_ms` | f64, ms | — | joint-state staleness limit |
//! | `arm.joints` | `[{ name, min_position, max_position, max_velocity, max_acceleration }]` | — | at most 16 |
//! | `arm.gripper` | `{ min_position, max_position }` | unset | gripper range |
//! | `arm.max_following_error` | f64 > 0, rad (m) | unset | SAF-015: a joint measured further than this from its last target latches a stop where it is |
//! | `arm.stall` | `{ min_error, time_ms }` | unset | SAF-018: a joint its moving target keeps `min_error` ahead of while it moves less than that for `time_ms` latches a stop where it is; `min_error` < `max_following_error` |
//! | `arm.workspace` | `{ min_m, max_m }` | unset | Cartesian box (arm base frame): end-effector targets are clamped into it; with `arm.kinematics`, every link and the tool must stay inside (SAF-016) |
//! | `arm.keep_out` | `[{ min_m, max_m }]`, at most 16 | none | boxes no link or the tool may enter (SAF-016; needs `arm.kinematics`) |
//! | `arm.kinematics.links` | `[{ joint, type?, xyz_m, rpy_rad?, axis, radius_m }]` | unset | URDF subset, one per `arm.joints` entry in order: the joint's `<origin>` in the previous joint's frame, its `<axis>`, `revolute` (default) or `prismatic`, and the radius of the capsule from it to the next joint |
//! | `arm.kinematics.tool` | `{ xyz_m, radius_m }` | — | the tool point in the last joint's frame; a sphere of `radius_m` around it (gripper and load) |
//! | `arm.separation.base_from_arm` | `{ x_m, y_m, yaw_rad }` | unset | speed and separation monitoring (SAF-017, needs `arm.kinematics` and `[safety.lidar]`): the arm's base in the lidar's base frame |
//! | `arm.separation.human_speed_mps` | f64 > 0, m/s | — | how fast a person may approach (ISO 13855: 1.6 walking, 2.0 reaching) |
//! | `arm.separation.reaction_time_ms` | f64 ≥ 0, ms | — | sensor to brake (T_r); the scan's age and a tick are added every tick |
//! | `arm.separation.margin_m` | f64 > 0, m | — | C + Z: how far a person reaches past the point the lidar sees (ISO 13855, scan plane at height H: 1.2 − 0.4·H m, at least 0.85) plus position errors; a still arm stays still with anyone within human_speed × T_r + margin_m. The arm's base z axis must be vertical; on a mobile base the base's speed adds to human_speed and SAF-017's stop brakes the base too |
//!
//! # Example
//! ```
//! use reflex_safety::*;
//!
//! let config: SafetyConfig = toml::from_str(r#"
//!     [estop]
//!     stop_category = 1
//!     sources = [{ name = "watchdog" }, { name = "internal" }]
//!     [commands]
//!     local_policy_max_age_ms = 200.0
//!     cloud_max_age_ms = 300.0
//!     operator_max_age_ms = 200.0
//!     [base]
//!     kind = "differential"
//!     max_vx_mps = 1.0
//!     max_wz_radps = 1.5
//!     max_accel_x_mps2 = 100.0
//!     max_accel_wz_radps2 = 100.0
//!     brake_decel_mps2 = 1.5
//!     brake_decel_wz_radps2 = 3.0
//!     footprint_radius_m = 0.3
//!     [lidar]
//!     base_from_lidar = { x_m = 0.0, y_m = 0.0, yaw_rad = 0.0 }
//!     max_beams = 360
//!     max_age_ms = 100.0
//!     reaction_time_ms = 50.0
//!     margin_m = 0.05
//!     slowdown_depth_m = 0.5
//!     min_points = 2
//!     hysteresis_m = 0.05
//!     release_delay_ms = 200.0
//!     max_invalid_fraction = 0.2
//!     intrusion_speed_mps = 1.6
//! "#).unwrap();
//! let mut safety = Safety::new(config).unwrap();
//!
//! // A wall 0.5 m ahead: inside the protective zone at 1 m/s (0.3 + 0.05 + 0.33 + 0.05 m).
//! let ranges: Vec<f32> = (0..360)
//!     .map(|i| if (175..185).contains(&i) { 0.5 } else { f32::INFINITY })
//!     .collect();
//! let now = Monotonic::from_millis(1_000);
//! let mut inputs = SafetyInputs {
//!     scan: Some(Scan {
//!         stamp: now,
//!         angle_min_rad: -std::f32::consts::PI,
//!         angle_increment_rad: std::f32::consts::PI / 180.0,
//!         range_min_m: 0.05,
//!         range_max_m: 30.0,
//!         ranges_m: &ranges,
//!     }),
//!     ..SafetyInputs::default()
//! };
//! inputs.estop[EstopSource::Watchdog.index()] = EstopReport::Clear(now);
//! inputs.estop[EstopSource::Internal.index()] = EstopReport::Clear(now);
//! inputs.reset_request_seq = 1; // the operator's explicit start
//!
//! let forward = Command::base(CommandSource::LocalPolicy, now, 1.0, 0.0, 0.0);
//! let verdict = safety.evaluate(&inputs, &forward, now);
//! assert_eq!(verdict.action, Action::Stop);
//! assert!(verdict.reasons.contains(Reason::ProtectiveZone));
//! assert_eq!(verdict.command.base.vx_mps, 0.0);
//!
//! // Backing away from the wall is allowed, on the next tick.
//! let next = now.add_nanos(10_000_000);
//! let back = Command::base(CommandSource::LocalPolicy, next, -0.5, 0.0, 0.0);
//! let verdict = safety.evaluate(&inputs, &back, next);
//! assert_eq!(verdict.command.base.vx_mps, -0.5);
//! ```

#![forbid(unsafe_code)]

mod background;
mod config;
mod kinematics;
mod layer;
mod lidar;
mod rotation;
mod types;
pub mod wire;

pub use background::{MAX_UNSTEADY_RUN, MIN_TEACH_SCANS, Taught, TeachError, teach_background};
pub use config::{
    ArmConfig, BackgroundConfig, BaseConfig, BaseKind, CommandAges, ConfigError, EstopConfig,
    EstopSourceConfig, GripperLimits, JointKind, JointLimits, KinematicsConfig, LidarConfig,
    LinkConfig, MAX_BACKGROUND_TOLERANCE_M, MAX_BEAMS_LIMIT, MAX_FOOTPRINT_VERTICES, MAX_KEEP_OUT,
    MAX_MIN_POINTS, Pose2, Restart, SafetyConfig, SeparationConfig, StallConfig, ToolConfig,
    WorkspaceBox,
};
pub use kinematics::{Kinematics, LinkPoints};
pub use layer::Safety;
pub use types::{
    Action, Command, CommandSource, EstopReport, EstopSource, JointState, JointTarget, MAX_JOINTS,
    Monotonic, Odometry, Reason, Reasons, SafetyInputs, Scan, StopCategory, Twist, Verdict,
};
