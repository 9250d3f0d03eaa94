//! The robot the loop drives.

use std::sync::Arc;

use crate::{Actuator, CommandFrame, EstopIngress, Observation, SensorFrame};

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

    /// The robot's command publisher, for the actuator gate's thread (SAF-011). `None` (the
    /// simulator): `step` applies the gated command itself.
    fn take_actuator(&mut self) -> Option<Box<dyn Actuator>> {
        None
    }
    /// Where E-stop presses go the moment they arrive (SAF-012); given once, before the run.
    fn attach_ingress(&mut self, _ingress: Arc<EstopIngress>) {}
    /// Between steps: waits for middleware events until `deadline_ns` (monotonic), handling an
    /// E-stop message as soon as it arrives (reported to the ingress). The default sleeps.
    fn idle_until(&mut self, deadline_ns: u64) {
        crate::clock::sleep_until(deadline_ns);
    }
}
