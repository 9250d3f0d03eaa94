//! The `dds` ROS 2 adapter (feature `dds`): a pure-Rust DDS node (ros2-client / RustDDS) that
//! needs no ROS installation and talks to ROS 2 nodes on the wire (tested against Cyclone DDS,
//! the DDS ROS 2 ships). It only moves the port's messages (`crate::port`) between DDS and the
//! loop's slots, on the robot-I/O thread; the RT thread never touches DDS.
//!
//! Inputs: `/scan` (sensor data QoS) → the scan slot, stamped on reception (a publisher that
//! stops makes the scan go stale and the safety layer stops the robot); `/reflex/estop`
//! (reliable, transient-local) → the `ros_topic` E-stop source (`Unknown` until the first
//! message: the robot stays stopped); `/reflex/estop_reset` → explicit reset requests;
//! `/camera/image_raw` (rgb8/bgr8, any size, nearest-neighbour to the policy's input) and
//! `/reflex/instruction` → the policy's observation (state = the last command sent: this port
//! has no odometry input). Outputs: `/cmd_vel` every period (zero when the verdict removed
//! drive power), `/diagnostics` at 1 Hz.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, Result};
use reflex_models::{ImageData, Observation, PolicyManifest};
use reflex_safety::{EstopReport, EstopSource, Monotonic, Twist};
use ros2_client::dds::rustdds::DomainParticipant;
use ros2_client::qos::{Durability, History, WhenFull};
use ros2_client::{
    Context, MessageTypeName, Name, Node, NodeName, NodeOptions, Publisher, QosProfile,
    Subscription,
};

use crate::config::RosConfig;
use crate::port::{
    BoolMsg, DiagnosticArray, Empty, Image, LaserScan, LoopDiagnostics, Qos, StringMsg, TwistMsg,
    twist_of,
};
use crate::realtime::{CommandFrame, RobotIo, SensorFrame, SwapPort};
use crate::simrun::SimSummary;

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

/// Counters of what the adapter received and refused.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DdsStats {
    pub scans: u64,
    pub scans_refused: u64,
    pub images: u64,
    pub images_refused: u64,
    pub estop_messages: u64,
    pub resets: u64,
    pub instructions: u64,
    pub commands_published: u64,
}

/// The robot, as seen through ROS 2 topics over DDS.
pub struct DdsRobot {
    _node: Node,
    scan: Subscription<LaserScan>,
    image: Subscription<Image>,
    instruction: Subscription<StringMsg>,
    estop: Subscription<BoolMsg>,
    estop_reset: Subscription<Empty>,
    cmd_vel: Publisher<TwistMsg>,
    diagnostics: Publisher<DiagnosticArray>,
    manifest: PolicyManifest,
    port: Arc<SwapPort>,
    hardware_id: String,
    beams: usize,
    // Latest state, written whole into every frame.
    scan_stamp_ns: u64,
    geometry: [f32; 4],
    ranges: Vec<f32>,
    estop_report: EstopReport,
    reset_seq: u64,
    tokens: Vec<i64>,
    last_command: Twist,
    next_diagnostics_ns: u64,
    pub stats: DdsStats,
}

impl std::fmt::Debug for DdsRobot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DdsRobot")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl DdsRobot {
    /// Joins DDS domain `$ROS_DOMAIN_ID` (default 0) as the node `ros.node_name` in
    /// `ros.namespace`, with the port's topics and QoS.
    pub fn new(
        ros: &RosConfig,
        max_beams: usize,
        manifest: &PolicyManifest,
        port: Arc<SwapPort>,
    ) -> Result<Self> {
        let domain: u16 = match std::env::var("ROS_DOMAIN_ID") {
            Ok(v) if !v.is_empty() => v
                .parse()
                .with_context(|| format!("ROS_DOMAIN_ID={v:?}: expected a number 0-232"))?,
            _ => 0,
        };
        let participant = DomainParticipant::new(domain)
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
        let image_t = topic!(&t.image, "sensor_msgs", "Image", Qos::SENSOR_DATA);
        let instr_t = topic!(&t.instruction, "std_msgs", "String", Qos::DEFAULT);
        let estop_t = topic!(&t.estop, "std_msgs", "Bool", Qos::LATCHED);
        let reset_t = topic!(&t.estop_reset, "std_msgs", "Empty", Qos::DEFAULT);
        let cmd_t = topic!(&t.cmd_vel, "geometry_msgs", "Twist", Qos::DEFAULT);
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
        let image = node
            .create_subscription(&image_t, None)
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.image)))?;
        let instruction = node
            .create_subscription(&instr_t, None)
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.instruction)))?;
        let estop = node
            .create_subscription(&estop_t, None)
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.estop)))?;
        let estop_reset = node
            .create_subscription(&reset_t, None)
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", sub_err(&t.estop_reset)))?;
        let cmd_vel = node
            .create_publisher(&cmd_t, None)
            .map_err(|e| anyhow::anyhow!("cannot publish {}: {e:?}", t.cmd_vel))?;
        let diagnostics = node
            .create_publisher(&diag_t, None)
            .map_err(|e| anyhow::anyhow!("cannot publish {}: {e:?}", t.diagnostics))?;
        let tokens_len = manifest
            .input(reflex_models::InputRole::InstructionTokens)
            .map_or(0, |i| i.shape.iter().product::<i64>() as usize);
        Ok(Self {
            _node: node,
            scan,
            image,
            instruction,
            estop,
            estop_reset,
            cmd_vel,
            diagnostics,
            manifest: manifest.clone(),
            port,
            hardware_id: format!("{}{}", ros.namespace.trim_end_matches('/'), ros.node_name),
            beams: max_beams,
            scan_stamp_ns: 0,
            geometry: [0.0; 4],
            ranges: Vec::with_capacity(max_beams),
            estop_report: EstopReport::Unknown,
            reset_seq: 0,
            tokens: vec![0; tokens_len],
            last_command: Twist::default(),
            next_diagnostics_ns: 0,
            stats: DdsStats::default(),
        })
    }

    fn take_scans(&mut self, now: u64) {
        while let Ok(Some((scan, _))) = self.scan.take() {
            let ok = !scan.ranges.is_empty()
                && scan.ranges.len() <= self.beams
                && scan.angle_increment.is_finite()
                && scan.angle_increment != 0.0
                && scan.angle_min.is_finite()
                && scan.range_max > scan.range_min;
            if !ok {
                // Refused: the last good scan ages until the safety layer stops the robot.
                self.stats.scans_refused += 1;
                continue;
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
            self.scan_stamp_ns = now;
        }
    }

    /// Writes the newest image into the observation; false if none (or none usable) arrived.
    fn take_images(&mut self, obs: &mut Observation) -> bool {
        let mut fresh = false;
        while let Ok(Some((img, _))) = self.image.take() {
            let written = match obs.image.as_mut() {
                Some(ImageData::U8(dst)) => write_image(&img, dst, &self.manifest),
                _ => false,
            };
            if written {
                fresh = true;
                self.stats.images += 1;
            } else {
                self.stats.images_refused += 1;
            }
        }
        fresh
    }
}

