//! The `dds` ROS 2 adapter (feature `dds`): a pure-Rust DDS node (ros2-client / RustDDS) that
//! needs no ROS installation and talks to ROS 2 nodes on the wire (tested against Cyclone DDS,
//! the DDS ROS 2 ships). It only moves the port's messages (`crate::port`) between DDS and the
//! loop's slots, on the robot-I/O thread; the RT thread never touches DDS.
//!
//! Joins `$ROS_DOMAIN_ID`; `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` (or `ROS_LOCALHOST_ONLY=1`)
//! keeps discovery and traffic on loopback, as rmw does.
//!
//! Inputs: `/joint_states` (matched by name to `[safety.arm] joints`) → the safety layer's
//! joint state; `/scan` (sensor data QoS) → the scan slot, stamped on reception (a publisher that
//! stops makes the scan go stale and the safety layer stops the robot); `/reflex/estop`
//! (reliable, transient-local) → the `ros_topic` E-stop source (`Unknown` until the first
//! message: the robot stays stopped); `/reflex/estop_reset` → explicit reset requests;
//! `/odom` (nav_msgs/Odometry, sensor data QoS) → the measured velocity the stopping distances
//! use; `/camera/image_raw` (rgb8/bgr8, any size, nearest-neighbour to the policy's input) and
//! `/reflex/instruction` → the policy's observation (state = the measured velocity, or the last
//! command before any odometry). Outputs: `/cmd_vel` from the actuator gate (Twist or
//! TwistStamped: `[ros] cmd_vel_type`, by default the convention of the ROS distribution the
//! adapter's wire format is built for — `dds-jazzy`: TwistStamped, `dds`/`dds-humble`: Twist),
//! `/diagnostics` at 1 Hz; joint and gripper targets to the `[[ros.controllers]]`
//! (JointTrajectory / Float64MultiArray, see `crate::joints`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use anyhow::{Context as _, Result};
use reflex_policy::{Observation, PolicyManifest};
use ros2_client::dds::rustdds::DomainParticipantBuilder;
use ros2_client::qos::{Durability, History, WhenFull};
use ros2_client::{
    Context, MessageTypeName, Name, Node, NodeName, NodeOptions, Publisher, QosProfile,
    Subscription,
};

use crate::joints::{
    ControllerKind, ControllerPlan, Float64MultiArray, JointCommand, JointTrajectory,
};
use crate::port::wall_clock_ns;
use crate::port::{
    BoolMsg, CmdVelStamp, CmdVelType, DiagnosticArray, Empty, Image, JointState, LaserScan,
    LoopDiagnostics, Odometry, PortState, Qos, StringMsg, TwistMsg, TwistStampedMsg,
};
use crate::{RobotPlan, RosConfig};
use reflex_core::{Actuator, CommandFrame, EstopIngress, LoopStatus, RobotIo, SensorFrame};

fn profile(q: Qos) -> QosProfile {
    let p = QosProfile::subscription_default().history(History::KeepLast {
        depth: q.depth as usize,
    });
    let p = if q.reliable {
        p.reliability_reliable(WhenFull::DEFAULT)
    } else {
        p.reliability_best_effort()
    };
    p.durability(if q.transient_local {
        Durability::TransientLocal
    } else {
        Durability::Volatile
    })
}

/// The robot, as seen through ROS 2 topics over DDS.
pub struct DdsRobot {
    _node: Node,
    scan: Subscription<LaserScan>,
    joint_states: Subscription<JointState>,
    odom: Subscription<Odometry>,
    /// One subscription per camera, in image-input order.
    images: Vec<Subscription<Image>>,
    instruction: Subscription<StringMsg>,
    /// One subscription per E-stop device (`[ros] estop_devices`).
    estops: Vec<Subscription<BoolMsg>>,
    estop_reset: Option<Subscription<Empty>>,
    start: Option<Subscription<Empty>>,
    /// Taken by the actuator gate's thread ([`RobotIo::take_actuator`]).
    cmd_vel: Option<CmdVel>,
    /// Taken with `cmd_vel`: one publisher per `[[ros.controllers]]` entry.
    controllers: Vec<(ControllerPlan, JointPub)>,
    commands_published: Arc<AtomicU64>,
    joint_commands_published: Arc<AtomicU64>,
    diagnostics: Publisher<DiagnosticArray>,
    status: Arc<LoopStatus>,
    hardware_id: String,
    beams: usize,
    next_diagnostics_ns: u64,
    pub state: PortState,
}

