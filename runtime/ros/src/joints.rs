//! Joint and gripper commands out to ros2_control (`[[ros.controllers]]`): the safety verdict's
//! joint targets become `trajectory_msgs/JointTrajectory` for a joint_trajectory_controller or
//! `std_msgs/Float64MultiArray` for a forward_command_controller (JointGroupPosition /
//! JointGroupVelocityController), each controller with its own joints (the gripper through
//! its own controller, named by `[ros] gripper_joint`).
//!
//! What is sent, and what happens when Reflex falls silent:
//! - **joint_trajectory**: each message replaces the controller's trajectory (header stamp zero =
//!   start now) with two points: the target at `point_time_ms` with its velocity (so cubic
//!   segments join without stopping at each message), then a stopping tail — zero velocity at
//!   the position the joint reaches decelerating at its `[safety.arm]` `max_acceleration`
//!   (clamped to its limits). So the last point has zero velocity (JTC refuses others unless
//!   `allow_nonzero_velocity_at_trajectory_end`), and if messages stop, the arm decelerates to
//!   a stop on its own and the controller holds there; its `cmd_timeout` (counted from the
//!   last point, off by default) is a second guard. A hold (stop verdict) is the target with
//!   zero velocity. An empty trajectory is never sent: JTC (Jazzy) rejects it and keeps moving.
//! - **forward_position**: positions in `joints` order. The controller has no timeout and
//!   holds the last position; a frame without a position target re-sends the last one.
//! - **forward_velocity**: velocities; a frame without targets (the gate's zero) sends zeros.
//!   The controller has no timeout and keeps the last velocity for ever if nothing more
//!   arrives, so Reflex refuses it unless `allow_without_timeout = true` states that the drive
//!   has its own command watchdog.
//!
//! `launch/params/arm_controllers.yaml` ships the controller settings (docs: launch/README.md).

use serde::{Deserialize, Serialize};

use reflex_core::CommandFrame;
use reflex_core::actions::ActionTarget;

use crate::port::{Header, Time};

/// builtin_interfaces/msg/Duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duration {
    pub sec: i32,
    pub nanosec: u32,
}

impl Duration {
    pub fn from_nanos(ns: u64) -> Self {
        let t = Time::from_nanos(ns);
        Self {
            sec: t.sec,
            nanosec: t.nanosec,
        }
    }
}

/// trajectory_msgs/msg/JointTrajectoryPoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JointTrajectoryPoint {
    pub positions: Vec<f64>,
    pub velocities: Vec<f64>,
    pub accelerations: Vec<f64>,
    pub effort: Vec<f64>,
    pub time_from_start: Duration,
}

/// trajectory_msgs/msg/JointTrajectory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JointTrajectory {
    pub header: Header,
    pub joint_names: Vec<String>,
    pub points: Vec<JointTrajectoryPoint>,
}

/// std_msgs/msg/MultiArrayDimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiArrayDimension {
    pub label: String,
    pub size: u32,
    pub stride: u32,
}

/// std_msgs/msg/MultiArrayLayout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiArrayLayout {
    pub dim: Vec<MultiArrayDimension>,
    pub data_offset: u32,
}

/// std_msgs/msg/Float64MultiArray.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Float64MultiArray {
    pub layout: MultiArrayLayout,
    pub data: Vec<f64>,
}

/// The kind of ros2_control controller a `[[ros.controllers]]` entry feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ControllerKind {
    /// joint_trajectory_controller's `~/joint_trajectory` topic (JointTrajectory).
    JointTrajectory,
    /// position_controllers/JointGroupPositionController's `~/commands` (Float64MultiArray).
    ForwardPosition,
    /// velocity_controllers/JointGroupVelocityController's `~/commands` (Float64MultiArray).
    ForwardVelocity,
}

/// One `[[ros.controllers]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    #[serde(rename = "type")]
    pub kind: ControllerKind,
    /// e.g. `/arm_controller/joint_trajectory`, `/gripper_controller/commands`.
    pub topic: String,
    /// Joint names in the controller's `joints` order: `[safety.arm] joints` names and/or
    /// `[ros] gripper_joint`.
    pub joints: Vec<String>,
    /// joint_trajectory: `time_from_start` of the streamed target (ms, default 20 = two
    /// control periods at 100 Hz: one late message does not reach the end of the segment).
    #[serde(default = "default_point_time_ms")]
    pub point_time_ms: f64,
    /// forward_velocity only: the drive stops on its own when commands stop (a controller or
    /// hardware command watchdog), since the controller itself never does.
    #[serde(default)]
    pub allow_without_timeout: bool,
}

