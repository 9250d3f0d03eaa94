//! The control loop without inference: a `ControlLoop` fed constant chunks by a helper thread
//! (as the inference worker would) and a static 720-beam room scan. Used by the criterion bench
//! `control_tick` and by `reflex-bench loop` (lateness on absolute deadlines).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use reflex_core::actions::ActionTarget;
use reflex_rt::chunks::{MergeStrategy, QueueConfig};
use reflex_rt::control::{ChunkSender, ControlLoop, chunk_channel};
use reflex_runner::config::ReflexConfig;
use reflex_safety::{
    EstopReport, EstopSource, JointState, Monotonic, Safety, SafetyInputs, Scan, Verdict,
};

pub const BEAMS: usize = 720;

/// A loop with its inputs.
#[derive(Debug)]
pub struct LoopBench {
    pub control: ControlLoop,
    pub channel: ChunkSender,
    pub ranges: Vec<f32>,
    /// Arm loops ([`LoopBench::arm`]): the measured joint state, which follows the verdict's
    /// targets exactly (a perfect drive), so no stop interrupts the measurement.
    pub joint_positions: Vec<f64>,
    pub joint_velocities: Vec<f64>,
}

/// The arm loop's chunk: `ARM_HORIZON` steps × (`ARM_JOINTS` joints + a gripper).
pub const ARM_JOINTS: usize = 13;
pub const ARM_DIMS: usize = ARM_JOINTS + 1;
pub const ARM_HORIZON: usize = 100;

