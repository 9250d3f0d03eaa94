//! The control loop without inference: a `ControlLoop` fed constant chunks by a helper thread
//! (as the inference worker would) and a static 720-beam room scan. Used by the criterion bench
//! `control_tick` and by `reflex-bench loop` (lateness on absolute deadlines).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use reflex_core::actions::ActionTarget;
use reflex_rt::chunks::{MergeStrategy, QueueConfig};
use reflex_rt::control::{ChunkSender, ControlLoop, chunk_channel};
use reflex_runner::config::ReflexConfig;
use reflex_safety::{EstopReport, EstopSource, Monotonic, Safety, SafetyInputs, Scan, Verdict};

pub const BEAMS: usize = 720;

/// A loop with its inputs.
#[derive(Debug)]
pub struct LoopBench {
    pub control: ControlLoop,
    pub channel: ChunkSender,
    pub ranges: Vec<f32>,
}

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
        })
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
        let inputs = SafetyInputs {
            estop: [EstopReport::Clear(Monotonic::from_nanos(now_ns)); EstopSource::COUNT],
            reset_request_seq: 1,
            scan: Some(Scan {
                stamp: Monotonic::from_nanos(now_ns),
                angle_min_rad: -std::f32::consts::PI,
                angle_increment_rad: std::f32::consts::TAU / BEAMS as f32,
                range_min_m: 0.05,
                range_max_m: 30.0,
                ranges_m: &self.ranges,
            }),
            odometry: None,
            joint_state: None,
        };
        self.control.tick(now_ns, &inputs, clock)
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
