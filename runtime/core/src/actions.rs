//! The policy's contract with the robot, resolved against the robot's config at load: which
//! command each action dimension drives ([`ActionTarget`]) and where each entry of the state
//! vector comes from ([`StateSource`]). Both are parsed from `policy.json` strings
//! ([`ActionTarget::resolve`], [`StateSource::resolve`]) with joints named as in
//! `[safety.arm] joints`, so a package binds to joints by name, never by position alone.
//!
//! Spellings (`policy.json` `action_space[].drives` and `state_sources[]`):
//! - `base_vx`, `base_vy`, `base_wz` — base velocity (m/s, rad/s), base frame;
//! - `joint_position/<name>`, `joint_velocity/<name>` — a joint of `[safety.arm] joints`;
//! - `gripper` (action) / `gripper_position` (state) — `[safety.arm.gripper]`.

use reflex_safety::{Command, MAX_JOINTS, Twist};

/// What one action dimension drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionTarget {
    BaseVx,
    BaseVy,
    BaseWz,
    /// Absolute position target of joint `i` of `[safety.arm] joints` (resolved by name).
    JointPosition(u8),
    /// Velocity target of joint `i`.
    JointVelocity(u8),
    /// Gripper position target.
    Gripper,
}

/// Where one entry of the policy's state vector comes from (measured, never commanded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    BaseVx,
    BaseVy,
    BaseWz,
    JointPosition(u8),
    JointVelocity(u8),
    GripperPosition,
}

/// What the robot has of the things a policy may drive or read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RobotShape {
    pub has_base: bool,
    /// `[safety.arm] joints` names, in order (empty without an arm).
    pub joints: Vec<String>,
    pub has_gripper: bool,
}

impl RobotShape {
    /// The shape `config` describes.
    pub fn of(config: &reflex_safety::SafetyConfig) -> Self {
        Self {
            has_base: config.base.is_some(),
            joints: config
                .arm
                .as_ref()
                .map(|a| a.joints.iter().map(|j| j.name.clone()).collect())
                .unwrap_or_default(),
            has_gripper: config.arm.as_ref().is_some_and(|a| a.gripper.is_some()),
        }
    }
}

fn joint_index(kind: &str, rest: &str, shape: &RobotShape) -> Result<u8, String> {
    let index = shape.joints.iter().position(|j| j == rest);
    match index {
        Some(i) if i < MAX_JOINTS => Ok(i as u8),
        _ if shape.joints.is_empty() => Err(format!(
            "`{kind}/{rest}`: the robot has no arm ([safety.arm] is not configured)"
        )),
        _ => Err(format!(
            "`{kind}/{rest}`: [safety.arm] has no joint `{rest}` (its joints: {})",
            shape.joints.join(", ")
        )),
    }
}

fn base(s: &str, shape: &RobotShape) -> Option<Result<u8, String>> {
    let axis = match s {
        "base_vx" => 0,
        "base_vy" => 1,
        "base_wz" => 2,
        _ => return None,
    };
    Some(if shape.has_base {
        Ok(axis)
    } else {
        Err(format!(
            "`{s}`: the robot has no base ([safety.base] is not configured)"
        ))
    })
}

impl ActionTarget {
    /// `drives` against the robot's config; the error names what is missing.
    pub fn resolve(drives: &str, shape: &RobotShape) -> Result<Self, String> {
        if let Some(axis) = base(drives, shape) {
            return Ok([Self::BaseVx, Self::BaseVy, Self::BaseWz][axis? as usize]);
        }
        if drives == "gripper" {
            return if shape.has_gripper {
                Ok(Self::Gripper)
            } else {
                Err(
                    "`gripper`: the robot has no gripper ([safety.arm.gripper] is not configured)"
                        .into(),
                )
            };
        }
        match drives.split_once('/') {
            Some(("joint_position", name)) => {
                joint_index("joint_position", name, shape).map(Self::JointPosition)
            }
            Some(("joint_velocity", name)) => {
                joint_index("joint_velocity", name, shape).map(Self::JointVelocity)
            }
            _ => Err(format!(
                "`{drives}` is not a command: base_vx, base_vy, base_wz, joint_position/<joint>, joint_velocity/<joint> or gripper"
            )),
        }
    }

