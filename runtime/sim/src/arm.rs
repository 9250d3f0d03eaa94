//! `reflex sim --robot arm`: an arm on a table — the joints, gripper, kinematic chain and cell
//! scanner of the config's `[safety.arm]` and `[safety.lidar]` (e.g. `launch/arm.toml`) — driven
//! through the production runner on real threads and the real clock.
//!
//! The simulated arm speaks to Reflex the way a ROS 2 robot does: it makes `sensor_msgs`
//! messages (JointState at the loop rate, the cameras' Images and the scanner's LaserScan at
//! 20 Hz, the E-stop circuit's heartbeat) and hands them to the port's own [`PortState`], planned
//! by [`RobotPlan`] from the same `[ros]` config a robot gets (state sources by joint name,
//! controllers that must carry every joint the policy drives; the simulator has one camera per
//! image input of the policy, so `[ros.cameras]` is not read).
//! So the observation the policy sees here is assembled and preprocessed by the code that
//! assembles it on the robot. The gated command goes out the same way too: the plan's own
//! controllers turn it into the JointTrajectory / Float64MultiArray messages `reflex run` would
//! publish, and the simulated drives follow those: a joint_trajectory_controller joint reaches
//! its point at the point's `time_from_start` (straight toward it), a position controller's
//! follows with the drive's lag (`joint_tau_s`), a velocity controller's integrates. There is no
//! drive-off (the controllers' topics have none): a stop is what the messages say.
//!
//! What the simulator itself observes (never Reflex's own numbers): measured positions outside
//! the config's limits, the peak joint speed against `max_velocity`, and, with a person in the
//! cell, the closest any link capsule or the tool came to them (forward kinematics of the
//! config's chain, horizontally: the scan plane sees a person as a column) and how fast the arm
//! moved while they stood there.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use reflex_core::{CommandFrame, Observation, RobotIo, SensorFrame};
use reflex_policy::{BackendConfig, PolicyPackage};
use reflex_ros::RobotPlan;
use reflex_ros::joints::{ControllerKind, ControllerPlan, JointCommand};
use reflex_ros::port::{Header, Image, JointState, LaserScan, PortState, PortStats, Time};
use reflex_runner::config::ReflexConfig;
use reflex_runner::run::{LoopSummary, RealtimeReport};
use reflex_runner::swap::SwapPort;
use reflex_safety::{Kinematics, SafetyConfig};
use serde::Serialize;

use crate::lockstep::SimOptions;

/// The cell scanner's beams (within `[safety.lidar] max_beams`) and its wall.
const SCAN_BEAMS: usize = 720;
const WALL_M: f32 = 4.0;
/// A person's body in the scan plane (radius, m).
const BODY_RADIUS_M: f64 = 0.15;
/// How fast a person pushes a joint they hold (rad/s).
const PUSH_RAD_S: f64 = 3.0;
/// Above this speed ratio (measured / `max_velocity`, any joint) the arm counts as moving.
const MOVING_RATIO: f64 = 0.01;
/// The arm moved into a person when a step brought it nearer by more than this (m).
const CONTACT_TOWARD_M: f64 = 1e-6;
/// Cameras and the scanner publish at 20 Hz.
const SENSOR_PERIOD_NS: u64 = 50_000_000;

/// Someone entering the cell, as the scanner sees them: they walk in along `bearing_rad` (in
/// the scanner's frame) from `from_m` to `to_m` from it between `enter_s` and `stand_s`, stand
/// there until `leave_s`, walk back out to `from_m` by `gone_s`, and are gone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellPerson {
    pub bearing_rad: f64,
    pub from_m: f64,
    pub to_m: f64,
    pub enter_s: f64,
    pub stand_s: f64,
    pub leave_s: f64,
    pub gone_s: f64,
}

impl CellPerson {
    /// Where they are at `t_s` (scanner frame, m), if in the cell.
    pub fn at(&self, t_s: f64) -> Option<(f64, f64)> {
        if t_s < self.enter_s || t_s >= self.gone_s {
            return None;
        }
        let part = |a: f64, b: f64| ((t_s - a) / (b - a).max(1e-9)).clamp(0.0, 1.0);
        let r = if t_s < self.leave_s {
            self.from_m + (self.to_m - self.from_m) * part(self.enter_s, self.stand_s)
        } else {
            self.to_m + (self.from_m - self.to_m) * part(self.leave_s, self.gone_s)
        };
        Some((r * self.bearing_rad.cos(), r * self.bearing_rad.sin()))
    }
}

/// A static object of the cell the scanner sees (a table leg, a post), as a vertical cylinder
/// at `x_m, y_m` (scanner frame) of `radius_m`: to SAF-017 it is a person standing there until
/// a background is taught (SAF-019).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellFixture {
    pub x_m: f64,
    pub y_m: f64,
    pub radius_m: f64,
}

