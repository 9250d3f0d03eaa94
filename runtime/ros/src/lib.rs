//! Reflex in a ROS 2 graph. [`port`] is middleware-neutral: topic names, QoS profiles, the
//! messages Reflex reads and writes as serde structs whose CDR bytes equal what ROS 2 sends
//! (golden files from PyPI `rosbags`), the E-stop semantics and the diagnostics. The adapters
//! only move those messages between a middleware and the loop's frames, as a
//! [`reflex_core::RobotIo`]:
//! - `dds` (feature `dds`; `dds-jazzy` / `dds-humble` pick the graph's wire format): ros2-client,
//!   a pure-Rust DDS node; no ROS installation needed; tested on the wire against Cyclone DDS
//!   and against rclpy nodes of ROS 2 Jazzy on Fast DDS.
//! - `ros2` (feature `ros2`): r2r over rcl, for a machine with ROS 2 Humble/Jazzy sourced;
//!   built, linked and tested here against ROS 2 Jazzy from PyPI wheels (`scripts/setup-ros2`)
//!   with rclpy peers; the aarch64 cross-check type-checks it (`ros2-doc-only`).
//!
//! # Guarantees
//! - All ROS I/O runs on the robot I/O thread, never on the RT thread; a message is stamped on
//!   the monotonic clock at reception, so a silent publisher goes stale and the robot stops.
//! - An E-stop source that has not reported yet counts as pressed (SAF-002); `false` on
//!   `/reflex/estop` releases, it never resets: a reset is its own explicit request.
//! - Bad messages (wrong length, NaN, unknown joint) are dropped and counted, never guessed.
//!
//! # Config keys
//! `[ros]` ([`RosConfig`]): `node_name` (`"reflex"`), `namespace` (`"/"`), `use_sim_time`
//! (false), `[ros.topics]` ([`port::Topics`]: every topic name, remappable), `estop_devices`,
//! `reset_from`, `start_from`, `cmd_vel_type` (`twist` | `twist_stamped`; unset: the ROS
//! distribution's convention), `cmd_vel_frame_id` (`"base_link"`), `cmd_vel_stamp` (`zero` |
//! `send_time`), `odom_timeout_ms` (200), `max_stamp_age_ms` (unset: header stamps not read), `[ros.cameras]`
//! (image topic per image input), `camera_timeout_ms` (200), `gripper_joint` (`"gripper"`),
//! `[[ros.controllers]]` ([`joints::ControllerConfig`]). Under `ros2` a key can also be given as a ROS parameter of the same
//! dotted name, except those that decide how the robot stops or which inputs count (SAF-014).
//!
//! # Example
//! ```
//! let topics = reflex_ros::port::Topics::default();
//! topics.validate().unwrap();
//! let msg = reflex_ros::port::BoolMsg { data: true };
//! let bytes = reflex_ros::port::cdr::encode(&msg).unwrap();
//! assert_eq!(bytes, [0, 1, 0, 0, 1]); // CDR little-endian header, then the bool
//! ```

use serde::Deserialize;

#[cfg(feature = "dds")]
pub mod dds;
pub mod joints;
pub mod port;
#[cfg(feature = "ros2")]
pub mod ros2;

