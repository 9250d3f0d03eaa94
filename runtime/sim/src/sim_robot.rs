//! The built-in simulator as a robot: what `reflex sim --realtime` and `reflex run --io sim`
//! drive through the production thread topology.

use reflex_core::{CommandFrame, Observation, RobotIo, SensorFrame, is_stationary};
use reflex_safety::{EstopReport, EstopSource, Monotonic};

use crate::lockstep::{Faults, Robot, SimSummary};

/// The built-in simulator as a [`RobotIo`]: world and plant stepped at the loop rate, lidar at
/// 25 Hz, camera at 20 Hz, odometry every step, a healthy hardware E-stop circuit, one reset.
pub struct SimRobot {
    robot: Robot,
    start_ns: u64,
    last_ns: u64,
    step: u64,
    scan_stamp: u64,
    ranges: Vec<f32>,
    inference_due: u64,
    faults: Option<Box<dyn Fn(f64) -> Faults>>,
    /// (time s, speed m/s, clearance m) per step, when tracing (HIL scenarios).
    pub trace: Option<Vec<(f64, f64, f64)>>,
}

impl std::fmt::Debug for SimRobot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRobot")
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl SimRobot {
    pub fn new(robot: Robot) -> Self {
        let beams = robot.lidar.beams;
        Self {
            robot,
            start_ns: 0,
            last_ns: 0,
            step: 0,
            scan_stamp: 0,
            ranges: vec![f32::INFINITY; beams],
            inference_due: 0,
            faults: None,
            trace: None,
        }
    }

    /// Applies `faults(t_s)` every step (frozen lidar, stopped camera, E-stop, resets) and
    /// records a per-step trace (HIL scenarios in real time).
    pub fn with_faults(mut self, faults: Box<dyn Fn(f64) -> Faults>) -> Self {
        self.faults = Some(faults);
        self.trace = Some(Vec::new());
        self
    }
}

impl RobotIo for SimRobot {
    fn beams(&self) -> usize {
        self.robot.lidar.beams
    }

    fn stationary_at_start(&self) -> bool {
        is_stationary(self.robot.plant.velocity)
    }

    fn step(
        &mut self,
        now: u64,
        command: &CommandFrame,
        frame: &mut SensorFrame,
        obs: &mut Observation,
    ) -> bool {
        if self.step == 0 {
            (self.start_ns, self.last_ns, self.inference_due) = (now, now, now);
        }
        let dt_s = (now - self.last_ns) as f64 * 1e-9;
        self.last_ns = now;
        let robot = &mut self.robot;
        robot.world.step(dt_s);
        let t_s = (now - self.start_ns) as f64 * 1e-9;
        let fault = self.faults.as_ref().map(|f| f(t_s)).unwrap_or_default();
        let clearance = robot.actuate(command.base, command.drive_enabled, dt_s, t_s);
        if let Some(trace) = self.trace.as_mut() {
            let v = robot.plant.velocity;
            trace.push((t_s, v.vx_mps.hypot(v.vy_mps), clearance));
        }
        // The lidar publishes at 25 Hz; odometry every step.
        if self.step.is_multiple_of(4) && !fault.lidar_frozen {
            robot.scan(&mut self.ranges);
            self.scan_stamp = now;
        }
        self.step += 1;
        frame.ranges.copy_from_slice(&self.ranges);
        frame.scan_stamp_ns = self.scan_stamp;
        frame.odom_stamp_ns = now;
        frame.odom = Some(robot.plant.velocity);
        frame.estop[EstopSource::Hardware.index()] = if fault.estop_pressed {
            EstopReport::Pressed(Monotonic::from_nanos(now))
        } else {
            EstopReport::Clear(Monotonic::from_nanos(now))
        };
        frame.reset_seq = 1 + fault.resets;
        // The simulated operator asks for a start on every step: the loop honours the first one
        // after a reset (SAF-013), one tick later.
        frame.start_seq = self.step;
        if now >= self.inference_due && !fault.camera_stopped {
            // The camera runs at 20 Hz; the worker takes the newest frame when it is free.
            robot.observe(obs);
            self.inference_due = now + 50_000_000;
            return true;
        }
        false
    }
}

impl SimRobot {
    /// Adds what only the simulator knows (collisions, clearance, goal, final pose).
    pub fn finish(&self, summary: &mut SimSummary) {
        self.robot.finish(summary);
    }
}