impl std::fmt::Debug for DdsRobot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DdsRobot")
            .field("stats", &self.state.stats)
            .finish_non_exhaustive()
    }
}

impl DdsRobot {
    /// Joins DDS domain `$ROS_DOMAIN_ID` (default 0) as the node `ros.node_name` in
    /// `ros.namespace`, with the port's topics and QoS.
    pub fn new(
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
        let domain = crate::port::ros_domain_id().map_err(anyhow::Error::msg)?;
        let mut participant = DomainParticipantBuilder::new(domain);
        if crate::port::discovery_localhost_only().map_err(anyhow::Error::msg)? {
            // As rmw does for ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: loopback only.
            participant = participant.with_only_networks([std::net::Ipv4Addr::LOCALHOST]);
        }
        let participant = participant
            .build()
            .with_context(|| format!("cannot join DDS domain {domain}"))?;
        let context = Context::from_domain_participant(participant)
            .context("cannot create the ROS 2 context")?;
        let mut node = context
            .new_node(
                NodeName::new(&ros.namespace, &ros.node_name)
                    .map_err(|e| anyhow::anyhow!("ros.node_name / ros.namespace: {e:?}"))?,
                NodeOptions::new(),
            )
            .map_err(|e| anyhow::anyhow!("cannot create the ROS 2 node: {e:?}"))?;
        let t = &ros.topics;
        macro_rules! topic {
            ($name:expr, $pkg:expr, $ty:expr, $qos:expr) => {{
                let name = Name::parse($name)
                    .or_else(|_| Name::new(&ros.namespace, $name))
                    .map_err(|e| anyhow::anyhow!("topic {:?}: {e:?}", $name))?;
                node.create_topic(&name, MessageTypeName::new($pkg, $ty), &profile($qos))
                    .map_err(|e| anyhow::anyhow!("topic {:?}: {e:?}", $name))?
            }};
        }
        let scan_t = topic!(&t.scan, "sensor_msgs", "LaserScan", Qos::SENSOR_DATA);
        let mut image_ts = Vec::new();
        for topic in &cameras {
            image_ts.push(topic!(topic, "sensor_msgs", "Image", Qos::SENSOR_DATA));
        }
        let joints_t = topic!(
            &t.joint_states,
            "sensor_msgs",
            "JointState",
            Qos::SENSOR_DATA
        );
        let instr_t = topic!(&t.instruction, "std_msgs", "String", Qos::DEFAULT);
        let mut estop_ts = Vec::new();
        for d in &devices {
            estop_ts.push(topic!(&d.topic, "std_msgs", "Bool", Qos::ESTOP_READER));
        }
        let reset_t = topic!(&t.estop_reset, "std_msgs", "Empty", Qos::DEFAULT);
        let start_t = topic!(&t.start, "std_msgs", "Empty", Qos::DEFAULT);
        let odom_t = topic!(&t.odom, "nav_msgs", "Odometry", Qos::SENSOR_DATA);
        let distro = ros2_client::COMPILED_ROS_DISTRO.as_str();
        let cmd_vel_type = ros
            .cmd_vel_type_for(distro)
            .map_err(|e| anyhow::anyhow!("ros.cmd_vel_type: {e}"))?;
        let cmd_t = match cmd_vel_type {
            CmdVelType::Twist => topic!(&t.cmd_vel, "geometry_msgs", "Twist", Qos::DEFAULT),
            CmdVelType::TwistStamped => {
                topic!(&t.cmd_vel, "geometry_msgs", "TwistStamped", Qos::DEFAULT)
            }
        };
        let diag_t = topic!(
            &t.diagnostics,
            "diagnostic_msgs",
            "DiagnosticArray",
            Qos::DEFAULT
        );
        let sub_err = |what: &str| format!("cannot subscribe to {what}");
        let scan = node
            .create_subscription(&scan_t, None)
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.scan)))?;
        let joint_states = node
            .create_subscription(&joints_t, None)
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.joint_states)))?;
        let odom = node
            .create_subscription(&odom_t, None)
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.odom)))?;
        let mut images = Vec::new();
        for (name, topic) in cameras.iter().zip(&image_ts) {
            images.push(
                node.create_subscription(topic, None)
                    .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(name)))?,
            );
        }
        let instruction = node
            .create_subscription(&instr_t, None)
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.instruction)))?;
        let mut estops = Vec::new();
        for (d, topic) in devices.iter().zip(&estop_ts) {
            estops.push(
                node.create_subscription(topic, None)
                    .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&d.topic)))?,
            );
        }
        let estop_reset = if ros.reset_from.contains(&crate::RequestSource::Topic) {
            Some(
                node.create_subscription(&reset_t, None)
                    .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.estop_reset)))?,
            )
        } else {
            None
        };
        let start = if ros.start_from.contains(&crate::RequestSource::Topic) {
            Some(
                node.create_subscription(&start_t, None)
                    .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.start)))?,
            )
        } else {
            None
        };
        let publish_err = |e| anyhow::anyhow!("cannot publish {}: {e:?}", t.cmd_vel);
        let cmd_vel = match cmd_vel_type {
            CmdVelType::Twist => {
                CmdVel::Twist(node.create_publisher(&cmd_t, None).map_err(publish_err)?)
            }
            CmdVelType::TwistStamped => CmdVel::Stamped(
                node.create_publisher(&cmd_t, None).map_err(publish_err)?,
                ros.cmd_vel_frame_id.clone(),
                ros.cmd_vel_stamp,
            ),
        };
        let diagnostics = node
            .create_publisher(&diag_t, None)
            .map_err(|e| anyhow::anyhow!("cannot publish {}: {e:?}", t.diagnostics))?;
        let mut controllers = Vec::new();
        for plan in plans {
            let publisher = match plan.kind {
                ControllerKind::JointTrajectory => {
                    let topic = topic!(
                        &plan.topic,
                        "trajectory_msgs",
                        "JointTrajectory",
                        Qos::DEFAULT
                    );
                    JointPub::Trajectory(
                        node.create_publisher(&topic, None)
                            .map_err(|e| anyhow::anyhow!("cannot publish {}: {e:?}", plan.topic))?,
                    )
                }
                ControllerKind::ForwardPosition | ControllerKind::ForwardVelocity => {
                    let topic = topic!(&plan.topic, "std_msgs", "Float64MultiArray", Qos::DEFAULT);
                    JointPub::Array(
                        node.create_publisher(&topic, None)
                            .map_err(|e| anyhow::anyhow!("cannot publish {}: {e:?}", plan.topic))?,
                    )
                }
            };
            controllers.push((plan, publisher));
        }
        Ok(Self {
            _node: node,
            scan,
            joint_states,
            odom,
            images,
            instruction,
            estops,
            estop_reset,
            start,
            cmd_vel: Some(cmd_vel),
            controllers,
            commands_published: Arc::default(),
            joint_commands_published: Arc::default(),
            diagnostics,
            status,
            // The node's fully qualified name, as rcl reports it under `ros2`.
            hardware_id: format!("{}/{}", ros.namespace.trim_end_matches('/'), ros.node_name),
            beams: max_beams,
            next_diagnostics_ns: 0,
            state,
        })
    }

    /// Every E-stop message waiting, in arrival order, into the port (press edges reach the
    /// ingress at once).
    fn drain_estops(&mut self, now: u64) {
        for (i, sub) in self.estops.iter().enumerate() {
            while let Ok(Some((b, info))) = sub.take() {
                self.state.on_estop_from(i, writer_key(&info), b.data, now);
            }
        }
    }
}