/// `[ros]`: how Reflex appears in a ROS 2 graph. Every key can also be given as a ROS parameter
/// of the same dotted name (`ros.topics.scan`, `safety.base.max_vx_mps`, …). `/reflex/estop`
/// feeds the `ros_topic` E-stop source: list it in `[safety.estop] sources` on a ROS robot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RosConfig {
    pub node_name: String,
    pub namespace: String,
    /// ROS's `use_sim_time`, accepted so launch files can pass it. Reflex does not read
    /// `/clock`: its timing is the host's monotonic clock, its stamps the host's wall clock, so
    /// it refuses the settings that would compare or send stamps under simulated time.
    pub use_sim_time: bool,
    pub topics: port::Topics,
    /// E-stop devices (SAF-012), each a std_msgs/Bool topic (true = pressed) feeding one
    /// source; one state per publisher. Empty: `topics.estop` as the `ros_topic` source.
    pub estop_devices: Vec<EstopDevice>,
    /// Where an E-stop reset may come from (SAF-013): `topic` (`topics.estop_reset`) and/or
    /// `service` (`~/reset_estop`, under `ros2`). Default both.
    pub reset_from: Vec<RequestSource>,
    /// Where a start may come from (SAF-013): `topic` (`topics.start`) and/or `service`
    /// (`~/start`, under `ros2`). Default both.
    pub start_from: Vec<RequestSource>,
    /// What `/cmd_vel` carries: `twist` or `twist_stamped`; unset, the convention of the ROS
    /// distribution the adapter was built for (Humble: Twist; Jazzy and newer: TwistStamped,
    /// what ros2_control's diff_drive_controller takes there).
    pub cmd_vel_type: Option<port::CmdVelType>,
    /// `header.frame_id` of a TwistStamped `/cmd_vel` (`"base_link"`).
    pub cmd_vel_frame_id: String,
    /// `header.stamp` of a TwistStamped `/cmd_vel`: `zero` (default; the controller stamps it
    /// on receipt) or `send_time` (only with shared clocks).
    pub cmd_vel_stamp: port::CmdVelStamp,
    /// Odometry older than this (ms) is not used (default 200): the stopping distances fall
    /// back to the commanded speeds, and `[safety.base] odometry_max_age_ms` (if set) stops
    /// the robot.
    pub odom_timeout_ms: f64,
    /// Refuse `/scan`, `/joint_states` and `/odom` messages whose header stamp is further than
    /// this (ms) from the host's clock. Set it only when the robot's clocks are shared with the
    /// host (PTP or chrony, or the same machine); unset (default), header stamps are not read
    /// and inputs age from their reception.
    pub max_stamp_age_ms: Option<f64>,
    /// `[ros.cameras]`: the image topic (sensor_msgs/Image, rgb8 or bgr8) of each image input,
    /// by the input's name in `policy.json`, e.g. `front = "/cam_front/image_raw"`. Empty: a
    /// policy with one camera reads `topics.image`.
    pub cameras: std::collections::BTreeMap<String, String>,
    /// An observation needs a frame from every camera within this (ms, default 200); else none
    /// is made (`inputs.camera_unavailable`) and the robot stops when its chunk runs out.
    pub camera_timeout_ms: f64,
    /// The gripper's joint name in `/joint_states` and in `[[ros.controllers]]` (`"gripper"`).
    pub gripper_joint: String,
    /// ros2_control controllers the joint and gripper targets go to (see [`joints`]).
    pub controllers: Vec<joints::ControllerConfig>,
}

/// What both adapters resolve at start from the config and the policy's contract: the port
/// state, one plan per `[[ros.controllers]]` entry, the camera topics and the E-stop devices.
#[derive(Debug)]
pub struct RobotPlan {
    pub state: port::PortState,
    pub controllers: Vec<joints::ControllerPlan>,
    /// One image topic per image input, in input order ([`RosConfig::camera_topics`]).
    pub cameras: Vec<String>,
    pub devices: Vec<EstopDevice>,
}

impl RobotPlan {
    /// Resolves `manifest` against the robot (`safety`) and `ros`; errors name the field or key.
    pub fn new(
        ros: &RosConfig,
        max_beams: usize,
        safety: &reflex_safety::SafetyConfig,
        manifest: &reflex_policy::PolicyManifest,
    ) -> Result<Self, String> {
        let shape = reflex_core::actions::RobotShape::of(safety);
        let (targets, state_sources) = manifest.resolve(&shape).map_err(|e| e.to_string())?;
        let controllers = joints::ControllerPlan::for_config(
            &ros.controllers,
            &ros.gripper_joint,
            safety,
            &targets,
        )?;
        let cameras = ros.camera_topics(manifest)?;
        let devices = ros.devices();
        let state = port::PortState::new(manifest, max_beams, shape.joints.clone())
            .with_state_sources(
                state_sources,
                shape.has_gripper.then(|| ros.gripper_joint.clone()),
            )
            .with_estop_devices(devices.iter().map(|d| d.source).collect())
            .with_max_stamp_age(ros.max_stamp_age_ns())
            .with_odom_timeout(ros.odom_timeout_ns())
            .with_camera_timeout(ros.camera_timeout_ns());
        Ok(Self {
            state,
            controllers,
            cameras,
            devices,
        })
    }
}