fn default_point_time_ms() -> f64 {
    20.0
}

/// What a controller slot carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Joint(usize),
    Gripper,
}

/// A message for one controller.
#[derive(Debug, Clone, PartialEq)]
pub enum JointCommand {
    Trajectory(JointTrajectory),
    Array(Float64MultiArray),
}

/// One controller's publisher state: which verdict entries it carries, the limits for the
/// stopping tail, and what it sent last (forward_position re-sends it; velocities of
/// joint_trajectory points come from the change of target when the verdict has none).
#[derive(Debug, Clone)]
pub struct ControllerPlan {
    pub kind: ControllerKind,
    pub topic: String,
    pub joint_names: Vec<String>,
    slots: Vec<Slot>,
    /// Per slot: (min, max, max_acceleration).
    limits: Vec<(f64, f64, f64)>,
    point_ns: u64,
    last: Option<(u64, Vec<f64>)>,
}

impl ControllerPlan {
    /// The plans for `controllers` on the robot `safety` describes, checked against what the
    /// policy drives (`targets`): every driven joint and the gripper must be carried by a
    /// controller that takes its kind of target. Errors name the key and the fix.
    pub fn for_config(
        controllers: &[ControllerConfig],
        gripper_joint: &str,
        safety: &reflex_safety::SafetyConfig,
        targets: &[ActionTarget],
    ) -> Result<Vec<ControllerPlan>, String> {
        let arm = safety.arm.as_ref();
        let joints: Vec<&reflex_safety::JointLimits> =
            arm.map(|a| a.joints.iter().collect()).unwrap_or_default();
        let gripper = arm.and_then(|a| a.gripper);
        let mut plans: Vec<ControllerPlan> = Vec::new();
        for (c, config) in controllers.iter().enumerate() {
            let key = format!("ros.controllers[{c}]");
            crate::port::check_topic_name(&config.topic)
                .map_err(|e| format!("{key}.topic: {e}"))?;
            if config.joints.is_empty() {
                return Err(format!(
                    "{key}.joints is empty; fix: list the controller's joints in its `joints` order"
                ));
            }
            if !(config.point_time_ms.is_finite() && config.point_time_ms > 0.0) {
                return Err(format!(
                    "{key}.point_time_ms = {}: expected a positive number of milliseconds; fix: e.g. 20.0",
                    config.point_time_ms
                ));
            }
            if config.kind == ControllerKind::ForwardVelocity && !config.allow_without_timeout {
                return Err(format!(
                    "{key}: a forward_velocity controller (JointGroupVelocityController) has no command timeout: if Reflex stops publishing, the joints keep their last velocity; fix: use a joint_trajectory controller, or set allow_without_timeout = true only if the drive stops on its own when commands stop"
                ));
            }
            let mut slots = Vec::new();
            let mut limits = Vec::new();
            for name in &config.joints {
                let slot = if let Some(i) = joints.iter().position(|j| j.name == *name) {
                    let j = joints[i];
                    limits.push((j.min_position, j.max_position, j.max_acceleration));
                    Slot::Joint(i)
                } else if name == gripper_joint
                    && let Some(g) = gripper
                {
                    limits.push((g.min_position, g.max_position, f64::INFINITY));
                    Slot::Gripper
                } else {
                    let known: Vec<&str> = joints.iter().map(|j| j.name.as_str()).collect();
                    return Err(format!(
                        "{key}.joints: `{name}` is neither a [safety.arm] joint ({}) nor the gripper ([ros] gripper_joint = {gripper_joint:?}{}); fix: use the names of [safety.arm]",
                        known.join(", "),
                        if gripper.is_some() {
                            ""
                        } else {
                            ", and [safety.arm.gripper] is not set"
                        }
                    ));
                };
                if slots.contains(&slot)
                    || plans
                        .iter()
                        .any(|p: &ControllerPlan| p.slots.contains(&slot))
                {
                    return Err(format!(
                        "{key}.joints: `{name}` is commanded by two controllers (or twice); fix: give each joint one controller"
                    ));
                }
                if slot == Slot::Gripper && config.kind == ControllerKind::ForwardVelocity {
                    return Err(format!(
                        "{key}.joints: the gripper takes position targets, a forward_velocity controller cannot carry it; fix: a forward_position (JointGroupPositionController) for the gripper"
                    ));
                }
                slots.push(slot);
            }
            plans.push(ControllerPlan {
                kind: config.kind,
                topic: config.topic.clone(),
                joint_names: config.joints.clone(),
                slots,
                limits,
                point_ns: (config.point_time_ms * 1e6) as u64,
                last: None,
            });
        }
        for target in targets {
            let (slot, velocity) = match *target {
                ActionTarget::JointPosition(i) => (Slot::Joint(usize::from(i)), false),
                ActionTarget::JointVelocity(i) => (Slot::Joint(usize::from(i)), true),
                ActionTarget::Gripper => (Slot::Gripper, false),
                _ => continue,
            };
            let name = match slot {
                Slot::Joint(i) => joints.get(i).map_or("?", |j| j.name.as_str()),
                Slot::Gripper => gripper_joint,
            };
            let Some(plan) = plans.iter().find(|p| p.slots.contains(&slot)) else {
                return Err(format!(
                    "the policy drives `{name}` but no [[ros.controllers]] entry carries it, so its commands would go nowhere; fix: add `{name}` to a controller's joints"
                ));
            };
            let fits = match plan.kind {
                ControllerKind::JointTrajectory => true,
                ControllerKind::ForwardPosition => !velocity,
                ControllerKind::ForwardVelocity => velocity,
            };
            if !fits {
                return Err(format!(
                    "the policy drives `{name}` by {}, but its controller {} is {:?}; fix: a controller of the matching kind (joint_trajectory takes both)",
                    if velocity { "velocity" } else { "position" },
                    plan.topic,
                    plan.kind
                ));
            }
        }
        Ok(plans)
    }

