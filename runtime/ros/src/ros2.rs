//! The `ros2` ROS 2 adapter (feature `ros2`): an rcl node through r2r 0.9.7, for a Jetson with
//! ROS 2 Humble or Jazzy sourced. rcl itself reads `--ros-args` from the process arguments
//! (remapping `-r`, `__node`/`__ns`, `-p`, `--params-file`) and `ROS_DOMAIN_ID` /
//! `RMW_IMPLEMENTATION` from the environment; the node's parameters become config overrides of
//! the same dotted names (`use_sim_time` → `ros.use_sim_time`). Messages are converted to the
//! port's types and handled by the same `PortState` as the `dds` adapter, on the robot-I/O
//! thread. E-stop reset: `/reflex/estop_reset` and the std_srvs/Trigger service
//! `~/reset_estop` (it answers `success: false` while the `/reflex/estop` source is pressed or
//! has not reported; the safety layer refuses such a reset anyway). The node serves ROS 2's
//! parameter services (`~/get_parameters`, `~/list_parameters`, …), so `ros2 param get` and
//! rclpy see the parameters it was started with (`--params-file`, `-p`; keys set only in the
//! TOML are not parameters); setting one while running is refused (`successful: false`, "read-
//! only"): the config is read once, at start.
//!
//! Built, linked and tested here against ROS 2 Jazzy from PyPI wheels (`scripts/setup-ros2`,
//! `runtime/tests/ros2_interop.rs` with rclpy peers on Fast DDS). The aarch64 cross-check
//! type-checks it with r2r's `doc-only` bindings (feature `ros2-doc-only`), which cannot link
//! and have no std_srvs, so the Trigger service is compiled only in real `ros2` builds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures_util::{FutureExt, Stream, StreamExt};
use r2r::QosProfile;
use reflex_policy::{Observation, PolicyManifest};

use crate::joints::{ControllerKind, ControllerPlan, JointCommand};
use crate::port::wall_clock_ns;
use crate::port::{self, LoopDiagnostics, PortState, Qos};
use crate::{RobotPlan, RosConfig};
use reflex_core::{CommandFrame, LoopStatus, RobotIo, SensorFrame};

type Sub<T> = Box<dyn Stream<Item = T> + Unpin>;
#[cfg(not(feature = "ros2-doc-only"))]
type TriggerService =
    Box<dyn Stream<Item = r2r::ServiceRequest<r2r::std_srvs::srv::Trigger::Service>> + Unpin>;

fn profile(q: Qos) -> QosProfile {
    let p = QosProfile::default().keep_last(q.depth as usize);
    let p = if q.reliable {
        p.reliable()
    } else {
        p.best_effort()
    };
    if q.transient_local {
        p.transient_local()
    } else {
        p.volatile()
    }
}

/// Creates the rcl node (name and namespace from `[ros]`, overridable with `--ros-args -r
/// __node:=… -r __ns:=…`) and returns the config overrides its parameters carry, as
/// `(dotted key, TOML value)` for `reflex_runner::config::ReflexConfig::load_with`.
pub fn node_and_overrides(ros: &RosConfig) -> Result<(r2r::Node, Vec<(String, String)>)> {
    crate::port::ros_domain_id().map_err(anyhow::Error::msg)?;
    let ctx = r2r::Context::create().context("cannot initialize rcl (is ROS 2 sourced?)")?;
    let node = r2r::Node::create(ctx, &ros.node_name, &ros.namespace)
        .context("cannot create the ROS 2 node")?;
    let mut overrides = Vec::new();
    {
        let params = node
            .params
            .lock()
            .map_err(|_| anyhow::anyhow!("parameters poisoned"))?;
        for (name, p) in params.iter() {
            let key = if name == "use_sim_time" {
                "ros.use_sim_time".to_string()
            } else {
                name.clone()
            };
            if let Some(value) = toml_value(&p.value) {
                overrides.push((key, value));
            }
        }
    }
    Ok((node, overrides))
}

fn toml_value(v: &r2r::ParameterValue) -> Option<String> {
    use r2r::ParameterValue as P;
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    Some(match v {
        P::NotSet => return None,
        P::Bool(b) => b.to_string(),
        P::Integer(i) => i.to_string(),
        P::Double(d) => format!("{d:?}"),
        P::String(s) => quote(s),
        P::BoolArray(a) => list(a.iter().map(|b| b.to_string()).collect()),
        P::ByteArray(a) => list(a.iter().map(|b| b.to_string()).collect()),
        P::IntegerArray(a) => list(a.iter().map(|i| i.to_string()).collect()),
        P::DoubleArray(a) => list(a.iter().map(|d| format!("{d:?}")).collect()),
        P::StringArray(a) => list(a.iter().map(|s| quote(s)).collect()),
    })
}