/// One `[[ros.estop_devices]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstopDevice {
    /// std_msgs/Bool, reliable + transient-local; `true` = pressed.
    pub topic: String,
    /// `ros_topic` (an operator's E-stop button in the ROS graph) or `hardware` (the E-stop
    /// circuit's state, published by the safety controller as a heartbeat; give the source a
    /// `max_age_ms` in `[safety.estop] sources`).
    pub source: reflex_safety::EstopSource,
}

/// Where a reset or start request may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestSource {
    Topic,
    Service,
}

impl Default for RosConfig {
    fn default() -> Self {
        Self {
            node_name: "reflex".into(),
            namespace: "/".into(),
            use_sim_time: false,
            topics: port::Topics::default(),
            estop_devices: Vec::new(),
            reset_from: vec![RequestSource::Topic, RequestSource::Service],
            start_from: vec![RequestSource::Topic, RequestSource::Service],
            cmd_vel_type: None,
            cmd_vel_frame_id: "base_link".into(),
            cmd_vel_stamp: port::CmdVelStamp::Zero,
            odom_timeout_ms: 200.0,
            max_stamp_age_ms: None,
            cameras: std::collections::BTreeMap::new(),
            camera_timeout_ms: 200.0,
            gripper_joint: "gripper".into(),
            controllers: Vec::new(),
        }
    }
}

impl RosConfig {
    /// The E-stop devices in force: `estop_devices`, or `topics.estop` as `ros_topic`.
    pub fn devices(&self) -> Vec<EstopDevice> {
        if self.estop_devices.is_empty() {
            vec![EstopDevice {
                topic: self.topics.estop.clone(),
                source: reflex_safety::EstopSource::RosTopic,
            }]
        } else {
            self.estop_devices.clone()
        }
    }

    /// The `/cmd_vel` type in force for an adapter built for ROS distribution `distro`.
    pub fn cmd_vel_type_for(&self, distro: &str) -> Result<port::CmdVelType, String> {
        match self.cmd_vel_type {
            Some(t) => Ok(t),
            None => port::CmdVelType::for_distro(distro),
        }
    }

    /// `odom_timeout_ms` in ns.
    pub fn odom_timeout_ns(&self) -> u64 {
        (self.odom_timeout_ms * 1e6) as u64
    }

