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
/// worker faults (`crash_inference_at_s`, `kill_inference_at_s` = a hang, `nan_output_at_s`,
/// `first_inference_ms`) on the first worker's
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
    let ns = |s: f64| (s * 1e9) as u64;
    let (crash_after_ns, hang_after_ns, nan_after_ns) = (
        options.crash_inference_at_s.map(ns),
        options.kill_inference_at_s.map(ns),
        options.nan_output_at_s.map(ns),
    );
    let first_ns = options.first_inference_ms.map(|ms| (ms * 1e6) as u64);
    // The hang ends a little after the run (the runner waits 2 s for a busy worker at shutdown).
    let hang_for_ns = ns(options.duration_s + 0.5);
    let first = std::sync::atomic::AtomicBool::new(true);
    // The first worker's backend carries the faults; the supervisor's replacements do not.
    let loader = |p: &PolicyPackage| -> Result<Box<dyn PolicyBackend>> {
        let backend = ort(p)?;
        if !first.swap(false, std::sync::atomic::Ordering::AcqRel)
            || (crash_after_ns.is_none()
                && hang_after_ns.is_none()
                && nan_after_ns.is_none()
                && first_ns.is_none())
        {
            return Ok(backend);
        }
        Ok(Box::new(FaultyBackend {
            inner: backend,
            start_ns: None,
            crash_after_ns,
            hang_after_ns,
            hang_for_ns,
            nan_after_ns,
            first_ns,
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

/// A policy backend that fails the way HIL scenarios need, on the run's clock (which starts at
/// its first inference, when the robot I/O's first observation arrives — model load and
/// warm-up are not counted, as the old in-worker hooks did not count them): `crash_after_ns`
/// into the run its `infer` returns an error (the worker thread ends; the supervisor must
/// replace it); `hang_after_ns` into the run it blocks (alive, silent: the supervisor must replace it)
/// until `hang_for_ns` into the run (just past its end), then errors; `nan_after_ns` into the
/// run the model's every output is NaN (the worker's finiteness check must drop them);
/// `first_ns`: the first inference takes at least this long (a slow first call after warm-up).
struct FaultyBackend {
    inner: Box<dyn PolicyBackend>,
    start_ns: Option<u64>,
    crash_after_ns: Option<u64>,
    hang_after_ns: Option<u64>,
    hang_for_ns: u64,
    nan_after_ns: Option<u64>,
    first_ns: Option<u64>,
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
        if self.start_ns.is_none()
            && let Some(ns) = self.first_ns
        {
            std::thread::sleep(std::time::Duration::from_nanos(ns));
        }
        let start = *self.start_ns.get_or_insert(now);
        let since = now - start;
        if self.crash_after_ns.is_some_and(|t| since >= t) {
            return Err("simulated inference worker crash (injected fault)".into());
        }
        if self.hang_after_ns.is_some_and(|t| since >= t) {
            while reflex_core::clock::now_ns() < start + self.hang_for_ns {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            return Err("simulated inference hang ended (injected fault)".into());
        }
        self.inner.infer(obs, out)?;
        if self.nan_after_ns.is_some_and(|t| since >= t) {
            out.actions.fill(f32::NAN);
        }
        Ok(())
    }
}