impl LoopBench {
    pub fn new() -> Result<Self> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/reflex.example.toml");
        let config = ReflexConfig::load(&path)?;
        let (channel, chunk_rx) = chunk_channel(4, 20 * 3);
        let control = ControlLoop::new(
            Safety::new(config.safety)?,
            QueueConfig {
                dims: 3,
                horizon: 20,
                step_ns: 20_000_000,
                strategy: MergeStrategy::Crossfade,
                crossfade_steps: 5,
                ensemble_decay: 0.5,
                max_action_age_ns: 200_000_000,
                interpolation: reflex_rt::chunks::Interpolation::Hold,
            },
            &[
                ActionTarget::BaseVx,
                ActionTarget::BaseVy,
                ActionTarget::BaseWz,
            ],
            chunk_rx,
        );
        // A 6 m × 8 m room around the robot.
        let ranges = (0..BEAMS)
            .map(|i| {
                let a = -std::f32::consts::PI + i as f32 * std::f32::consts::TAU / BEAMS as f32;
                (3.0 / a.cos().abs()).min(4.0 / a.sin().abs())
            })
            .collect();
        Ok(Self {
            control,
            channel,
            ranges,
            joint_positions: Vec::new(),
            joint_velocities: Vec::new(),
        })
    }

    /// The arm loop of an ACT-sized bimanual policy: `launch/arm.toml` with 13 position-driven
    /// joints and the gripper (A = 14), chunks of H = 100 steps at 30 Hz, crossfaded over 5
    /// steps, interpolated linearly at the loop rate, SAF-006 trapezoidal tracking and SAF-015
    /// following error on every joint, and the 720-beam scan.
    pub fn arm() -> Result<Self> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/arm.toml");
        let text = std::fs::read_to_string(&path)?;
        // arm.toml's `joints = [ … ]` of [safety.arm], replaced with ARM_JOINTS joints.
        let start = text
            .find("\njoints = [")
            .context("launch/arm.toml has [safety.arm] joints")?;
        let end = start + text[start..].find("\n]\n").context("joints = [ … ] ends")? + 3;
        let joints: String = (0..ARM_JOINTS)
            .map(|j| format!("    {{ name = \"j{j}\", min_position = -3.0, max_position = 3.0, max_velocity = 1.5, max_acceleration = 6.0 }},\n"))
            .collect();
        let text = format!(
            "{}\njoints = [\n{joints}]\n{}",
            &text[..start],
            &text[end..]
        );
        // And its kinematic chain (SAF-016: every link checked against the workspace and the
        // keep-out box on every tick, with the braking path): ARM_JOINTS links, yaw/pitch/roll
        // in turn, short enough that every pose of the bench's reach stays clear of both
        // (0.26 m around the first joint at 0.3 m), so each tick runs the whole check and drives.
        let start = text
            .find("\nlinks = [")
            .context("launch/arm.toml has [safety.arm.kinematics] links")?;
        let end = start + text[start..].find("\n]\n").context("links = [ … ] ends")? + 3;
        let links: String = (0..ARM_JOINTS)
            .map(|j| {
                let z = if j == 0 { 0.3 } else { 0.02 };
                let axis = ["0.0, 0.0, 1.0", "0.0, 1.0, 0.0", "1.0, 0.0, 0.0"][j % 3];
                format!("    {{ joint = \"j{j}\", xyz_m = [0.0, 0.0, {z}], axis = [{axis}], radius_m = 0.01 }},\n")
            })
            .collect();
        let text = format!("{}\nlinks = [\n{links}]\n{}", &text[..start], &text[end..]);
        let tool = text
            .find("\ntool = {")
            .context("launch/arm.toml has [safety.arm.kinematics] tool")?;
        let tool_end = tool + text[tool + 1..].find('\n').context("tool = { … } ends")? + 1;
        let text = format!(
            "{}\ntool = {{ xyz_m = [0.0, 0.0, 0.02], radius_m = 0.02 }}{}",
            &text[..tool],
            &text[tool_end..]
        );
        let dir = std::env::temp_dir().join(format!("reflex-bench-arm-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("arm.toml");
        std::fs::write(&file, text)?;
        let config = ReflexConfig::load(&file);
        let _ = std::fs::remove_dir_all(&dir);
        let config = config?;
        let (channel, chunk_rx) = chunk_channel(4, ARM_HORIZON * ARM_DIMS);
        let mut targets: Vec<ActionTarget> = (0..ARM_JOINTS as u8)
            .map(ActionTarget::JointPosition)
            .collect();
        targets.push(ActionTarget::Gripper);
        let control = ControlLoop::new(
            Safety::new(config.safety)?,
            QueueConfig {
                dims: ARM_DIMS,
                horizon: ARM_HORIZON,
                step_ns: 33_333_333,
                strategy: MergeStrategy::Crossfade,
                crossfade_steps: 5,
                ensemble_decay: 0.5,
                max_action_age_ns: 300_000_000,
                interpolation: reflex_rt::chunks::Interpolation::Linear,
            },
            &targets,
            chunk_rx,
        );
        let mut bench = Self::new()?;
        bench.control = control;
        bench.channel = channel;
        bench.joint_positions = vec![0.0; ARM_JOINTS];
        bench.joint_velocities = vec![0.0; ARM_JOINTS];
        Ok(bench)
    }

    /// Pushes an arm chunk observed at `t_obs_ns`: every joint ramps 0.01 rad per step from
    /// `from` (so the tracker works on every tick), the gripper at 0.04 m.
    pub fn feed_arm(channel: &ChunkSender, t_obs_ns: u64, from: f32, actions: &mut [f32]) {
        for (k, step) in actions.chunks_mut(ARM_DIMS).enumerate() {
            step[..ARM_JOINTS].fill((from + 0.01 * k as f32).min(2.5));
            step[ARM_JOINTS] = 0.04;
        }
        let _ = channel.try_send(t_obs_ns, actions, 0);
    }

    /// One arm tick at `now_ns` with the joint state measured now; the plant then follows the
    /// verdict's targets exactly.
    pub fn tick_arm(&mut self, now_ns: u64, clock: &dyn Fn() -> u64) -> Verdict {
        let joints = JointState {
            stamp: Monotonic::from_nanos(now_ns),
            positions: &self.joint_positions,
            velocities: &self.joint_velocities,
        };
        let inputs = inputs(&self.ranges, now_ns, Some(joints));
        let verdict = self.control.tick(now_ns, &inputs, clock);
        for (j, t) in verdict.command.joints.iter().take(ARM_JOINTS).enumerate() {
            if let Some(p) = t.position {
                self.joint_positions[j] = p;
            }
            self.joint_velocities[j] = t.velocity.unwrap_or(0.0);
        }
        verdict
    }

    /// Pushes a constant chunk observed at `t_obs_ns` (what the inference worker does).
    pub fn feed(channel: &ChunkSender, t_obs_ns: u64) {
        let mut actions = [0.0f32; 20 * 3];
        for step in actions.chunks_mut(3) {
            step.copy_from_slice(&[0.5, 0.0, 0.1]);
        }
        let _ = channel.try_send(t_obs_ns, &actions, 0);
    }

    pub fn tick(&mut self, now_ns: u64, clock: &dyn Fn() -> u64) -> Verdict {
        let inputs = inputs(&self.ranges, now_ns, None);
        self.control.tick(now_ns, &inputs, clock)
    }
}

/// The loop's inputs at `now_ns`: every E-stop source clear, reset requested, the room scan
/// just taken, and the joint state, if any.
fn inputs<'a>(
    ranges: &'a [f32],
    now_ns: u64,
    joint_state: Option<JointState<'a>>,
) -> SafetyInputs<'a> {
    SafetyInputs {
        estop: [EstopReport::Clear(Monotonic::from_nanos(now_ns)); EstopSource::COUNT],
        reset_request_seq: 1,
        scan: Some(Scan {
            stamp: Monotonic::from_nanos(now_ns),
            angle_min_rad: -std::f32::consts::PI,
            angle_increment_rad: std::f32::consts::TAU / BEAMS as f32,
            range_min_m: 0.05,
            range_max_m: 30.0,
            ranges_m: ranges,
        }),
        odometry: None,
        joint_state,
    }
}

/// A feeder thread that pushes a chunk every 50 ms until `stop`.
pub fn spawn_feeder(channel: ChunkSender, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            LoopBench::feed(
                &channel,
                reflex_rt::ticker::now_ns().saturating_sub(30_000_000),
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
}