/// The cell scanner's scan at `wall_ns`: the wall, `fixtures`, and the person at `person`
/// (scanner frame), each beam its nearest return, off by up to `noise_m` (uniform, the same
/// for the same beam and stamp).
pub fn cell_scan(
    person: Option<(f64, f64)>,
    fixtures: &[CellFixture],
    noise_m: f64,
    wall_ns: u64,
) -> LaserScan {
    let inc = std::f32::consts::TAU / SCAN_BEAMS as f32;
    let mut ranges = vec![WALL_M; SCAN_BEAMS];
    let angle = |i: usize| -std::f64::consts::PI + i as f64 * f64::from(inc);
    if let Some((px, py)) = person {
        let r = px.hypot(py);
        let half = BODY_RADIUS_M.atan2(r);
        let bearing = py.atan2(px);
        for (i, range) in ranges.iter_mut().enumerate() {
            let off = (angle(i) - bearing + std::f64::consts::PI).rem_euclid(std::f64::consts::TAU)
                - std::f64::consts::PI;
            if off.abs() <= half {
                *range = range.min((r - BODY_RADIUS_M) as f32);
            }
        }
    }
    for f in fixtures {
        for (i, range) in ranges.iter_mut().enumerate() {
            // The beam's first intersection with the cylinder's circle.
            let (c, s) = (angle(i).cos(), angle(i).sin());
            let along = f.x_m * c + f.y_m * s;
            let across2 = f.x_m * f.x_m + f.y_m * f.y_m - along * along;
            let r2 = f.radius_m * f.radius_m;
            if along > 0.0 && across2 <= r2 {
                *range = range.min((along - (r2 - across2).sqrt()) as f32);
            }
        }
    }
    if noise_m > 0.0 {
        for (i, range) in ranges.iter_mut().enumerate() {
            // splitmix64 of (stamp, beam): uniform in [-1, 1).
            let mut z = wall_ns ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            *range = (f64::from(*range) + u * noise_m) as f32;
        }
    }
    LaserScan {
        header: Header {
            stamp: Time::from_nanos(wall_ns),
            frame_id: "cell_scanner".into(),
        },
        angle_min: -std::f32::consts::PI,
        angle_max: std::f32::consts::PI - inc,
        angle_increment: inc,
        time_increment: 0.0,
        scan_time: 0.05,
        range_min: 0.05,
        range_max: 30.0,
        ranges,
        intensities: Vec::new(),
    }
}

/// A fault or an operator's action during an arm run (HIL scenarios: `hil-tests/scenarios/arm`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArmEvent {
    /// The E-stop circuit opens (the hardware device reports pressed; the operator's button).
    EstopPressed,
    EstopReleased,
    /// The E-stop circuit's heartbeat stops (the safety controller dies), or resumes.
    EstopHeartbeatStops,
    EstopHeartbeatResumes,
    /// The operator's /reflex/estop (std_msgs/Bool, latched: sent once and on change).
    RosEstopPressed,
    RosEstopReleased,
    /// The operator resets (the simulated operator asks for a start on every step after it).
    Reset,
    /// Camera `camera` (the policy's image input index) stops publishing, or resumes.
    CameraStops {
        camera: usize,
    },
    CameraResumes {
        camera: usize,
    },
    /// Something holds the joint (a person, a collision): its drive cannot move it. With
    /// `position`, a person first pushes it there (at 3 rad/s), then holds it.
    JointBlocked {
        joint: String,
        #[serde(default)]
        position: Option<f64>,
    },
    JointReleased {
        joint: String,
    },
    /// The joint's encoder reads NaN in /joint_states, or reads again.
    JointStateNan {
        joint: String,
    },
    JointStateOk,
    /// /joint_states stops (a drive bus down), or resumes.
    JointStatesStop,
    JointStatesResume,
    /// The cell scanner stops publishing, or resumes.
    ScanStops,
    ScanResumes,
    /// A new instruction on /reflex/instruction.
    Instruction {
        text: String,
    },
}

impl ArmEvent {
    /// The event's `kind` as written in a scenario file.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EstopPressed => "estop_pressed",
            Self::EstopReleased => "estop_released",
            Self::EstopHeartbeatStops => "estop_heartbeat_stops",
            Self::EstopHeartbeatResumes => "estop_heartbeat_resumes",
            Self::RosEstopPressed => "ros_estop_pressed",
            Self::RosEstopReleased => "ros_estop_released",
            Self::Reset => "reset",
            Self::CameraStops { .. } => "camera_stops",
            Self::CameraResumes { .. } => "camera_resumes",
            Self::JointBlocked { .. } => "joint_blocked",
            Self::JointReleased { .. } => "joint_released",
            Self::JointStateNan { .. } => "joint_state_nan",
            Self::JointStateOk => "joint_state_ok",
            Self::JointStatesStop => "joint_states_stop",
            Self::JointStatesResume => "joint_states_resume",
            Self::ScanStops => "scan_stops",
            Self::ScanResumes => "scan_resumes",
            Self::Instruction { .. } => "instruction",
        }
    }
}

/// One step of a traced arm run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmTick {
    pub t_s: f64,
    /// The largest |measured joint speed| / `max_velocity` this step.
    pub speed_ratio: f64,
    pub positions: Vec<f64>,
    pub gripper_m: f64,
}