    /// The image topic of each of `manifest`'s image inputs, in input order: `[ros.cameras]` by
    /// input name, or `topics.image` for a policy's only camera when `[ros.cameras]` is empty.
    /// Refused, naming the key and the fix, when an input has no topic, a key names no input, or
    /// two inputs share a topic.
    pub fn camera_topics(
        &self,
        manifest: &reflex_policy::PolicyManifest,
    ) -> Result<Vec<String>, String> {
        let inputs: Vec<&str> = manifest.image_inputs().map(|i| i.name.as_str()).collect();
        for (key, topic) in &self.cameras {
            if !inputs.contains(&key.as_str()) {
                return Err(format!(
                    "ros.cameras.{key}: policy `{}` has no image input `{key}` (its image inputs: {inputs:?}); fix: key each camera topic by an image input's name",
                    manifest.name
                ));
            }
            port::check_topic_name(topic).map_err(|e| format!("ros.cameras.{key}: {e}"))?;
        }
        if self.cameras.is_empty() && inputs.len() == 1 {
            return Ok(vec![self.topics.image.clone()]);
        }
        let topics = inputs
            .iter()
            .map(|name| {
                self.cameras.get(*name).cloned().ok_or_else(|| {
                    format!(
                        "ros.cameras: policy `{}` reads {} cameras {inputs:?} and image input `{name}` has no topic; fix: add `{name} = \"/<camera>/image_raw\"` to [ros.cameras]",
                        manifest.name,
                        inputs.len()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Two views fed from one camera: the policy would act on a view it was not trained on.
        for (i, topic) in topics.iter().enumerate() {
            if let Some(j) = topics[..i].iter().position(|t| t == topic) {
                return Err(format!(
                    "ros.cameras: image inputs `{}` and `{}` of policy `{}` are both bound to `{topic}`; fix: bind each input to its own camera's topic",
                    inputs[j], inputs[i], manifest.name
                ));
            }
        }
        Ok(topics)
    }

    /// `camera_timeout_ms` in ns.
    pub fn camera_timeout_ns(&self) -> u64 {
        (self.camera_timeout_ms * 1e6) as u64
    }

    /// `max_stamp_age_ms` in ns.
    pub fn max_stamp_age_ns(&self) -> Option<u64> {
        self.max_stamp_age_ms.map(|ms| (ms * 1e6) as u64)
    }

    /// Checks topics and E-stop devices; errors name the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        self.topics.validate()?;
        if !(self.odom_timeout_ms.is_finite() && self.odom_timeout_ms > 0.0) {
            return Err(format!(
                "ros.odom_timeout_ms = {}: expected a positive number of milliseconds; fix: e.g. 200.0",
                self.odom_timeout_ms
            ));
        }
        if !(self.camera_timeout_ms.is_finite() && self.camera_timeout_ms > 0.0) {
            return Err(format!(
                "ros.camera_timeout_ms = {}: expected a positive number of milliseconds; fix: e.g. 200.0",
                self.camera_timeout_ms
            ));
        }
        if self.use_sim_time && self.cmd_vel_stamp == port::CmdVelStamp::SendTime {
            return Err("ros.cmd_vel_stamp = \"send_time\" with ros.use_sim_time: Reflex does not read /clock and would stamp commands with the host's clock, which a controller on simulated time takes as far in the future (its command timeout would never fire); fix: cmd_vel_stamp = \"zero\" (the default)".into());
        }
        if let Some(ms) = self.max_stamp_age_ms {
            if !(ms.is_finite() && ms > 0.0) {
                return Err(format!(
                    "ros.max_stamp_age_ms = {ms}: expected a positive number of milliseconds; fix: e.g. 100.0, or remove it when the robot's clocks are not shared"
                ));
            }
            if self.use_sim_time {
                return Err("ros.max_stamp_age_ms with ros.use_sim_time: Reflex does not read /clock, so simulated stamps cannot be compared with its clock; fix: remove one of them".into());
            }
        }
        for (i, d) in self.estop_devices.iter().enumerate() {
            let probe = port::Topics {
                estop: d.topic.clone(),
                ..port::Topics::default()
            };
            probe
                .validate()
                .map_err(|e| format!("ros.estop_devices[{i}].topic: {e}"))?;
            if !matches!(
                d.source,
                reflex_safety::EstopSource::Hardware | reflex_safety::EstopSource::RosTopic
            ) {
                return Err(format!(
                    "ros.estop_devices[{i}].source = {:?}: a ROS topic can feed `hardware` or `ros_topic` only; fix: one of those",
                    d.source.name()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_would_compare_or_send_host_stamps_under_sim_time_are_refused() {
        let sim = RosConfig {
            use_sim_time: true,
            ..RosConfig::default()
        };
        // A zero stamp (the default) is fine in simulation: the controller stamps it.
        sim.validate().unwrap();
        assert_eq!(
            sim.cmd_vel_type_for("jazzy"),
            Ok(port::CmdVelType::TwistStamped)
        );
        let err = RosConfig {
            cmd_vel_stamp: port::CmdVelStamp::SendTime,
            ..sim.clone()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.contains("cmd_vel_stamp") && err.contains("fix:"),
            "{err}"
        );
        let err = RosConfig {
            max_stamp_age_ms: Some(100.0),
            ..sim
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("max_stamp_age_ms"), "{err}");
        for bad in [0.0, -1.0, f64::NAN] {
            let err = RosConfig {
                odom_timeout_ms: bad,
                ..RosConfig::default()
            }
            .validate()
            .unwrap_err();
            assert!(err.contains("ros.odom_timeout_ms"), "{err}");
        }
        let explicit = RosConfig {
            cmd_vel_type: Some(port::CmdVelType::Twist),
            ..RosConfig::default()
        };
        assert_eq!(
            explicit.cmd_vel_type_for("jazzy"),
            Ok(port::CmdVelType::Twist)
        );
    }
}
