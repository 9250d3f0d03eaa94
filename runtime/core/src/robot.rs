//! The robot the loop drives.

use crate::{CommandFrame, Observation, SensorFrame};

/// The robot the loop drives: a middleware adapter (`reflex-ros`: `dds`, `ros2`) or the
/// built-in simulator (`reflex-sim`). Its `step` runs once per period on the robot I/O thread,
/// never on the RT thread; it may block briefly on its middleware, the RT thread never waits
/// for it (sensors and commands cross through triple buffers).
pub trait RobotIo {
    /// Beams to preallocate for scans.
    fn beams(&self) -> usize;
    /// Whether the robot stands still before the first tick (the `stationary` swap rule).
    fn stationary_at_start(&self) -> bool;
    /// Applies `command` (the newest verdict the RT thread published), then writes the newest
    /// sensors into `sensors`; writes a new camera observation into `obs` and returns true when
    /// one is available.
    fn step(
        &mut self,
        now_ns: u64,
        command: &CommandFrame,
        sensors: &mut SensorFrame,
        obs: &mut Observation,
    ) -> bool;
}