/// An arm run: the task, the person (if any), the position drives' lag, events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmScenario {
    pub name: String,
    /// Given to the policy as `/reflex/instruction` would be (empty: none).
    pub instruction: String,
    pub person: Option<CellPerson>,
    /// The cell's static objects the scanner sees.
    pub fixtures: Vec<CellFixture>,
    /// The scanner's range noise (m, uniform).
    pub scan_noise_m: f64,
    /// The position-controller drives' following time constant (s).
    pub joint_tau_s: f64,
    /// Faults and operator actions at their times (s from the first step), in time order.
    pub events: Vec<(f64, ArmEvent)>,
    /// Record an [`ArmTick`] per step ([`ArmSimSummary::trace`]).
    pub trace: bool,
    /// Render and publish the cameras (false: a scripted policy that needs no images, as in
    /// the randomized campaign; the policy's observations are then never ready).
    pub cameras: bool,
}

/// `reflex sim --robot arm`'s scenario: the arm reaches (the demo takes about 2.5 s); 0.3 s in, a
/// person walks toward where it reaches (bearing 0.8 rad) from 3.5 m to 0.7 m of its base at
/// 1.6 m/s — where the demo's pose puts the tool against their body — stands there until 4 s,
/// then walks back out at 0.8 m/s (gone at 7.5 s).
pub fn default_arm_scenario(instruction: &str) -> ArmScenario {
    ArmScenario {
        name: "arm".into(),
        instruction: instruction.into(),
        person: Some(CellPerson {
            bearing_rad: 0.8,
            from_m: 3.5,
            to_m: 0.7,
            enter_s: 0.3,
            stand_s: 2.05,
            leave_s: 4.0,
            gone_s: 7.5,
        }),
        fixtures: Vec::new(),
        scan_noise_m: 0.0,
        joint_tau_s: 0.04,
        events: Vec::new(),
        trace: false,
        cameras: true,
    }
}

/// What the simulator saw, beside the loop's own summary.
#[derive(Debug, Clone, Serialize)]
pub struct ArmSimSummary {
    pub scenario: String,
    pub mode: &'static str,
    #[serde(flatten)]
    pub run: LoopSummary,
    pub joints: Vec<String>,
    pub final_positions: Vec<f64>,
    pub final_gripper_m: Option<f64>,
    /// The tool point at the end (arm base frame, m), with a kinematic chain.
    pub final_tool_m: Option<[f64; 3]>,
    /// Steps in which a measured joint was outside its `[safety.arm]` position limits.
    pub position_violations: u64,
    /// The largest |measured joint speed| / `max_velocity` of the run.
    pub peak_speed_ratio: f64,
    /// The closest a link capsule or the tool came to the person's body (horizontal), m;
    /// <= 0 is contact.
    pub min_person_separation_m: Option<f64>,
    /// The same, over the steps in which the arm moved (a joint faster than 1 % of its
    /// `max_velocity`): how near its own motion took it to them.
    pub min_moving_separation_m: Option<f64>,
    /// Steps in which a link or the tool touched the person.
    pub contact_steps: u64,
    /// Of those, steps in which the arm itself moved into them (nearer than a step before, the
    /// person where they are now): a contact the policy's motion caused.
    pub contacts_moving_toward: u64,
    /// The largest speed ratio from 0.5 s after the person stopped walking until they turned to
    /// leave.
    pub peak_speed_ratio_while_person_stood: Option<f64>,
    /// The joint positions when the person turned to leave.
    pub positions_when_person_left: Option<Vec<f64>>,
    /// The port's input counts (as `reflex run` reports them under `dds`/`ros2`).
    pub inputs: PortStats,
    /// Every step, when the scenario asked for a trace (not in the JSON).
    #[serde(skip)]
    pub trace: Vec<ArmTick>,
}

/// The simulated arm as a [`RobotIo`].
pub struct ArmSim {
    state: PortState,
    scenario: ArmScenario,
    joint_names: Vec<String>,
    gripper_joint: Option<String>,
    limits: Vec<(f64, f64, f64)>,
    /// The E-stop devices' sources, in `[[ros.estop_devices]]` order.
    devices: Vec<reflex_safety::EstopSource>,
    heartbeat_on: bool,
    ros_estop_pressed: bool,
    /// What the /reflex/estop device last sent (None: nothing yet).
    ros_estop_sent: Option<bool>,
    images: Vec<Image>,
    kinematics: Option<Kinematics>,
    /// Each link capsule's radius, then the tool sphere's (`[safety.arm.kinematics]`).
    radii: Vec<f64>,
    base_from_arm: (f64, f64, f64),
    scan_enabled: bool,
    q: Vec<f64>,
    /// The positions a step ago (contact direction).
    q_before: Vec<f64>,
    qd: Vec<f64>,
    gripper: f64,
    step: u64,
    start_ns: u64,
    last_ns: u64,
    next_sensor_ns: u64,
    position_violations: u64,
    peak_speed_ratio: f64,
    min_person_separation_m: Option<f64>,
    min_moving_separation_m: Option<f64>,
    contact_steps: u64,
    contacts_moving_toward: u64,
    peak_while_stood: Option<f64>,
    left_at: Option<Vec<f64>>,
    /// Events applied so far (`scenario.events[..next_event]`) and what they set.
    next_event: usize,
    estop_pressed: bool,
    camera_on: Vec<bool>,
    /// Joints a person holds, at this position (pushed there first).
    held: Vec<Option<f64>>,
    /// The robot's controllers as `reflex run` plans them: the sim's drives follow exactly
    /// the messages they would publish, per controller slot (a joint index, or `n` for the
    /// gripper).
    controllers: Vec<(ControllerPlan, Vec<Option<usize>>)>,
    /// Per joint and the gripper (last): what its drive is doing.
    drives: Vec<Drive>,
    nan_joint: Option<usize>,
    joint_states_on: bool,
    scan_on: bool,
    /// The hardware E-stop device's index (else the first device).
    estop_device: usize,
    trace: Vec<ArmTick>,
}