/// A publisher's GID as a key (one E-stop state per publisher).
fn writer_key(info: &ros2_client::MessageInfo) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    info.publisher_gid().hash(&mut h);
    h.finish() | 1
}

/// Wakes the robot-I/O thread when DDS delivers an E-stop message.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The `/cmd_vel` publisher, of the configured type (`[ros] cmd_vel_type`).
enum CmdVel {
    Twist(Publisher<TwistMsg>),
    /// With the header's frame id and what its stamp is.
    Stamped(Publisher<TwistStampedMsg>, String, CmdVelStamp),
}

/// A `[[ros.controllers]]` publisher.
enum JointPub {
    Trajectory(Publisher<JointTrajectory>),
    Array(Publisher<Float64MultiArray>),
}

/// `/cmd_vel` and the joint controllers for the actuator gate's thread.
struct DdsActuator {
    cmd_vel: CmdVel,
    controllers: Vec<(ControllerPlan, JointPub)>,
    published: Arc<AtomicU64>,
    joint_published: Arc<AtomicU64>,
}

impl Actuator for DdsActuator {
    fn send(&mut self, command: &CommandFrame) {
        let sent = match &self.cmd_vel {
            CmdVel::Twist(p) => p.publish(crate::port::command_twist(command)).is_ok(),
            // Stamped when it is sent (ROS time = the host's wall clock).
            CmdVel::Stamped(p, frame_id, stamp) => {
                // Zero (the controller stamps it on receipt), or when it is sent (ROS time =
                // the host's wall clock).
                let stamp_ns = match stamp {
                    CmdVelStamp::Zero => 0,
                    CmdVelStamp::SendTime => wall_clock_ns(),
                };
                p.publish(crate::port::command_twist_stamped(
                    command, stamp_ns, frame_id,
                ))
                .is_ok()
            }
        };
        if sent {
            self.published.fetch_add(1, Ordering::Relaxed);
        }
        for (plan, publisher) in &mut self.controllers {
            let sent = match (
                plan.message(command, reflex_core::clock::now_ns()),
                &*publisher,
            ) {
                (Some(JointCommand::Trajectory(m)), JointPub::Trajectory(p)) => {
                    p.publish(m).is_ok()
                }
                (Some(JointCommand::Array(m)), JointPub::Array(p)) => p.publish(m).is_ok(),
                _ => false,
            };
            if sent {
                self.joint_published.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl RobotIo for DdsRobot {
    fn beams(&self) -> usize {
        self.beams
    }

    fn stationary_at_start(&self) -> bool {
        // Before the first step no odometry has been read; Reflex has commanded nothing yet.
        true
    }

    fn take_actuator(&mut self) -> Option<Box<dyn Actuator>> {
        self.cmd_vel.take().map(|cmd_vel| {
            Box::new(DdsActuator {
                cmd_vel,
                controllers: std::mem::take(&mut self.controllers),
                published: self.commands_published.clone(),
                joint_published: self.joint_commands_published.clone(),
            }) as Box<dyn Actuator>
        })
    }

    fn attach_ingress(&mut self, ingress: Arc<EstopIngress>) {
        self.state.attach_ingress(ingress);
    }

    /// Sleeps until `deadline_ns`, woken by DDS the moment an E-stop message arrives (RustDDS
    /// calls the reader's waker): the press reaches the ingress, and the gate sends zero, within
    /// the DDS latency, not at the next step.
    fn idle_until(&mut self, deadline_ns: u64) {
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = TaskContext::from_waker(&waker);
        loop {
            let now = reflex_core::clock::now_ns();
            self.drain_estops(now);
            if now >= deadline_ns {
                return;
            }
            // Arm each reader's waker (the poll takes a message if one slipped in).
            let mut got = None;
            for (i, sub) in self.estops.iter().enumerate() {
                let mut next = std::pin::pin!(sub.async_take());
                if let Poll::Ready(Ok((b, info))) = next.as_mut().poll(&mut cx) {
                    got = Some((i, writer_key(&info), b.data));
                    break;
                }
            }
            match got {
                Some((i, writer, pressed)) => {
                    let now = reflex_core::clock::now_ns();
                    self.state.on_estop_from(i, writer, pressed, now);
                }
                None => std::thread::park_timeout(std::time::Duration::from_nanos(
                    deadline_ns.saturating_sub(reflex_core::clock::now_ns()),
                )),
            }
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
        self.state.stats.commands_published = self.commands_published.load(Ordering::Relaxed);
        self.state.stats.joint_commands_published =
            self.joint_commands_published.load(Ordering::Relaxed);
        self.state.begin_step(now, wall_clock_ns());
        while let Ok(Some((o, _))) = self.odom.take() {
            self.state.on_odom(&o, now);
        }
        while let Ok(Some((scan, _))) = self.scan.take() {
            self.state.on_scan(&scan, now);
        }
        while let Ok(Some((js, _))) = self.joint_states.take() {
            self.state.on_joint_state(&js, now);
        }
        self.drain_estops(now);
        if let Some(sub) = &self.estop_reset {
            while let Ok(Some(_)) = sub.take() {
                self.state.on_reset();
            }
        }
        if let Some(sub) = &self.start {
            while let Ok(Some(_)) = sub.take() {
                self.state.on_start();
            }
        }
        while let Ok(Some((s, _))) = self.instruction.take() {
            self.state.on_instruction(&s.data);
        }
        for (camera, sub) in self.images.iter().enumerate() {
            while let Ok(Some((img, _))) = sub.take() {
                self.state.on_image(camera, &img, now);
            }
        }
        let fresh = self.state.finish_step(frame, obs);
        if now >= self.next_diagnostics_ns {
            self.next_diagnostics_ns = now + 1_000_000_000;
            let d = LoopDiagnostics::from_port(&self.status, &self.state);
            let _ = self
                .diagnostics
                .publish(d.to_msg(wall_clock_ns(), &self.hardware_id));
        }
        fresh
    }
}