/// The robot, as seen through ROS 2 topics over rcl.
pub struct Ros2Robot {
    node: r2r::Node,
    scan: Sub<r2r::sensor_msgs::msg::LaserScan>,
    joint_states: Sub<r2r::sensor_msgs::msg::JointState>,
    odom: Sub<r2r::nav_msgs::msg::Odometry>,
    /// One subscription per camera, in image-input order.
    images: Vec<Sub<r2r::sensor_msgs::msg::Image>>,
    instruction: Sub<r2r::std_msgs::msg::String>,
    /// One subscription per E-stop device (`[ros] estop_devices`).
    estops: Vec<Sub<r2r::std_msgs::msg::Bool>>,
    /// Each E-stop device's fully qualified topic (for its publisher count in the graph).
    estop_topics: Vec<String>,
    estop_reset: Option<Sub<r2r::std_msgs::msg::Empty>>,
    start: Option<Sub<r2r::std_msgs::msg::Empty>>,
    #[cfg(not(feature = "ros2-doc-only"))]
    reset_service: Option<TriggerService>,
    #[cfg(not(feature = "ros2-doc-only"))]
    start_service: Option<TriggerService>,
    /// Taken by the actuator gate's thread ([`RobotIo::take_actuator`]).
    cmd_vel: Option<CmdVel>,
    /// Taken with `cmd_vel`: one publisher per `[[ros.controllers]]` entry.
    controllers: Vec<(ControllerPlan, JointPub)>,
    commands_published: Arc<std::sync::atomic::AtomicU64>,
    joint_commands_published: Arc<std::sync::atomic::AtomicU64>,
    diagnostics: r2r::Publisher<r2r::diagnostic_msgs::msg::DiagnosticArray>,
    /// r2r's parameter services, polled on every step (they answer once rcl has the request).
    param_services: Pin<Box<dyn Future<Output = ()> + Send>>,
    status: Arc<LoopStatus>,
    hardware_id: String,
    beams: usize,
    next_diagnostics_ns: u64,
    pub state: PortState,
}

impl std::fmt::Debug for Ros2Robot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ros2Robot")
            .field("stats", &self.state.stats)
            .finish_non_exhaustive()
    }
}