    /// True for every spelling [`Self::resolve`] may accept on some robot (the manifest's own
    /// check, before a robot is known).
    pub fn is_spelling(drives: &str) -> bool {
        matches!(drives, "base_vx" | "base_vy" | "base_wz" | "gripper")
            || matches!(drives.split_once('/'), Some(("joint_position" | "joint_velocity", n)) if valid_name(n))
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

impl StateSource {
    /// A `state_sources` entry against the robot's config; the error names what is missing.
    pub fn resolve(source: &str, shape: &RobotShape) -> Result<Self, String> {
        if let Some(axis) = base(source, shape) {
            return Ok([Self::BaseVx, Self::BaseVy, Self::BaseWz][axis? as usize]);
        }
        if source == "gripper_position" {
            return if shape.has_gripper {
                Ok(Self::GripperPosition)
            } else {
                Err("`gripper_position`: the robot has no gripper ([safety.arm.gripper] is not configured)".into())
            };
        }
        match source.split_once('/') {
            Some(("joint_position", name)) => {
                joint_index("joint_position", name, shape).map(Self::JointPosition)
            }
            Some(("joint_velocity", name)) => {
                joint_index("joint_velocity", name, shape).map(Self::JointVelocity)
            }
            _ => Err(format!(
                "`{source}` is not a state source: base_vx, base_vy, base_wz, joint_position/<joint>, joint_velocity/<joint> or gripper_position"
            )),
        }
    }

    /// True for every spelling [`Self::resolve`] may accept on some robot.
    pub fn is_spelling(source: &str) -> bool {
        matches!(
            source,
            "base_vx" | "base_vy" | "base_wz" | "gripper_position"
        ) || matches!(source.split_once('/'), Some(("joint_position" | "joint_velocity", n)) if valid_name(n))
    }
}

/// The measured state a policy's state vector is taken from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured<'a> {
    /// Base velocity, measured (fresh odometry); `None` without it.
    pub base: Option<Twist>,
    /// In `[safety.arm] joints` order; empty when no joint state has arrived.
    pub joint_positions: &'a [f64],
    pub joint_velocities: &'a [f64],
    pub gripper_position: Option<f64>,
}

/// Fills `out` from `measured` per `sources` (one entry each). False, leaving `out` unspecified,
/// when a source has no measurement (no joint state yet, no gripper reading): the policy is
/// then not run, so the robot stops rather than act on a guessed state.
pub fn fill_state(sources: &[StateSource], measured: &Measured<'_>, out: &mut [f32]) -> bool {
    if out.len() != sources.len() {
        return false;
    }
    for (slot, source) in out.iter_mut().zip(sources) {
        let value = match *source {
            StateSource::BaseVx => measured.base.map(|b| b.vx_mps),
            StateSource::BaseVy => measured.base.map(|b| b.vy_mps),
            StateSource::BaseWz => measured.base.map(|b| b.wz_radps),
            StateSource::JointPosition(i) => measured.joint_positions.get(usize::from(i)).copied(),
            StateSource::JointVelocity(i) => measured.joint_velocities.get(usize::from(i)).copied(),
            StateSource::GripperPosition => measured.gripper_position,
        };
        match value {
            Some(v) if v.is_finite() => *slot = v as f32,
            _ => return false,
        }
    }
    true
}

/// `action` (one step of a chunk, physical units) onto `command` per `targets`: base axes,
/// joint targets and the gripper. Dimensions past `targets` are ignored.
pub fn apply_action(targets: &[ActionTarget], action: &[f32], command: &mut Command) {
    for (value, target) in action.iter().zip(targets) {
        let v = f64::from(*value);
        match *target {
            ActionTarget::BaseVx => command.base.vx_mps = v,
            ActionTarget::BaseVy => command.base.vy_mps = v,
            ActionTarget::BaseWz => command.base.wz_radps = v,
            ActionTarget::JointPosition(i) => command.joints[usize::from(i)].position = Some(v),
            ActionTarget::JointVelocity(i) => command.joints[usize::from(i)].velocity = Some(v),
            ActionTarget::Gripper => command.gripper_position = Some(v),
        }
    }
}

/// True when some dimension drives an arm joint.
pub fn drives_joints(targets: &[ActionTarget]) -> bool {
    targets.iter().any(|t| {
        matches!(
            t,
            ActionTarget::JointPosition(_) | ActionTarget::JointVelocity(_)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm() -> Vec<String> {
        ["shoulder", "elbow", "wrist"].map(String::from).to_vec()
    }

    #[test]
    fn targets_resolve_by_name_and_refuse_what_the_robot_lacks() {
        let shape = RobotShape {
            has_base: false,
            joints: arm(),
            has_gripper: true,
        };
        assert_eq!(
            ActionTarget::resolve("joint_position/elbow", &shape),
            Ok(ActionTarget::JointPosition(1))
        );
        assert_eq!(
            ActionTarget::resolve("joint_velocity/wrist", &shape),
            Ok(ActionTarget::JointVelocity(2))
        );
        // Joints are bound by name only: an index spelling is not a command.
        assert!(ActionTarget::resolve("joint_2_velocity", &shape).is_err());
        assert!(!ActionTarget::is_spelling("joint_0_position"));
        assert_eq!(
            ActionTarget::resolve("gripper", &shape),
            Ok(ActionTarget::Gripper)
        );
        let e = ActionTarget::resolve("joint_position/wrist_roll", &shape).unwrap_err();
        assert!(
            e.contains("no joint `wrist_roll`") && e.contains("shoulder, elbow, wrist"),
            "{e}"
        );
        let e = ActionTarget::resolve("base_vx", &shape).unwrap_err();
        assert!(e.contains("[safety.base]"), "{e}");
        let base = RobotShape {
            has_base: true,
            joints: vec![],
            has_gripper: false,
        };
        let e = ActionTarget::resolve("joint_position/elbow", &base).unwrap_err();
        assert!(e.contains("no arm"), "{e}");
        assert!(ActionTarget::resolve("gripper", &base).is_err());
        assert!(ActionTarget::is_spelling("joint_position/wrist_roll"));
        assert!(!ActionTarget::is_spelling("joint_position/"));
        assert!(!ActionTarget::is_spelling("elbow"));
    }

    #[test]
    fn state_is_measured_and_missing_measurements_refuse_the_observation() {
        let shape = RobotShape {
            has_base: true,
            joints: arm(),
            has_gripper: true,
        };
        let sources: Vec<StateSource> = [
            "joint_position/wrist",
            "joint_velocity/shoulder",
            "gripper_position",
            "base_wz",
        ]
        .iter()
        .map(|s| StateSource::resolve(s, &shape).unwrap())
        .collect();
        let mut measured = Measured {
            base: Some(Twist {
                wz_radps: 0.25,
                ..Twist::default()
            }),
            joint_positions: &[0.1, 0.2, 0.3],
            joint_velocities: &[-1.0, 0.0, 0.0],
            gripper_position: Some(0.04),
        };
        let mut out = [0.0f32; 4];
        assert!(fill_state(&sources, &measured, &mut out));
        assert_eq!(out, [0.3, -1.0, 0.04, 0.25]);
        measured.gripper_position = None;
        assert!(!fill_state(&sources, &measured, &mut out));
        measured.gripper_position = Some(f64::NAN);
        assert!(!fill_state(&sources, &measured, &mut out));
        measured.gripper_position = Some(0.0);
        measured.base = None;
        assert!(
            !fill_state(&sources, &measured, &mut out),
            "no odometry: no base state"
        );
        measured.base = Some(Twist::default());
        measured.joint_positions = &[];
        assert!(!fill_state(&sources, &measured, &mut out));
        let e = StateSource::resolve("joint_position/hand", &shape).unwrap_err();
        assert!(e.contains("no joint `hand`"), "{e}");
    }

    #[test]
    fn actions_drive_joints_gripper_and_base() {
        let targets = [
            ActionTarget::JointPosition(1),
            ActionTarget::Gripper,
            ActionTarget::BaseVx,
            ActionTarget::JointVelocity(0),
        ];
        let mut c = Command::default();
        apply_action(&targets, &[0.5, 0.02, 0.3, -0.1], &mut c);
        assert_eq!(c.joints[1].position, Some(0.5));
        assert_eq!(c.joints[0].velocity, Some(f64::from(-0.1f32)));
        assert_eq!(c.gripper_position, Some(f64::from(0.02f32)));
        assert_eq!(c.base.vx_mps, f64::from(0.3f32));
        assert!(drives_joints(&targets));
        assert!(!drives_joints(&[ActionTarget::BaseVx]));
    }
}