impl std::fmt::Debug for ArmSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmSim")
            .field("step", &self.step)
            .field("q", &self.q)
            .finish_non_exhaustive()
    }
}

/// What a simulated drive does with its controller's last message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Drive {
    /// No message yet: it holds where it is.
    Idle,
    /// joint_trajectory_controller: it reaches `position` at `at_ns` (the point's
    /// time_from_start), moving straight toward it, then holds there.
    Reach { position: f64, at_ns: u64 },
    /// A position controller (forward_position): the hardware follows `position` with the
    /// drive's lag (`joint_tau_s`).
    Follow { position: f64 },
    /// A velocity controller (forward_velocity).
    Velocity { velocity: f64 },
}

/// Per E-stop source, its heartbeat (`[safety.estop] sources.max_age_ms`, ns), as `reflex run`
/// gives the ROS adapters.
fn heartbeats(safety: &SafetyConfig) -> [Option<u64>; reflex_safety::EstopSource::COUNT] {
    let mut out = [None; reflex_safety::EstopSource::COUNT];
    for s in &safety.estop.sources {
        out[s.name.index()] = s.max_age_ms.map(|ms| (ms * 1e6) as u64);
    }
    out
}

/// A static table scene (wall, table top, a red cube) as `encoding` (rgb8 or bgr8).
fn render_scene(width: u32, height: u32, encoding: &str, frame_id: &str) -> Image {
    let (w, h) = (width as usize, height as usize);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let in_cube =
                (w * 9 / 20..w * 11 / 20).contains(&x) && (h * 6 / 10..h * 7 / 10).contains(&y);
            let rgb = if in_cube {
                [200u8, 40, 40]
            } else if y < h * 2 / 5 {
                [170, 170, 165]
            } else {
                [140, 110, 80]
            };
            if encoding == "bgr8" {
                data.extend([rgb[2], rgb[1], rgb[0]]);
            } else {
                data.extend(rgb);
            }
        }
    }
    Image {
        header: Header {
            stamp: Time::default(),
            frame_id: frame_id.into(),
        },
        height,
        width,
        encoding: encoding.into(),
        is_bigendian: 0,
        step: width * 3,
        data,
    }
}