impl Ros2Robot {
    pub fn new(
        mut node: r2r::Node,
        ros: &RosConfig,
        max_beams: usize,
        safety: &reflex_safety::SafetyConfig,
        manifest: &PolicyManifest,
        status: Arc<LoopStatus>,
    ) -> Result<Self> {
        let RobotPlan {
            state,
            controllers: plans,
            cameras,
            devices,
        } = RobotPlan::new(ros, max_beams, safety, manifest).map_err(anyhow::Error::msg)?;
        let t = &ros.topics;
        macro_rules! sub {
            ($topic:expr, $qos:expr) => {
                Box::new(
                    node.subscribe($topic, profile($qos))
                        .with_context(|| format!("cannot subscribe to {}", $topic))?,
                )
            };
        }
        let scan: Sub<r2r::sensor_msgs::msg::LaserScan> = sub!(&t.scan, Qos::SENSOR_DATA);
        let mut images: Vec<Sub<r2r::sensor_msgs::msg::Image>> = Vec::new();
        for topic in &cameras {
            images.push(sub!(topic, Qos::SENSOR_DATA));
        }
        let joint_states: Sub<r2r::sensor_msgs::msg::JointState> =
            sub!(&t.joint_states, Qos::SENSOR_DATA);
        let instruction: Sub<r2r::std_msgs::msg::String> = sub!(&t.instruction, Qos::DEFAULT);
        let odom: Sub<r2r::nav_msgs::msg::Odometry> = sub!(&t.odom, Qos::SENSOR_DATA);
        let estop_topics = devices
            .iter()
            .map(|d| {
                if d.topic.starts_with('/') {
                    d.topic.clone()
                } else {
                    format!("{}/{}", ros.namespace.trim_end_matches('/'), d.topic)
                }
            })
            .collect();
        let mut estops: Vec<Sub<r2r::std_msgs::msg::Bool>> = Vec::new();
        for d in &devices {
            estops.push(sub!(&d.topic, Qos::ESTOP_READER));
        }
        use crate::RequestSource::{Service, Topic};
        let estop_reset: Option<Sub<r2r::std_msgs::msg::Empty>> = if ros.reset_from.contains(&Topic)
        {
            Some(sub!(&t.estop_reset, Qos::DEFAULT))
        } else {
            None
        };
        let start: Option<Sub<r2r::std_msgs::msg::Empty>> = if ros.start_from.contains(&Topic) {
            Some(sub!(&t.start, Qos::DEFAULT))
        } else {
            None
        };
        #[cfg(not(feature = "ros2-doc-only"))]
        let mut trigger = |name: &str| -> Result<TriggerService> {
            Ok(Box::new(
                node.create_service::<r2r::std_srvs::srv::Trigger::Service>(
                    name,
                    QosProfile::services_default(),
                )
                .with_context(|| format!("cannot create the {name} service"))?,
            ))
        };
        #[cfg(not(feature = "ros2-doc-only"))]
        let reset_service = if ros.reset_from.contains(&Service) {
            Some(trigger("~/reset_estop")?)
        } else {
            None
        };
        #[cfg(not(feature = "ros2-doc-only"))]
        let start_service = if ros.start_from.contains(&Service) {
            Some(trigger("~/start")?)
        } else {
            None
        };
        #[cfg(feature = "ros2-doc-only")]
        let _ = Service;
        let cmd_vel_type = ros
            .cmd_vel_type_for(ROS_DISTRO)
            .map_err(|e| anyhow::anyhow!("ros.cmd_vel_type: {e}"))?;
        let publish_err = || format!("cannot publish {}", t.cmd_vel);
        let cmd_vel = match cmd_vel_type {
            port::CmdVelType::Twist => CmdVel::Twist(
                node.create_publisher(&t.cmd_vel, profile(Qos::DEFAULT))
                    .with_context(publish_err)?,
            ),
            port::CmdVelType::TwistStamped => CmdVel::Stamped(
                node.create_publisher(&t.cmd_vel, profile(Qos::DEFAULT))
                    .with_context(publish_err)?,
                r2r::geometry_msgs::msg::TwistStamped {
                    header: r2r::std_msgs::msg::Header {
                        frame_id: ros.cmd_vel_frame_id.clone(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ros.cmd_vel_stamp,
            ),
        };
        let diagnostics = node
            .create_publisher(&t.diagnostics, profile(Qos::DEFAULT))
            .with_context(|| format!("cannot publish {}", t.diagnostics))?;
        let mut controllers = Vec::new();
        for plan in plans {
            let publisher = match plan.kind {
                ControllerKind::JointTrajectory => JointPub::Trajectory(
                    node.create_publisher(&plan.topic, profile(Qos::DEFAULT))
                        .with_context(|| format!("cannot publish {}", plan.topic))?,
                ),
                ControllerKind::ForwardPosition | ControllerKind::ForwardVelocity => {
                    JointPub::Array(
                        node.create_publisher(&plan.topic, profile(Qos::DEFAULT))
                            .with_context(|| format!("cannot publish {}", plan.topic))?,
                    )
                }
            };
            controllers.push((plan, publisher));
        }
        let (param_services, _param_events) = node
            .make_derived_parameter_handler(Arc::new(std::sync::Mutex::new(ReadOnlyParams)))
            .context("cannot create the parameter services")?;
        let hardware_id = node
            .fully_qualified_name()
            .context("cannot read the node's name")?;
        Ok(Self {
            node,
            scan,
            joint_states,
            odom,
            images,
            instruction,
            estops,
            estop_topics,
            estop_reset,
            start,
            #[cfg(not(feature = "ros2-doc-only"))]
            reset_service,
            #[cfg(not(feature = "ros2-doc-only"))]
            start_service,
            cmd_vel: Some(cmd_vel),
            controllers,
            commands_published: Arc::default(),
            joint_commands_published: Arc::default(),
            diagnostics,
            param_services: Box::pin(param_services),
            status,
            hardware_id,
            beams: max_beams,
            next_diagnostics_ns: 0,
            state,
        })
    }

    /// Every E-stop message rcl has delivered, into the port (press edges reach the ingress
    /// at once). rcl does not say which publisher sent a message here: one state per device,
    /// and a device topic with several publishers counts as unknown (see `step`).
    fn drain_estops(&mut self, now: u64) {
        let state = &mut self.state;
        for (i, sub) in self.estops.iter_mut().enumerate() {
            drain(sub, |b| state.on_estop_from(i, 0, b.data, now));
        }
    }
}

/// The ROS distribution r2r's bindings were generated for (`$ROS_DISTRO` of the build).
const ROS_DISTRO: &str = match option_env!("ROS_DISTRO") {
    Some(d) => d,
    None => "unknown (ROS_DISTRO was not set when Reflex was built)",
};

/// The `/cmd_vel` publisher, of the configured type (`[ros] cmd_vel_type`).
enum CmdVel {
    Twist(r2r::Publisher<r2r::geometry_msgs::msg::Twist>),
    /// With the message it reuses (the header's frame id set once).
    Stamped(
        r2r::Publisher<r2r::geometry_msgs::msg::TwistStamped>,
        r2r::geometry_msgs::msg::TwistStamped,
        port::CmdVelStamp,
    ),
}

/// A `[[ros.controllers]]` publisher.
enum JointPub {
    Trajectory(r2r::Publisher<r2r::trajectory_msgs::msg::JointTrajectory>),
    Array(r2r::Publisher<r2r::std_msgs::msg::Float64MultiArray>),
}

/// The port's joint command as r2r's message, published.
fn publish_joint_command(publisher: &JointPub, command: JointCommand) -> bool {
    use r2r::trajectory_msgs::msg as tm;
    match (command, publisher) {
        (JointCommand::Trajectory(t), JointPub::Trajectory(p)) => {
            let msg = tm::JointTrajectory {
                // Zero stamp: start on receipt.
                header: r2r::std_msgs::msg::Header::default(),
                joint_names: t.joint_names,
                points: t
                    .points
                    .into_iter()
                    .map(|q| tm::JointTrajectoryPoint {
                        positions: q.positions,
                        velocities: q.velocities,
                        accelerations: q.accelerations,
                        effort: q.effort,
                        time_from_start: r2r::builtin_interfaces::msg::Duration {
                            sec: q.time_from_start.sec,
                            nanosec: q.time_from_start.nanosec,
                        },
                    })
                    .collect(),
            };
            p.publish(&msg).is_ok()
        }
        (JointCommand::Array(a), JointPub::Array(p)) => p
            .publish(&r2r::std_msgs::msg::Float64MultiArray {
                layout: r2r::std_msgs::msg::MultiArrayLayout::default(),
                data: a.data,
            })
            .is_ok(),
        _ => false,
    }
}

/// `/cmd_vel` and the joint controllers for the actuator gate's thread (rcl publishers may
/// publish from any thread).
struct Ros2Actuator {
    cmd_vel: CmdVel,
    controllers: Vec<(ControllerPlan, JointPub)>,
    published: Arc<std::sync::atomic::AtomicU64>,
    joint_published: Arc<std::sync::atomic::AtomicU64>,
}

impl reflex_core::Actuator for Ros2Actuator {
    fn send(&mut self, command: &CommandFrame) {
        let twist = port::command_twist(command);
        let msg = r2r::geometry_msgs::msg::Twist {
            linear: r2r::geometry_msgs::msg::Vector3 {
                x: twist.linear.x,
                y: twist.linear.y,
                z: twist.linear.z,
            },
            angular: r2r::geometry_msgs::msg::Vector3 {
                x: twist.angular.x,
                y: twist.angular.y,
                z: twist.angular.z,
            },
        };
        let sent = match &mut self.cmd_vel {
            CmdVel::Twist(p) => p.publish(&msg).is_ok(),
            CmdVel::Stamped(p, stamped, stamp) => {
                // Zero (the controller stamps it on receipt), or when it is sent (ROS time =
                // the host's wall clock).
                let t = port::Time::from_nanos(match stamp {
                    port::CmdVelStamp::Zero => 0,
                    port::CmdVelStamp::SendTime => wall_clock_ns(),
                });
                stamped.header.stamp = r2r::builtin_interfaces::msg::Time {
                    sec: t.sec,
                    nanosec: t.nanosec,
                };
                stamped.twist = msg;
                p.publish(stamped).is_ok()
            }
        };
        if sent {
            self.published
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        for (plan, publisher) in &mut self.controllers {
            if let Some(m) = plan.message(command, reflex_core::clock::now_ns())
                && publish_joint_command(publisher, m)
            {
                self.joint_published
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// The node's parameters are what it started with: r2r's parameter services answer reads from
/// the node's map and refuse every set through this (the config is read once, at start).
struct ReadOnlyParams;

impl r2r::RosParams for ReadOnlyParams {
    fn register_parameters(
        &mut self,
        _prefix: &str,
        _param: Option<r2r::Parameter>,
        _params: &mut indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        Ok(())
    }

    fn get_parameter(&mut self, param_name: &str) -> r2r::Result<r2r::ParameterValue> {
        // Not ours: the services fall back to the node's map (the start-up values).
        Err(r2r::Error::InvalidParameterName {
            name: param_name.into(),
        })
    }

    fn set_parameter(&mut self, name: &str, _value: &r2r::ParameterValue) -> r2r::Result<()> {
        Err(self.check_parameter(name, _value).unwrap_err())
    }

    fn check_parameter(&self, name: &str, _value: &r2r::ParameterValue) -> r2r::Result<()> {
        Err(r2r::Error::ParameterValueConv {
            name: name.into(),
            msg: "read-only: Reflex reads its config once, at start; restart the node with the new value (params file, -p or the TOML)".into(),
        })
    }
}

/// Everything `stream` has ready now, without waiting.
fn drain<T>(stream: &mut Sub<T>, mut f: impl FnMut(T)) {
    while let Some(Some(item)) = stream.next().now_or_never() {
        f(item);
    }
}

fn header(h: &r2r::std_msgs::msg::Header) -> port::Header {
    port::Header {
        stamp: port::Time {
            sec: h.stamp.sec,
            nanosec: h.stamp.nanosec,
        },
        frame_id: h.frame_id.clone(),
    }
}

impl RobotIo for Ros2Robot {
    fn beams(&self) -> usize {
        self.beams
    }

    fn stationary_at_start(&self) -> bool {
        // Before the first step no odometry has been read; Reflex has commanded nothing yet.
        true
    }

    fn take_actuator(&mut self) -> Option<Box<dyn reflex_core::Actuator>> {
        self.cmd_vel.take().map(|cmd_vel| {
            Box::new(Ros2Actuator {
                cmd_vel,
                controllers: std::mem::take(&mut self.controllers),
                published: self.commands_published.clone(),
                joint_published: self.joint_commands_published.clone(),
            }) as Box<dyn reflex_core::Actuator>
        })
    }

    fn attach_ingress(&mut self, ingress: Arc<reflex_core::EstopIngress>) {
        self.state.attach_ingress(ingress);
    }

    /// Waits in rcl (`rcl_wait` inside `spin_once`) until `deadline_ns`: a message wakes it at
    /// once, and an E-stop message reaches the ingress (and the gate sends zero) right then,
    /// not at the next step. Other messages wait in their streams for the step.
    fn idle_until(&mut self, deadline_ns: u64) {
        loop {
            let now = reflex_core::clock::now_ns();
            if now >= deadline_ns {
                return;
            }
            self.node.spin_once(Duration::from_nanos(deadline_ns - now));
            self.drain_estops(reflex_core::clock::now_ns());
        }
    }

    fn step(
        &mut self,
        now: u64,
        command: &CommandFrame,
        frame: &mut SensorFrame,
        obs: &mut Observation,
    ) -> bool {
        // The command itself went out on the actuator gate's thread; this is what it sent.
        self.state.command(command.base, command.drive_enabled);
        self.state.stats.commands_published = self
            .commands_published
            .load(std::sync::atomic::Ordering::Relaxed);
        self.state.stats.joint_commands_published = self
            .joint_commands_published
            .load(std::sync::atomic::Ordering::Relaxed);
        // Let rcl move messages into the streams, without blocking.
        self.node.spin_once(Duration::ZERO);
        // SAF-012: rcl does not say which publisher sent an E-stop message, so a device topic
        // with several publishers is unknown (robot stopped) until one is left (see PortState).
        for (i, topic) in self.estop_topics.iter().enumerate() {
            if let Ok(publishers) = self.node.get_publishers_info_by_topic(topic, false) {
                self.state.set_unattributed_publishers(i, publishers.len());
            }
        }
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(()) = self.param_services.as_mut().poll(&mut cx) {
            // The handler ends only with the node; keep polling a finished future harmlessly.
            self.param_services = Box::pin(std::future::pending());
        }
        self.state.begin_step(now, wall_clock_ns());
        let state = &mut self.state;
        drain(&mut self.odom, |o| {
            let v = |v: &r2r::geometry_msgs::msg::Vector3| port::Vector3 {
                x: v.x,
                y: v.y,
                z: v.z,
            };
            let mut odom = port::Odometry {
                header: header(&o.header),
                child_frame_id: o.child_frame_id,
                ..port::Odometry::default()
            };
            odom.twist.twist = port::TwistMsg {
                linear: v(&o.twist.twist.linear),
                angular: v(&o.twist.twist.angular),
            };
            state.on_odom(&odom, now);
        });
        drain(&mut self.scan, |s| {
            let scan = port::LaserScan {
                header: header(&s.header),
                angle_min: s.angle_min,
                angle_max: s.angle_max,
                angle_increment: s.angle_increment,
                time_increment: s.time_increment,
                scan_time: s.scan_time,
                range_min: s.range_min,
                range_max: s.range_max,
                ranges: s.ranges,
                intensities: s.intensities,
            };
            state.on_scan(&scan, now);
        });
        drain(&mut self.joint_states, |j| {
            let js = port::JointState {
                header: header(&j.header),
                name: j.name,
                position: j.position,
                velocity: j.velocity,
                effort: j.effort,
            };
            state.on_joint_state(&js, now);
        });
        for (i, sub) in self.estops.iter_mut().enumerate() {
            drain(sub, |b| state.on_estop_from(i, 0, b.data, now));
        }
        if let Some(sub) = self.estop_reset.as_mut() {
            drain(sub, |_| state.on_reset());
        }
        if let Some(sub) = self.start.as_mut() {
            drain(sub, |_| state.on_start());
        }
        #[cfg(not(feature = "ros2-doc-only"))]
        if let Some(service) = self.reset_service.as_mut() {
            while let Some(Some(req)) = service.next().now_or_never() {
                let (success, message) = match state.on_reset_request() {
                    Ok(()) => (
                        true,
                        "reset requested: honoured once every E-stop source is clear; the robot then waits for a start".to_string(),
                    ),
                    Err(why) => (false, why),
                };
                let _ = req.respond(r2r::std_srvs::srv::Trigger::Response { success, message });
            }
        }
        #[cfg(not(feature = "ros2-doc-only"))]
        if let Some(service) = self.start_service.as_mut() {
            let run_state = self.status.run_state();
            while let Some(Some(req)) = service.next().now_or_never() {
                let (success, message) = match run_state {
                    reflex_core::RunState::Latched | reflex_core::RunState::Stopping => (
                        false,
                        "start refused: the E-stop is latched; release it, reset, then start"
                            .to_string(),
                    ),
                    _ => {
                        state.on_start();
                        (true, "start requested".to_string())
                    }
                };
                let _ = req.respond(r2r::std_srvs::srv::Trigger::Response { success, message });
            }
        }
        drain(&mut self.instruction, |s| state.on_instruction(&s.data));
        for (camera, sub) in self.images.iter_mut().enumerate() {
            drain(sub, |i| {
                let img = port::Image {
                    header: header(&i.header),
                    height: i.height,
                    width: i.width,
                    encoding: i.encoding,
                    is_bigendian: i.is_bigendian,
                    step: i.step,
                    data: i.data,
                };
                state.on_image(camera, &img, now);
            });
        }
        let fresh = self.state.finish_step(frame, obs);
        if now >= self.next_diagnostics_ns {
            self.next_diagnostics_ns = now + 1_000_000_000;
            let d = LoopDiagnostics::from_port(&self.status, &self.state)
                .to_msg(wall_clock_ns(), &self.hardware_id);
            let msg = r2r::diagnostic_msgs::msg::DiagnosticArray {
                header: r2r::std_msgs::msg::Header {
                    stamp: r2r::builtin_interfaces::msg::Time {
                        sec: d.header.stamp.sec,
                        nanosec: d.header.stamp.nanosec,
                    },
                    frame_id: d.header.frame_id,
                },
                status: d
                    .status
                    .into_iter()
                    .map(|s| r2r::diagnostic_msgs::msg::DiagnosticStatus {
                        level: s.level,
                        name: s.name,
                        message: s.message,
                        hardware_id: s.hardware_id,
                        values: s
                            .values
                            .into_iter()
                            .map(|kv| r2r::diagnostic_msgs::msg::KeyValue {
                                key: kv.key,
                                value: kv.value,
                            })
                            .collect(),
                    })
                    .collect(),
            };
            let _ = self.diagnostics.publish(&msg);
        }
        fresh
    }
}
