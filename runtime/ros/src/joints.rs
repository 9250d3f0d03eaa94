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
//!   zero velocity. A frame without targets (the actuator gate's zero: a stale verdict, an
//!   E-stop press) is a stopping trajectory from the last message's motion:
//!   one point at rest where each joint gets decelerating at its max acceleration. An empty
//!   trajectory is never sent: JTC (Jazzy) rejects it and keeps moving. Every joint of a
//!   joint_trajectory controller must be driven by a position target of the policy (JTC needs
//!   all its joints in every message), and the gripper goes through its own controller.
//! - **forward_position**: positions in `joints` order. The controller has no timeout and
//!   holds the last position; a frame without a position target re-sends the last one.
//! - **forward_velocity**: velocities; a frame without targets (the gate's zero) sends zeros.
//!   The controller has no timeout and keeps the last velocity for ever if nothing more
//!   arrives, so Reflex refuses it unless `allow_without_timeout = true` states that the drive
//!   has its own command watchdog.
//!
//! `launch/ros2_control/arm_controllers.yaml` ships the controller settings (docs:
//! launch/README.md, "Arm controllers").

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
    /// Velocities of the last moving message (joint_trajectory), for a stop from that motion.
    last_velocities: Vec<f64>,
    /// While stopping (frames without targets): where and when (monotonic ns) the joints come
    /// to rest.
    stopping: Option<(u64, Vec<f64>)>,
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
                if slot == Slot::Gripper && config.kind != ControllerKind::ForwardPosition {
                    return Err(format!(
                        "{key}.joints: the gripper goes through its own forward_position controller (JointGroupPositionController), not a {:?} one; fix: move `{name}` to its own [[ros.controllers]] entry",
                        config.kind
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
                last_velocities: vec![0.0; config.joints.len()],
                stopping: None,
            });
        }
        // Every controller joint is driven by a target of the kind its controller takes: a
        // joint without one would make the controller hold nothing (JTC needs every joint in
        // every message; a forward controller would get no value for it).
        for (c, plan) in plans.iter().enumerate() {
            for (slot, name) in plan.slots.iter().zip(&plan.joint_names) {
                let driven = targets.iter().find_map(|t| match (*t, *slot) {
                    (ActionTarget::JointPosition(i), Slot::Joint(j)) if usize::from(i) == j => {
                        Some(false)
                    }
                    (ActionTarget::JointVelocity(i), Slot::Joint(j)) if usize::from(i) == j => {
                        Some(true)
                    }
                    (ActionTarget::Gripper, Slot::Gripper) => Some(false),
                    _ => None,
                });
                let fits = match (plan.kind, driven) {
                    (_, None) => false,
                    (
                        ControllerKind::JointTrajectory | ControllerKind::ForwardPosition,
                        Some(v),
                    ) => !v,
                    (ControllerKind::ForwardVelocity, Some(v)) => v,
                };
                if !fits {
                    let what = match driven {
                        None => "is not driven by the policy".to_string(),
                        Some(true) => "is driven by velocity".to_string(),
                        Some(false) => "is driven by position".to_string(),
                    };
                    return Err(format!(
                        "ros.controllers[{c}] ({}): `{name}` {what}, but a {:?} controller needs {} targets for every joint; fix: list only the joints the policy drives that way, or use a policy that drives `{name}`",
                        plan.topic,
                        plan.kind,
                        if plan.kind == ControllerKind::ForwardVelocity {
                            "velocity"
                        } else {
                            "position"
                        },
                    ));
                }
            }
        }
        // Every driven joint reaches a controller (the checks above cover the kinds).
        for target in targets {
            let slot = match *target {
                ActionTarget::JointPosition(i) | ActionTarget::JointVelocity(i) => {
                    Slot::Joint(usize::from(i))
                }
                ActionTarget::Gripper => Slot::Gripper,
                _ => continue,
            };
            let name = match slot {
                Slot::Joint(i) => joints.get(i).map_or("?", |j| j.name.as_str()),
                Slot::Gripper => gripper_joint,
            };
            if !plans.iter().any(|p| p.slots.contains(&slot)) {
                return Err(format!(
                    "the policy drives `{name}` but no [[ros.controllers]] entry carries it, so its commands would go nowhere; fix: add `{name}` to a controller's joints"
                ));
            }
        }
        Ok(plans)
    }

    /// The message for `command` (the actuator gate's frame) at `now_ns` (monotonic), or
    /// `None` when there is nothing to hold yet (no position ever sent). Positions are clamped
    /// to the limits once more.
    pub fn message(&mut self, command: &CommandFrame, now_ns: u64) -> Option<JointCommand> {
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
                    let p = target(slot).or(held);
                    data.push(self.clamp(k, p?));
                }
                self.last = Some((command.stamp_ns, data.clone()));
                Some(JointCommand::Array(self.array(data)))
            }
            ControllerKind::JointTrajectory => {
                let targets: Option<Vec<f64>> = self.slots.iter().map(|&s| target(s)).collect();
                // The verdict's targets whenever it has them (while stopping or latched they
                // are the safety layer's deceleration and hold, from where the arm is); no
                // targets (the gate's zero): come to rest from the last motion.
                let Some(targets) = targets else {
                    return self.stop(now_ns).map(JointCommand::Trajectory);
                };
                self.stopping = None;
                let dt_s = self
                    .last
                    .as_ref()
                    .map(|(t, _)| command.stamp_ns.saturating_sub(*t) as f64 * 1e-9);
                let mut positions = Vec::with_capacity(n);
                let mut velocities = Vec::with_capacity(n);
                for (k, (&slot, p)) in self.slots.iter().zip(targets).enumerate() {
                    let held = self.last.as_ref().map(|(_, p)| p[k]);
                    let p = self.clamp(k, p);
                    let v = commanded_velocity(slot).unwrap_or_else(|| match (held, dt_s) {
                        (Some(h), Some(dt)) if dt > 0.0 => (p - h) / dt,
                        _ => 0.0,
                    });
                    positions.push(p);
                    velocities.push(if v.is_finite() { v } else { 0.0 });
                }
                self.last = Some((command.stamp_ns, positions.clone()));
                self.last_velocities.clone_from(&velocities);
                Some(JointCommand::Trajectory(
                    self.trajectory(positions, velocities),
                ))
            }
        }
    }

    /// A trajectory to rest from the last message: one point at zero velocity where each joint
    /// stops decelerating at its max acceleration, reached when the slowest has (the same
    /// point, with the time left, while the stop lasts); `None` before any message.
    fn stop(&mut self, now_ns: u64) -> Option<JointTrajectory> {
        let (_, last) = self.last.as_ref()?;
        let (at_ns, rest) = match &self.stopping {
            Some(s) => s.clone(),
            None => {
                let (rest, stop_s) = self.rest_from(last, &self.last_velocities.clone());
                let s = (now_ns + (stop_s * 1e9).ceil() as u64, rest);
                self.stopping = Some(s.clone());
                // Once at rest the hold is at `rest`, at zero velocity.
                self.last_velocities.iter_mut().for_each(|v| *v = 0.0);
                s
            }
        };
        let left = at_ns.saturating_sub(now_ns).max(self.point_ns);
        self.last = Some((self.last.as_ref().map_or(0, |l| l.0), rest.clone()));
        Some(JointTrajectory {
            header: Header::default(),
            joint_names: self.joint_names.clone(),
            points: vec![JointTrajectoryPoint {
                velocities: vec![0.0; rest.len()],
                positions: rest,
                time_from_start: Duration::from_nanos(left),
                ..JointTrajectoryPoint::default()
            }],
        })
    }

    /// Where each joint comes to rest from (`positions`, `velocities`) decelerating at its max
    /// acceleration (clamped to its range), and how long the slowest takes (s).
    fn rest_from(&self, positions: &[f64], velocities: &[f64]) -> (Vec<f64>, f64) {
        let stop_s = velocities
            .iter()
            .zip(&self.limits)
            .map(|(v, (_, _, a))| v.abs() / a)
            .fold(0.0f64, f64::max);
        let rest = positions
            .iter()
            .zip(velocities)
            .enumerate()
            .map(|(k, (p, v))| {
                let a = self.limits[k].2;
                // Decelerating at `a` from `v` covers v²/2a; a joint that stops sooner than
                // the slowest waits there.
                self.clamp(k, p + v * (v.abs() / a) / 2.0)
            })
            .collect();
        (rest, stop_s)
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
        let (tail, stop_s) = self.rest_from(&positions, &velocities);
        let mut points = vec![JointTrajectoryPoint {
            positions,
            velocities,
            time_from_start: Duration::from_nanos(self.point_ns),
            ..JointTrajectoryPoint::default()
        }];
        if stop_s > 0.0 {
            points.push(JointTrajectoryPoint {
                velocities: vec![0.0; tail.len()],
                positions: tail,
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

    const ARM: [ActionTarget; 4] = [
        ActionTarget::JointPosition(0),
        ActionTarget::JointPosition(1),
        ActionTarget::JointPosition(2),
        ActionTarget::Gripper,
    ];

    #[test]
    fn a_policy_joint_no_controller_carries_is_refused() {
        let s = safety();
        ControllerPlan::for_config(&[jtc(), gripper()], "gripper", &s, &ARM).unwrap();
        let e = ControllerPlan::for_config(&[jtc()], "gripper", &s, &ARM).unwrap_err();
        assert!(e.contains("drives `gripper`") && e.contains("fix:"), "{e}");
        let mut two = gripper();
        two.joints = vec!["elbow".into()];
        let e = ControllerPlan::for_config(&[jtc(), two], "gripper", &s, &ARM).unwrap_err();
        assert!(e.contains("two controllers"), "{e}");
        let mut unknown = jtc();
        unknown.joints.push("wrist_roll".into());
        let e = ControllerPlan::for_config(&[unknown], "gripper", &s, &ARM).unwrap_err();
        assert!(
            e.contains("`wrist_roll`") && e.contains("shoulder, elbow, wrist"),
            "{e}"
        );
        // A controller joint the policy does not drive would make JTC hold nothing.
        let e =
            ControllerPlan::for_config(&[jtc(), gripper()], "gripper", &s, &ARM[1..]).unwrap_err();
        assert!(e.contains("`shoulder` is not driven by the policy"), "{e}");
        // The gripper on the arm's JTC: refused (its own controller).
        let mut with_gripper = jtc();
        with_gripper.joints.push("gripper".into());
        let e = ControllerPlan::for_config(&[with_gripper], "gripper", &s, &ARM).unwrap_err();
        assert!(e.contains("its own forward_position controller"), "{e}");
        // Velocity targets on a JTC: refused (it takes positions for every joint).
        let by_velocity = [
            ActionTarget::JointVelocity(0),
            ActionTarget::JointPosition(1),
            ActionTarget::JointPosition(2),
        ];
        let e = ControllerPlan::for_config(&[jtc()], "gripper", &s, &by_velocity).unwrap_err();
        assert!(e.contains("`shoulder` is driven by velocity"), "{e}");
        let velocity = ControllerConfig {
            kind: ControllerKind::ForwardVelocity,
            ..jtc()
        };
        let e = ControllerPlan::for_config(std::slice::from_ref(&velocity), "gripper", &s, &ARM)
            .unwrap_err();
        assert!(e.contains("no command timeout"), "{e}");
        let velocity = ControllerConfig {
            allow_without_timeout: true,
            ..velocity
        };
        let e = ControllerPlan::for_config(&[velocity], "gripper", &s, &ARM).unwrap_err();
        assert!(e.contains("is driven by position"), "{e}");
    }

    #[test]
    fn trajectories_stream_with_velocity_and_end_in_a_stop_within_the_limits() {
        let s = safety();
        let mut plans =
            ControllerPlan::for_config(&[jtc(), gripper()], "gripper", &s, &ARM).unwrap();
        // Nothing sent yet and no target: nothing to hold.
        assert_eq!(plans[0].message(&CommandFrame::zero(), 0), None);
        let first = plans[0].message(&frame(1_000_000_000, [0.0, 0.5, 2.99], 0.02), 0);
        let Some(JointCommand::Trajectory(t)) = first else {
            panic!("{first:?}")
        };
        assert_eq!(t.joint_names, ["shoulder", "elbow", "wrist"]);
        assert_eq!(t.header.stamp, Time::default());
        assert_eq!(t.points.len(), 1, "at rest: no tail");
        assert_eq!(t.points[0].velocities, [0.0; 3]);
        // 10 ms later, 5 mrad further on the shoulder: 0.5 rad/s, then a tail at 4 rad/s².
        let Some(JointCommand::Trajectory(t)) =
            plans[0].message(&frame(1_010_000_000, [0.005, 0.5, 3.5], 0.02), 0)
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
        // The gate's zero (no targets: a stale verdict, an E-stop press): a stop from that
        // motion, one point at rest where the joints get decelerating, 125 ms away; the same
        // point while it lasts.
        let Some(JointCommand::Trajectory(t)) =
            plans[0].message(&CommandFrame::zero(), 5_000_000_000)
        else {
            panic!()
        };
        let [rest] = t.points.as_slice() else {
            panic!("{t:?}")
        };
        assert!((rest.positions[0] - 0.03625).abs() < 1e-9, "{rest:?}");
        assert_eq!(rest.velocities, [0.0; 3]);
        assert_eq!(rest.time_from_start, Duration::from_nanos(125_000_000));
        let Some(JointCommand::Trajectory(t)) =
            plans[0].message(&CommandFrame::zero(), 5_100_000_000)
        else {
            panic!()
        };
        assert_eq!(t.points[0].positions, rest.positions);
        assert_eq!(
            t.points[0].time_from_start,
            Duration::from_nanos(25_000_000)
        );
        // The gripper: a position, re-sent when a frame has none.
        let Some(JointCommand::Array(a)) = plans[1].message(&frame(1, [0.0; 3], 0.5), 0) else {
            panic!()
        };
        assert_eq!(a.data, [0.08], "clamped to the gripper's range");
        let Some(JointCommand::Array(a)) = plans[1].message(&CommandFrame::zero(), 0) else {
            panic!()
        };
        assert_eq!(a.data, [0.08]);
    }
}