impl ArmSim {
    /// The arm of `config` for `package` (planned as `reflex run` plans a ROS 2 robot: errors
    /// name the config key or policy field that does not fit).
    pub fn new(
        config: &ReflexConfig,
        package: &PolicyPackage,
        scenario: ArmScenario,
    ) -> Result<Self> {
        let arm = config.safety.arm.as_ref().context(
            "--robot arm needs an arm in the config: [safety.arm] with its joints (e.g. --config launch/arm.toml)",
        )?;
        anyhow::ensure!(
            scenario.joint_tau_s.is_finite() && scenario.joint_tau_s > 0.0,
            "the arm's joint time constant must be positive, got {}",
            scenario.joint_tau_s
        );
        let beams = config.safety.lidar.as_ref().map_or(0, |l| l.max_beams);
        // The simulator has a camera for each image input the policy takes (the config's
        // [ros.cameras] name a real cell's camera topics, which mean nothing here).
        let mut ros = config.ros.clone();
        ros.cameras = package
            .manifest
            .image_inputs()
            .map(|i| (i.name.clone(), format!("/sim/{}/image_raw", i.name)))
            .collect();
        let plan = RobotPlan::new(&ros, beams, &config.safety, &package.manifest)
            .map_err(anyhow::Error::msg)
            .with_context(|| {
                format!(
                    "policy `{}` on this arm's [ros] and [safety.arm] config",
                    package.manifest.name
                )
            })?;
        let mut state = plan.state;
        state.model_digest = package.model_digest().to_string();
        state.set_heartbeats(heartbeats(&config.safety));
        // The cameras the policy takes, each rendered at a robot camera's size: the first as a
        // 320×240 rgb8 scene camera, the others as 160×120 bgr8 wrist cameras (the port
        // converts, resizes, crops or letterboxes them as the package says).
        let images = (0..plan.cameras.len())
            .map(|i| {
                if i == 0 {
                    render_scene(320, 240, "rgb8", "front_camera")
                } else {
                    render_scene(160, 120, "bgr8", "wrist_camera")
                }
            })
            .collect();
        let joint_names: Vec<String> = arm.joints.iter().map(|j| j.name.clone()).collect();
        let n = joint_names.len();
        for (_, event) in &scenario.events {
            let joint = match event {
                ArmEvent::JointBlocked { joint, .. }
                | ArmEvent::JointReleased { joint }
                | ArmEvent::JointStateNan { joint } => Some(joint),
                _ => None,
            };
            if let Some(joint) = joint {
                anyhow::ensure!(
                    joint_names.contains(joint),
                    "event {}: no joint {joint:?} in [safety.arm] joints ({})",
                    event.kind(),
                    joint_names.join(", ")
                );
            }
            if let ArmEvent::CameraStops { camera } | ArmEvent::CameraResumes { camera } = event {
                anyhow::ensure!(
                    *camera < plan.cameras.len(),
                    "event {}: camera {camera}, but policy `{}` takes {} cameras",
                    event.kind(),
                    package.manifest.name,
                    plan.cameras.len()
                );
            }
        }
        let gripper_name = arm
            .gripper
            .as_ref()
            .map(|_| config.ros.gripper_joint.clone());
        let controllers = plan
            .controllers
            .iter()
            .map(|c| {
                let slots = c
                    .joint_names
                    .iter()
                    .map(|name| {
                        joint_names.iter().position(|j| j == name).or_else(|| {
                            (gripper_name.as_deref() == Some(name.as_str())).then_some(n)
                        })
                    })
                    .collect();
                (c.clone(), slots)
            })
            .collect();
        let estop_device = plan
            .devices
            .iter()
            .position(|d| d.source == reflex_safety::EstopSource::Hardware)
            .unwrap_or(0);
        let base_from_arm = arm.separation.as_ref().map_or((0.0, 0.0, 0.0), |s| {
            (
                s.base_from_arm.x_m,
                s.base_from_arm.y_m,
                s.base_from_arm.yaw_rad,
            )
        });
        Ok(Self {
            state,
            joint_names,
            gripper_joint: arm
                .gripper
                .as_ref()
                .map(|_| config.ros.gripper_joint.clone()),
            limits: arm
                .joints
                .iter()
                .map(|j| (j.min_position, j.max_position, j.max_velocity))
                .collect(),
            devices: plan.devices.iter().map(|d| d.source).collect(),
            heartbeat_on: true,
            ros_estop_pressed: false,
            ros_estop_sent: None,
            images,
            kinematics: arm.kinematics.as_ref().map(Kinematics::new),
            radii: arm.kinematics.as_ref().map_or(Vec::new(), |k| {
                k.links
                    .iter()
                    .map(|l| l.radius_m)
                    .chain([k.tool.radius_m])
                    .collect()
            }),
            base_from_arm,
            scan_enabled: beams >= SCAN_BEAMS,
            q: vec![0.0; n],
            q_before: vec![0.0; n],
            qd: vec![0.0; n],
            gripper: 0.0,
            step: 0,
            start_ns: 0,
            last_ns: 0,
            next_sensor_ns: 0,
            position_violations: 0,
            peak_speed_ratio: 0.0,
            min_person_separation_m: None,
            min_moving_separation_m: None,
            contact_steps: 0,
            contacts_moving_toward: 0,
            peak_while_stood: None,
            left_at: None,
            next_event: 0,
            estop_pressed: false,
            camera_on: vec![scenario.cameras; plan.cameras.len()],
            held: vec![None; n],
            controllers,
            drives: vec![Drive::Idle; n + 1],
            nan_joint: None,
            joint_states_on: true,
            scan_on: true,
            estop_device,
            trace: Vec::new(),
            scenario,
        })
    }

    /// The controllers' messages for `command` (what the actuator gate would publish at
    /// `now_ns`) become the drives' setpoints.
    fn send(&mut self, command: &CommandFrame, now_ns: u64) {
        for (plan, slots) in &mut self.controllers {
            let Some(message) = plan.message(command, now_ns) else {
                continue;
            };
            match message {
                JointCommand::Trajectory(t) => {
                    let Some(point) = t.points.first() else {
                        continue;
                    };
                    let after = point.time_from_start.sec.max(0) as u64 * 1_000_000_000
                        + u64::from(point.time_from_start.nanosec);
                    for (slot, p) in slots.iter().zip(&point.positions) {
                        if let Some(i) = slot {
                            self.drives[*i] = Drive::Reach {
                                position: *p,
                                at_ns: now_ns + after,
                            };
                        }
                    }
                }
                JointCommand::Array(a) => {
                    for (slot, x) in slots.iter().zip(&a.data) {
                        if let Some(i) = slot {
                            self.drives[*i] = match plan.kind {
                                ControllerKind::ForwardVelocity => Drive::Velocity { velocity: *x },
                                _ => Drive::Follow { position: *x },
                            };
                        }
                    }
                }
            }
        }
    }

