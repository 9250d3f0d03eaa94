//! `reflex sim --realtime`: the built-in simulator through the production runner
//! (`reflex_runner::run::run_robot`) on real threads and the real clock, plus the faults the
//! HIL scenarios inject into the inference worker (a crash, a hang) — as a wrapper around the
//! policy backend, so no test hook sits in production code.

use std::sync::Arc;

use anyhow::Result;
use reflex_core::{ActionChunk, BackendError, BackendInfo, Observation, PolicyBackend, RobotIo};
use reflex_policy::{BackendConfig, PolicyPackage};
use reflex_rt::ticker::RtConfig;
use reflex_runner::run::{LoopSummary, RealtimeReport, ort_loader, run_robot};
use reflex_runner::swap::SwapPort;
use reflex_safety::SafetyConfig;

use crate::lockstep::{Robot, Scenario, SimOptions, SimSummary, empty_summary};
use crate::sim_robot::SimRobot;

/// Runs `scenario` on the built-in simulator in real time for `options.duration_s`.
pub fn run_realtime(
    safety_config: &SafetyConfig,
    package: &PolicyPackage,
    backend_config: &BackendConfig,
    rt_config: &RtConfig,
    scenario: Scenario,
    options: &SimOptions,
    port: &Arc<SwapPort>,
) -> Result<(SimSummary, RealtimeReport)> {
    let mut config = safety_config.clone();
    config.control_period_ms = rt_config.period_ms;
    let mut robot = SimRobot::new(Robot::new(&config, &scenario, options.seed)?);
    run_sim_robot(
        safety_config,
        package,
        backend_config,
        rt_config,
        (&scenario.name, &scenario.instruction),
        options,
        port,
        &mut robot,
    )
}

/// [`run_with_faults`] on the simulator, with its own observations (collisions, goal) added to
/// the summary.
#[allow(clippy::too_many_arguments)]
pub fn run_sim_robot(
    safety_config: &SafetyConfig,
    package: &PolicyPackage,
    backend_config: &BackendConfig,
    rt_config: &RtConfig,
    task: (&str, &str),
    options: &SimOptions,
    port: &Arc<SwapPort>,
    robot: &mut SimRobot,
) -> Result<(SimSummary, RealtimeReport)> {
    let (run, report) = run_with_faults(
        safety_config,
        package,
        backend_config,
        rt_config,
        task,
        options,
        port,
        robot,
    )?;
    let mut summary = empty_summary(task.0, "realtime", run);
    robot.finish(&mut summary);
    Ok((summary, report))
}

/// The production runner ([`run_robot`]) on any robot, with `options`' injected inference
/// worker faults (`crash_inference_at_s`, `kill_inference_at_s` = a hang) on the first worker's
/// backend: what HIL scenarios run, in simulation and on hardware.
#[allow(clippy::too_many_arguments)]
pub fn run_with_faults(
    safety_config: &SafetyConfig,
    package: &PolicyPackage,
    backend_config: &BackendConfig,
    rt_config: &RtConfig,
    task: (&str, &str),
    options: &SimOptions,
    port: &Arc<SwapPort>,
    robot: &mut dyn RobotIo,
) -> Result<(LoopSummary, RealtimeReport)> {
    let ort = ort_loader(backend_config);
    let start_ns = reflex_core::clock::now_ns();
    let at = |s: Option<f64>| s.map(|s| start_ns + (s * 1e9) as u64);
    let (crash_at, hang_at) = (
        at(options.crash_inference_at_s),
        at(options.kill_inference_at_s),
    );
    let hang_until = start_ns + ((options.duration_s + 1.0) * 1e9) as u64;
    let first = std::cell::Cell::new(true);
    // The first worker's backend carries the faults; the supervisor's replacements do not.
    let loader = |p: &PolicyPackage| -> Result<Box<dyn PolicyBackend>> {
        let backend = ort(p)?;
        if !first.replace(false) || (crash_at.is_none() && hang_at.is_none()) {
            return Ok(backend);
        }
        Ok(Box::new(FaultyBackend {
            inner: backend,
            crash_at,
            hang_at,
            hang_until,
        }))
    };
    run_robot(
        safety_config,
        package,
        &loader,
        rt_config,
        task,
        &options.run_options(),
        port,
        robot,
    )
}

/// A policy backend that fails the way HIL scenarios need: from `crash_at` its `infer` returns
/// an error (the worker thread ends; the supervisor must replace it), from `hang_at` it blocks
/// (alive, silent: the watchdog must trip) until `hang_until`, then errors. Monotonic ns.
struct FaultyBackend {
    inner: Box<dyn PolicyBackend>,
    crash_at: Option<u64>,
    hang_at: Option<u64>,
    hang_until: u64,
}

impl PolicyBackend for FaultyBackend {
    fn describe(&self) -> BackendInfo {
        self.inner.describe()
    }

    fn warm_up(&mut self, runs: usize) -> Result<(), BackendError> {
        self.inner.warm_up(runs)
    }

    fn infer(&mut self, obs: &Observation, out: &mut ActionChunk) -> Result<(), BackendError> {
        let now = reflex_core::clock::now_ns();
        if self.crash_at.is_some_and(|t| now >= t) {
            return Err("simulated inference worker crash (injected fault)".into());
        }
        if self.hang_at.is_some_and(|t| now >= t) {
            while reflex_core::clock::now_ns() < self.hang_until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            return Err("simulated inference hang ended (injected fault)".into());
        }
        self.inner.infer(obs, out)
    }
}