    /// The message for `command` (the actuator gate's frame), or `None` when there is nothing
    /// to hold yet (no position ever sent). Positions are clamped to the limits once more.
    pub fn message(&mut self, command: &CommandFrame) -> Option<JointCommand> {
        let n = self.slots.len();
        let target = |slot: Slot| match slot {
            Slot::Joint(i) => command.joints.get(i).and_then(|j| j.position),
            Slot::Gripper => command.gripper_position,
        };
        let commanded_velocity = |slot: Slot| match slot {
            Slot::Joint(i) => command.joints.get(i).and_then(|j| j.velocity),
            Slot::Gripper => None,
        };
        let moving = command.drive_enabled;
        match self.kind {
            ControllerKind::ForwardVelocity => {
                let data = self
                    .slots
                    .iter()
                    .map(|&s| {
                        if moving {
                            commanded_velocity(s).unwrap_or(0.0)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Some(JointCommand::Array(self.array(data)))
            }
            ControllerKind::ForwardPosition => {
                let mut data = Vec::with_capacity(n);
                for (k, &slot) in self.slots.iter().enumerate() {
                    let held = self.last.as_ref().map(|(_, p)| p[k]);
                    let p = if moving { target(slot).or(held) } else { held };
                    data.push(self.clamp(k, p?));
                }
                self.last = Some((command.stamp_ns, data.clone()));
                Some(JointCommand::Array(self.array(data)))
            }
            ControllerKind::JointTrajectory => {
                let mut positions = Vec::with_capacity(n);
                let mut velocities = Vec::with_capacity(n);
                let dt_s = self
                    .last
                    .as_ref()
                    .map(|(t, _)| command.stamp_ns.saturating_sub(*t) as f64 * 1e-9);
                for (k, &slot) in self.slots.iter().enumerate() {
                    let held = self.last.as_ref().map(|(_, p)| p[k]);
                    let (p, v) = match (moving, target(slot)) {
                        (true, Some(p)) => {
                            let p = self.clamp(k, p);
                            let v =
                                commanded_velocity(slot).unwrap_or_else(|| match (held, dt_s) {
                                    (Some(h), Some(dt)) if dt > 0.0 => (p - h) / dt,
                                    _ => 0.0,
                                });
                            (p, v)
                        }
                        // No target, or drive power off: hold where the last message went.
                        _ => (held?, 0.0),
                    };
                    positions.push(p);
                    velocities.push(if v.is_finite() { v } else { 0.0 });
                }
                self.last = Some((command.stamp_ns, positions.clone()));
                Some(JointCommand::Trajectory(
                    self.trajectory(positions, velocities),
                ))
            }
        }
    }

    fn clamp(&self, k: usize, p: f64) -> f64 {
        let (lo, hi, _) = self.limits[k];
        p.clamp(lo, hi)
    }

    fn array(&self, data: Vec<f64>) -> Float64MultiArray {
        Float64MultiArray {
            layout: MultiArrayLayout::default(),
            data,
        }
    }

    /// The target point, then the stopping tail: each joint decelerates at its max
    /// acceleration to zero velocity (clamped to its range), reached when the slowest has.
    fn trajectory(&self, positions: Vec<f64>, velocities: Vec<f64>) -> JointTrajectory {
        let stop_s = velocities
            .iter()
            .zip(&self.limits)
            .map(|(v, (_, _, a))| v.abs() / a)
            .fold(0.0f64, f64::max);
        let mut points = vec![JointTrajectoryPoint {
            positions: positions.clone(),
            velocities: velocities.clone(),
            time_from_start: Duration::from_nanos(self.point_ns),
            ..JointTrajectoryPoint::default()
        }];
        if stop_s > 0.0 {
            let tail = positions
                .iter()
                .zip(&velocities)
                .enumerate()
                .map(|(k, (p, v))| {
                    let a = self.limits[k].2;
                    // Decelerating at `a` from `v` covers v²/2a; a joint that stops sooner
                    // than the slowest waits there.
                    self.clamp(k, p + v * (v.abs() / a) / 2.0)
                })
                .collect();
            points.push(JointTrajectoryPoint {
                positions: tail,
                velocities: vec![0.0; positions.len()],
                time_from_start: Duration::from_nanos(self.point_ns + (stop_s * 1e9).ceil() as u64),
                ..JointTrajectoryPoint::default()
            });
        }
        JointTrajectory {
            // Zero stamp: the controller starts it on receipt (clocks need not be shared).
            header: Header::default(),
            joint_names: self.joint_names.clone(),
            points,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safety() -> reflex_safety::SafetyConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../launch/arm.toml"
        ))
        .unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        value["safety"].clone().try_into().unwrap()
    }

    fn jtc() -> ControllerConfig {
        ControllerConfig {
            kind: ControllerKind::JointTrajectory,
            topic: "/arm_controller/joint_trajectory".into(),
            joints: vec!["shoulder".into(), "elbow".into(), "wrist".into()],
            point_time_ms: 20.0,
            allow_without_timeout: false,
        }
    }

    fn gripper() -> ControllerConfig {
        ControllerConfig {
            kind: ControllerKind::ForwardPosition,
            topic: "/gripper_controller/commands".into(),
            joints: vec!["gripper".into()],
            point_time_ms: 20.0,
            allow_without_timeout: false,
        }
    }

    fn frame(stamp_ns: u64, positions: [f64; 3], gripper: f64) -> CommandFrame {
        let mut c = CommandFrame {
            seq: 1,
            stamp_ns,
            drive_enabled: true,
            gripper_position: Some(gripper),
            ..CommandFrame::zero()
        };
        for (j, p) in c.joints.iter_mut().zip(positions) {
            j.position = Some(p);
        }
        c
    }

    #[test]
    fn a_policy_joint_no_controller_carries_is_refused() {
        let s = safety();
        let targets = [
            ActionTarget::JointPosition(0),
            ActionTarget::JointPosition(1),
            ActionTarget::JointPosition(2),
            ActionTarget::Gripper,
        ];
        ControllerPlan::for_config(&[jtc(), gripper()], "gripper", &s, &targets).unwrap();
        let e = ControllerPlan::for_config(&[jtc()], "gripper", &s, &targets).unwrap_err();
        assert!(e.contains("drives `gripper`") && e.contains("fix:"), "{e}");
        let mut two = gripper();
        two.joints = vec!["elbow".into()];
        let e = ControllerPlan::for_config(&[jtc(), two], "gripper", &s, &targets).unwrap_err();
        assert!(e.contains("two controllers"), "{e}");
        let mut unknown = jtc();
        unknown.joints.push("wrist_roll".into());
        let e = ControllerPlan::for_config(&[unknown], "gripper", &s, &[]).unwrap_err();
        assert!(
            e.contains("`wrist_roll`") && e.contains("shoulder, elbow, wrist"),
            "{e}"
        );
        let velocity = ControllerConfig {
            kind: ControllerKind::ForwardVelocity,
            ..jtc()
        };
        let e = ControllerPlan::for_config(std::slice::from_ref(&velocity), "gripper", &s, &[])
            .unwrap_err();
        assert!(e.contains("no command timeout"), "{e}");
        let velocity = ControllerConfig {
            allow_without_timeout: true,
            ..velocity
        };
        let e = ControllerPlan::for_config(&[velocity], "gripper", &s, &targets[..1]).unwrap_err();
        assert!(e.contains("by position"), "{e}");
    }

    #[test]
    fn trajectories_stream_with_velocity_and_end_in_a_stop_within_the_limits() {
        let s = safety();
        let mut plans =
            ControllerPlan::for_config(&[jtc(), gripper()], "gripper", &s, &[]).unwrap();
        // Nothing sent yet and no target: nothing to hold.
        assert_eq!(plans[0].message(&CommandFrame::zero()), None);
        let first = plans[0].message(&frame(1_000_000_000, [0.0, 0.5, 2.99], 0.02));
        let Some(JointCommand::Trajectory(t)) = first else {
            panic!("{first:?}")
        };
        assert_eq!(t.joint_names, ["shoulder", "elbow", "wrist"]);
        assert_eq!(t.header.stamp, Time::default());
        assert_eq!(t.points.len(), 1, "at rest: no tail");
        assert_eq!(t.points[0].velocities, [0.0; 3]);
        // 10 ms later, 5 mrad further on the shoulder: 0.5 rad/s, then a tail at 4 rad/s².
        let Some(JointCommand::Trajectory(t)) =
            plans[0].message(&frame(1_010_000_000, [0.005, 0.5, 3.5], 0.02))
        else {
            panic!()
        };
        let [p, tail] = t.points.as_slice() else {
            panic!("{t:?}")
        };
        assert!((p.velocities[0] - 0.5).abs() < 1e-9, "{p:?}");
        assert_eq!(p.positions[2], 3.0, "clamped to the wrist's max_position");
        assert_eq!(p.time_from_start, Duration::from_nanos(20_000_000));
        assert_eq!(
            tail.velocities, [0.0; 3],
            "JTC refuses a last point that moves"
        );
        // Stopping from 0.5 rad/s at 4 rad/s² takes 125 ms and 31.25 mrad.
        assert!(
            (tail.positions[0] - (0.005 + 0.03125)).abs() < 1e-9,
            "{tail:?}"
        );
        assert_eq!(
            tail.time_from_start,
            Duration::from_nanos(20_000_000 + 125_000_000)
        );
        // Drive power off: hold where the last message went, at zero velocity.
        let held = CommandFrame {
            drive_enabled: false,
            ..frame(1_020_000_000, [1.0, 1.0, 1.0], 0.0)
        };
        let Some(JointCommand::Trajectory(t)) = plans[0].message(&held) else {
            panic!()
        };
        assert_eq!(t.points.len(), 1);
        assert_eq!(t.points[0].positions, [0.005, 0.5, 3.0]);
        assert_eq!(t.points[0].velocities, [0.0; 3]);
        // The gripper: a position, re-sent when a frame has none.
        let Some(JointCommand::Array(a)) = plans[1].message(&frame(1, [0.0; 3], 0.5)) else {
            panic!()
        };
        assert_eq!(a.data, [0.08], "clamped to the gripper's range");
        let Some(JointCommand::Array(a)) = plans[1].message(&CommandFrame::zero()) else {
            panic!()
        };
        assert_eq!(a.data, [0.08]);
    }
}