    /// Moves the joints and the gripper for `dt_s` (to `now_ns`) as their drives do, and
    /// records what the simulator sees. There is no drive-off here, as there is none on the
    /// controllers' topics: a stop is what the messages say (the emergency stop's power cut is
    /// the safety relay's, outside Reflex).
    fn actuate(&mut self, dt_s: f64, now_ns: u64, t_s: f64) {
        let follow = (dt_s / self.scenario.joint_tau_s).min(1.0);
        let n = self.q.len();
        let drive = |x: f64, d: Drive| match d {
            Drive::Idle => x,
            Drive::Reach { position, at_ns } => {
                let left_s = at_ns.saturating_sub(now_ns) as f64 * 1e-9;
                if left_s <= dt_s {
                    position
                } else {
                    x + (position - x) * dt_s / left_s
                }
            }
            Drive::Follow { position } => x + (position - x) * follow,
            Drive::Velocity { velocity } => x + velocity * dt_s,
        };
        let mut ratio = 0.0f64;
        self.q_before.copy_from_slice(&self.q);
        for i in 0..n {
            let before = self.q[i];
            if let Some(at) = self.held[i] {
                let step = PUSH_RAD_S * dt_s;
                self.q[i] += (at - self.q[i]).clamp(-step, step);
            } else {
                self.q[i] = drive(self.q[i], self.drives[i]);
            }
            self.qd[i] = if dt_s > 0.0 {
                (self.q[i] - before) / dt_s
            } else {
                0.0
            };
            let (lo, hi, vmax) = self.limits[i];
            if self.q[i] < lo - 1e-6 || self.q[i] > hi + 1e-6 {
                self.position_violations += 1;
            }
            ratio = ratio.max(self.qd[i].abs() / vmax);
        }
        self.gripper = drive(self.gripper, self.drives[n]);
        self.peak_speed_ratio = self.peak_speed_ratio.max(ratio);
        if self.scenario.trace {
            self.trace.push(ArmTick {
                t_s,
                speed_ratio: ratio,
                positions: self.q.clone(),
                gripper_m: self.gripper,
            });
        }
        let Some(person) = self.scenario.person else {
            return;
        };
        if t_s >= person.leave_s && self.left_at.is_none() {
            self.left_at = Some(self.q.clone());
        }
        let Some((px, py)) = person.at(t_s) else {
            return;
        };
        if let Some(closest) = self.separation(&self.q, px, py) {
            self.min_person_separation_m = Some(
                self.min_person_separation_m
                    .map_or(closest, |m| m.min(closest)),
            );
            if ratio >= MOVING_RATIO {
                self.min_moving_separation_m = Some(
                    self.min_moving_separation_m
                        .map_or(closest, |m| m.min(closest)),
                );
            }
            if closest <= 0.0 {
                self.contact_steps += 1;
                // The same person against where the arm was a step ago: nearer now means the
                // arm itself moved into them (a person walking into a still arm does not count).
                let before = self.separation(&self.q_before, px, py).unwrap_or(closest);
                if closest < before - CONTACT_TOWARD_M {
                    self.contacts_moving_toward += 1;
                }
            }
        }
        if t_s >= person.stand_s + 0.5 && t_s < person.leave_s {
            self.peak_while_stood = Some(self.peak_while_stood.unwrap_or(0.0).max(ratio));
        }
    }