/// rgb8/bgr8 `img` → the policy's NCHW uint8 input (nearest neighbour). False when the image
/// is malformed or in another encoding.
fn write_image(img: &Image, dst: &mut [u8], manifest: &PolicyManifest) -> bool {
    let Some(spec) = manifest.input(reflex_models::InputRole::Image) else {
        return false;
    };
    let (h, w) = (spec.shape[2] as usize, spec.shape[3] as usize);
    let (ih, iw, step) = (img.height as usize, img.width as usize, img.step as usize);
    let bgr = match img.encoding.as_str() {
        "rgb8" => false,
        "bgr8" => true,
        _ => return false,
    };
    if ih == 0 || iw == 0 || step < iw * 3 || img.data.len() < step * ih || dst.len() != 3 * h * w {
        return false;
    }
    for y in 0..h {
        let sy = y * ih / h;
        for x in 0..w {
            let sx = x * iw / w;
            let px = &img.data[sy * step + sx * 3..sy * step + sx * 3 + 3];
            for c in 0..3 {
                let src_c = if bgr { 2 - c } else { c };
                dst[c * h * w + y * w + x] = px[src_c];
            }
        }
    }
    true
}

impl RobotIo for DdsRobot {
    fn beams(&self) -> usize {
        self.beams
    }

    fn stationary_at_start(&self) -> bool {
        // Unknown without odometry; Reflex has commanded nothing yet.
        true
    }

    fn step(
        &mut self,
        now: u64,
        command: &CommandFrame,
        frame: &mut SensorFrame,
        obs: &mut Observation,
    ) -> bool {
        // Command out first: zero whenever the verdict removed drive power.
        let base = if command.power_enabled {
            command.base
        } else {
            Twist::default()
        };
        self.last_command = base;
        if self.cmd_vel.publish(twist_of(base)).is_ok() {
            self.stats.commands_published += 1;
        }
        self.take_scans(now);
        while let Ok(Some((b, _))) = self.estop.take() {
            self.stats.estop_messages += 1;
            let at = Monotonic::from_nanos(now);
            self.estop_report = if b.data {
                EstopReport::Pressed(at)
            } else {
                EstopReport::Clear(at)
            };
        }
        while let Ok(Some(_)) = self.estop_reset.take() {
            self.stats.resets += 1;
            self.reset_seq += 1;
        }
        while let Ok(Some((s, _))) = self.instruction.take() {
            self.stats.instructions += 1;
            self.manifest.tokenize(&s.data, &mut self.tokens);
        }
        // The whole frame, every period (the triple buffer hands out older buffers).
        let [angle_min, increment, range_min, range_max] = self.geometry;
        frame.scan_stamp_ns = self.scan_stamp_ns;
        frame.angle_min_rad = angle_min;
        frame.angle_increment_rad = increment;
        frame.range_min_m = range_min;
        frame.range_max_m = range_max;
        frame.ranges.clear();
        frame.ranges.extend_from_slice(&self.ranges);
        frame.odom = None;
        frame.estop = [EstopReport::Unknown; EstopSource::COUNT];
        frame.estop[EstopSource::RosTopic.index()] = self.estop_report;
        frame.reset_seq = self.reset_seq;
        let fresh = self.take_images(obs);
        if fresh {
            let state = [
                self.last_command.vx_mps as f32,
                self.last_command.vy_mps as f32,
                self.last_command.wz_radps as f32,
            ];
            for (s, v) in obs.state.iter_mut().zip(state) {
                *s = v;
            }
            obs.instruction.copy_from_slice(&self.tokens);
        }
        if now >= self.next_diagnostics_ns {
            self.next_diagnostics_ns = now + 1_000_000_000;
            let d = LoopDiagnostics {
                ticks: self.port.ticks.load(Ordering::Relaxed),
                deadline_misses: self.port.deadline_misses.load(Ordering::Relaxed),
                tick_p99_us: 0.0,
                model: format!("{} {}", self.manifest.name, self.manifest.version),
                model_digest: String::new(),
                estop_latched: !command.power_enabled,
                vetoes: vec![(
                    "ticks_slowed_or_stopped".into(),
                    self.port.vetoed_ticks.load(Ordering::Relaxed),
                )],
            };
            let _ = self.diagnostics.publish(d.to_msg(now, &self.hardware_id));
        }
        fresh
    }

    fn finish(&self, _summary: &mut SimSummary) {}
}