    /// The horizontal distance from a person's body at (`px`, `py`) (scanner frame) to the
    /// nearest link capsule or the tool sphere with the arm at `q` (the scan plane sees a
    /// person as a vertical column); <= 0 is contact. None without a kinematic chain.
    fn separation(&self, q: &[f64], px: f64, py: f64) -> Option<f64> {
        let kin = self.kinematics.as_ref()?;
        let p = kin.link_points(q);
        let (bx, by, yaw) = self.base_from_arm;
        let plane = |a: &[f64; 3]| {
            (
                bx + a[0] * yaw.cos() - a[1] * yaw.sin(),
                by + a[0] * yaw.sin() + a[1] * yaw.cos(),
            )
        };
        let mut closest = f64::INFINITY;
        for i in 0..=p.count {
            let a = plane(&p.points[i]);
            let b = plane(&p.points[(i + 1).min(p.count)]);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len2 = dx * dx + dy * dy;
            let t = if len2 > 0.0 {
                (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let d = (a.0 + t * dx - px).hypot(a.1 + t * dy - py)
                - self.radii.get(i).copied().unwrap_or(0.0)
                - BODY_RADIUS_M;
            closest = closest.min(d);
        }
        Some(closest)
    }

    fn joint_state(&self, wall_ns: u64) -> JointState {
        let mut name = self.joint_names.clone();
        let mut position = self.q.clone();
        if let Some(i) = self.nan_joint {
            position[i] = f64::NAN;
        }
        let mut velocity = self.qd.clone();
        if let Some(g) = &self.gripper_joint {
            name.push(g.clone());
            position.push(self.gripper);
            velocity.push(0.0);
        }
        JointState {
            header: Header {
                stamp: Time::from_nanos(wall_ns),
                frame_id: String::new(),
            },
            name,
            position,
            velocity,
            effort: Vec::new(),
        }
    }

    fn scan(&self, t_s: f64, wall_ns: u64) -> LaserScan {
        cell_scan(
            self.scenario.person.and_then(|p| p.at(t_s)),
            &self.scenario.fixtures,
            self.scenario.scan_noise_m,
            wall_ns,
        )
    }

    /// The simulator's observations and the port's counts, with the loop's summary.
    pub fn summary(&self, run: LoopSummary) -> ArmSimSummary {
        ArmSimSummary {
            scenario: self.scenario.name.clone(),
            mode: "realtime",
            run,
            joints: self.joint_names.clone(),
            final_positions: self.q.clone(),
            final_gripper_m: self.gripper_joint.as_ref().map(|_| self.gripper),
            final_tool_m: self.kinematics.as_ref().map(|k| {
                let p = k.link_points(&self.q);
                p.points[p.count]
            }),
            position_violations: self.position_violations,
            peak_speed_ratio: self.peak_speed_ratio,
            min_person_separation_m: self.min_person_separation_m,
            min_moving_separation_m: self.min_moving_separation_m,
            contact_steps: self.contact_steps,
            contacts_moving_toward: self.contacts_moving_toward,
            peak_speed_ratio_while_person_stood: self.peak_while_stood,
            positions_when_person_left: self.left_at.clone(),
            inputs: self.state.stats.clone(),
            trace: self.trace.clone(),
        }
    }

    /// Applies the scenario's events due at `t_s`.
    fn apply_events(&mut self, t_s: f64) {
        while let Some((at, event)) = self.scenario.events.get(self.next_event).cloned() {
            if at > t_s {
                break;
            }
            self.next_event += 1;
            let joint = |name: &str| self.joint_names.iter().position(|j| j == name);
            match event {
                ArmEvent::EstopPressed => self.estop_pressed = true,
                ArmEvent::EstopReleased => self.estop_pressed = false,
                ArmEvent::EstopHeartbeatStops => self.heartbeat_on = false,
                ArmEvent::EstopHeartbeatResumes => self.heartbeat_on = true,
                ArmEvent::RosEstopPressed => self.ros_estop_pressed = true,
                ArmEvent::RosEstopReleased => self.ros_estop_pressed = false,
                ArmEvent::Reset => self.state.on_reset(),
                ArmEvent::CameraStops { camera } => self.camera_on[camera] = false,
                ArmEvent::CameraResumes { camera } => self.camera_on[camera] = true,
                ArmEvent::JointBlocked { joint: j, position } => {
                    if let Some(i) = joint(&j) {
                        self.held[i] = Some(position.unwrap_or(self.q[i]));
                    }
                }
                ArmEvent::JointReleased { joint: j } => {
                    if let Some(i) = joint(&j) {
                        self.held[i] = None;
                    }
                }
                ArmEvent::JointStateNan { joint: j } => self.nan_joint = joint(&j),
                ArmEvent::JointStateOk => self.nan_joint = None,
                ArmEvent::JointStatesStop => self.joint_states_on = false,
                ArmEvent::JointStatesResume => self.joint_states_on = true,
                ArmEvent::ScanStops => self.scan_on = false,
                ArmEvent::ScanResumes => self.scan_on = true,
                ArmEvent::Instruction { text } => self.state.on_instruction(&text),
            }
        }
    }
}

impl RobotIo for ArmSim {
    fn beams(&self) -> usize {
        SCAN_BEAMS
    }

    fn stationary_at_start(&self) -> bool {
        true
    }

    fn attach_ingress(&mut self, ingress: Arc<reflex_core::EstopIngress>) {
        self.state.attach_ingress(ingress);
    }

    fn step(
        &mut self,
        now: u64,
        command: &CommandFrame,
        frame: &mut SensorFrame,
        obs: &mut Observation,
    ) -> bool {
        if self.step == 0 {
            (self.start_ns, self.last_ns, self.next_sensor_ns) = (now, now, now);
        }
        let dt_s = now.saturating_sub(self.last_ns) as f64 * 1e-9;
        self.last_ns = now;
        let t_s = now.saturating_sub(self.start_ns) as f64 * 1e-9;
        self.apply_events(t_s);
        self.actuate(dt_s, now, t_s);
        self.send(command, now);
        let wall = reflex_ros::port::wall_clock_ns();
        self.state.command(command.base, command.drive_enabled);
        self.state.begin_step(now, wall);
        if self.step == 0 && !self.scenario.instruction.is_empty() {
            let text = self.scenario.instruction.clone();
            self.state.on_instruction(&text);
        }
        // The drives' joint states at the loop rate; the E-stop circuit's heartbeat every step
        // and the operator's latched /reflex/estop once and on change; the operator resets
        // once, then asks for a start on every step (the loop honours the first after a
        // reset, SAF-013).
        if self.joint_states_on {
            let js = self.joint_state(wall);
            self.state.on_joint_state(&js, now);
        }
        for (device, source) in self.devices.iter().enumerate() {
            if *source == reflex_safety::EstopSource::RosTopic {
                // Latched topic: once, then on change.
                if self.ros_estop_sent != Some(self.ros_estop_pressed) {
                    self.ros_estop_sent = Some(self.ros_estop_pressed);
                    self.state
                        .on_estop_from(device, 1, self.ros_estop_pressed, now);
                }
            } else if self.heartbeat_on || device != self.estop_device {
                let pressed = self.estop_pressed && device == self.estop_device;
                self.state.on_estop_from(device, 1, pressed, now);
            }
        }
        match self.step {
            0 => {}
            1 => self.state.on_reset(),
            _ => self.state.on_start(),
        }
        if now >= self.next_sensor_ns {
            self.next_sensor_ns = now + SENSOR_PERIOD_NS;
            if self.scan_enabled && self.scan_on {
                let scan = self.scan(t_s, wall);
                self.state.on_scan(&scan, now);
            }
            for (camera, image) in self.images.iter().enumerate() {
                if self.camera_on[camera] {
                    self.state.on_image(camera, image, now);
                }
            }
        }
        self.step += 1;
        self.state.finish_step(frame, obs)
    }
}

/// `reflex sim --robot arm`: `scenario` on the arm of `config` in real time for
/// `options.duration_s`, through the production runner.
pub fn run_arm_realtime(
    config: &ReflexConfig,
    package: &PolicyPackage,
    backend: &BackendConfig,
    scenario: ArmScenario,
    options: &SimOptions,
    port: &Arc<SwapPort>,
) -> Result<(ArmSimSummary, RealtimeReport)> {
    let mut rt_config = config.runtime.clone();
    rt_config.period_ms = options.period_ms;
    // The simulator drives no hardware: SCHED_FIFO and locked memory are asked for as the
    // config says and reported, but a desk without them still runs it (`require_rt` guards a
    // robot's drives, which `reflex run` keeps).
    rt_config.require_rt = false;
    let name = scenario.name.clone();
    let instruction = scenario.instruction.clone();
    let mut robot = ArmSim::new(config, package, scenario)?;
    let (run, report) = crate::realtime::run_with_faults(
        &config.safety,
        package,
        backend,
        &rt_config,
        (&name, &instruction),
        options,
        port,
        &mut robot,
    )?;
    Ok((robot.summary(run), report))
}

/// A scripted arm policy for [`run_arm_lockstep`]: called every step with the time (monotonic
/// ns, and s from the start) and the measured joint positions (`[safety.arm] joints` order, as
/// the loop last read them); it may fill `actions` (horizon × action dimensions, the package's
/// layout) and return the observation time the chunk answers (ns), or return None (nothing
/// new this step).
pub type ScriptedArmPolicy<'a> = dyn FnMut(u64, f64, &[f64], &mut [f32]) -> Option<u64> + 'a;

/// `scenario` on the arm of `config` in lockstep for `duration_s`: the production control loop
/// (`reflex_runner::run::control_loop`: chunk queue, arbiter, safety layer) on a simulated
/// clock, fed the [`ArmSim`]'s frames as the RT thread reads them and chunks from `policy`
/// in place of the inference worker (no model runs: `package` gives the action map, horizon
/// and rate). Deterministic for a scenario and policy, and much faster than real time: the
/// randomized arm campaign (`hil-tests`) runs through here.
pub fn run_arm_lockstep(
    config: &ReflexConfig,
    package: &PolicyPackage,
    scenario: ArmScenario,
    duration_s: f64,
    policy: &mut ScriptedArmPolicy<'_>,
) -> Result<ArmSimSummary> {
    use reflex_safety::{EstopReport, EstopSource, Monotonic};
    let period_ms = config.runtime.period_ms;
    let period_ns = (period_ms * 1e6).round() as u64;
    let mut safety = config.safety.clone();
    safety.control_period_ms = period_ms;
    let options = SimOptions {
        duration_s,
        period_ms,
        chunks: config.chunks,
        arbitration: config.arbitration.clone(),
        ..SimOptions::default()
    };
    let (chunk_tx, chunk_rx) = reflex_runner::run::chunk_channel(package);
    let mut control =
        reflex_runner::run::control_loop(&safety, package, &options.run_options(), chunk_rx)?;
    let mut robot = ArmSim::new(config, package, scenario)?;
    let joints = safety.arm.as_ref().map_or(0, |a| a.joints.len());
    let mut frame = SensorFrame::new(robot.beams(), joints);
    let mut obs = package.manifest.observation();
    let mut command = CommandFrame::default();
    let m = &package.manifest;
    let mut actions = vec![0.0f32; m.horizon_steps() * m.action_space.len()];
    let wall = std::time::Instant::now();
    let clock = move || wall.elapsed().as_nanos() as u64;
    let start_ns = 1_000_000_000u64;
    let ticks = (duration_s * 1e9 / period_ns as f64).round() as u64;
    for tick in 0..ticks {
        let now = start_ns + tick * period_ns;
        robot.step(now, &command, &mut frame, &mut obs);
        let t_s = (tick * period_ns) as f64 * 1e-9;
        if let Some(t_obs) = policy(now, t_s, &frame.joint_positions, &mut actions) {
            // No free buffer: the chunk is dropped, as in a real run.
            let _ = chunk_tx.try_send(t_obs, &actions, 0);
        }
        // As the RT thread reads them: the loop's own sources are healthy.
        let mut estop = frame.estop;
        estop[EstopSource::Watchdog.index()] = EstopReport::Clear(Monotonic::from_nanos(now));
        estop[EstopSource::Internal.index()] = EstopReport::Clear(Monotonic::from_nanos(now));
        let inputs = frame.safety_inputs(estop);
        let verdict = control.tick_with_start(now, &inputs, frame.start_seq, &clock);
        command = CommandFrame::from_verdict(control.stats.ticks, now, 0, &verdict);
    }
    let mut summary = robot.summary(LoopSummary::of(&control, 0, &[]));
    summary.mode = "lockstep";
    Ok(summary)
}
