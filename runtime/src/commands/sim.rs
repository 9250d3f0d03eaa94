//! `reflex sim`: the demo policy and the production loop on the built-in simulator.

use std::path::PathBuf;

use super::{FinishRecorder, host_backend, start_metrics, start_recorder};
use anyhow::Result;
use reflex_policy::PolicyPackage;
use reflex_runner::config::ReflexConfig;

/// Closed loop on the built-in simulator: the demo policy (ONNX Runtime), the action-chunk
/// queue and the safety layer drive a robot to the goal the instruction names, past a
/// pedestrian. Lockstep (deterministic, faster than real time) by default; `--realtime` runs
/// the production thread topology (RT thread, inference worker, supervisor) on the real clock.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The simulated robot: `base` (a mobile base among people, lockstep or real time) or `arm`
    /// (an arm on a table, the config's [safety.arm], with a person entering the cell; real
    /// time, through the ROS port's observation assembly).
    #[arg(long, value_enum, default_value_t = SimRobotKind::Base)]
    robot: SimRobotKind,
    /// The Reflex TOML config (default: launch/reflex.example.toml; launch/arm.toml with
    /// `--robot arm`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The policy package (default: models/demo/reflex-demo-vla; models/demo/reflex-demo-arm-reach
    /// with `--robot arm`).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The instruction given to the policy (default: the scenario's: "go to the red marker" for
    /// the base, none for the arm).
    #[arg(long)]
    instruction: Option<String>,
    /// Scenario name. Built in: `default` (go to the red marker past a pedestrian).
    #[arg(long, default_value = "default")]
    scenario: String,
    /// Simulated seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Control period (ms).
    #[arg(long, default_value_t = 10.0)]
    period_ms: f64,
    /// Scenario seed (goal position, lidar noise).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// libonnxruntime.so.1.31.1 (default: [models] ort_library or $ORT_DYLIB_PATH).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Run on real threads and the real clock (RT thread, inference worker, robot) instead
    /// of lockstep.
    #[arg(long)]
    realtime: bool,
    /// Also write ticks.csv and trajectory.svg into this directory (lockstep runs).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (overrides [telemetry] metrics_bind).
    #[arg(long)]
    metrics_bind: Option<String>,
    /// Flight recordings into DIR/queue (overrides [recorder] dir; defaults for the rest).
    #[arg(long)]
    record: Option<PathBuf>,
    /// What freezes a recording (repeatable; overrides [recorder] triggers): a safety
    /// reason name, deadline_miss, inference_fault or operator_mark.
    #[arg(long = "record-trigger")]
    record_triggers: Vec<String>,
    /// A cloud policy server (openpi protocol, wss:// or loopback ws://) as a command
    /// source (overrides [cloud] url; real-time runs only).
    #[arg(long)]
    cloud_url: Option<String>,
    /// CA certificate (PEM) of the cloud policy server (overrides [cloud] ca_file).
    #[arg(long)]
    cloud_ca: Option<PathBuf>,
}

/// `reflex sim --robot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimRobotKind {
    Base,
    Arm,
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        robot,
        config,
        policy,
        instruction,
        scenario,
        duration,
        period_ms,
        seed,
        ort_library,
        json,
        realtime,
        report,
        metrics_bind,
        record,
        record_triggers,
        cloud_url,
        cloud_ca,
    } = args;
    anyhow::ensure!(
        duration.is_finite() && duration > 0.0 && duration <= 3600.0,
        "--duration must be in (0, 3600] s, got {duration}"
    );
    anyhow::ensure!(
        period_ms.is_finite() && (0.5..=100.0).contains(&period_ms),
        "--period-ms must be in [0.5, 100], got {period_ms}"
    );
    let arm = robot == SimRobotKind::Arm;
    let config = config.unwrap_or_else(|| {
        PathBuf::from(if arm {
            "launch/arm.toml"
        } else {
            "launch/reflex.example.toml"
        })
    });
    let policy = policy.unwrap_or_else(|| {
        PathBuf::from(if arm {
            "models/demo/reflex-demo-arm-reach"
        } else {
            "models/demo/reflex-demo-vla"
        })
    });
    if arm {
        anyhow::ensure!(
            report.is_none(),
            "--report records lockstep runs of the base; `--robot arm` runs in real time"
        );
    }
    let config = ReflexConfig::load(&config)?;
    let package = PolicyPackage::open(&policy)?;
    package.verify_files()?;
    let mut backend = host_backend(config.models.clone());
    if ort_library.is_some() {
        backend.ort_library = ort_library;
    }
    let (telemetry, _metrics) = start_metrics(&config, metrics_bind)?;
    telemetry.set_model(package.model_info(0));
    let mut recorder_config = config.recorder.clone();
    if let Some(dir) = record {
        let mut r = recorder_config.unwrap_or(toml::from_str(&format!(
            "dir = {:?}",
            dir.display().to_string()
        ))?);
        r.dir = dir;
        recorder_config = Some(r);
    }
    if !record_triggers.is_empty() {
        let r = recorder_config.as_mut().ok_or_else(|| {
            anyhow::anyhow!("--record-trigger needs --record DIR or a [recorder] section")
        })?;
        r.triggers = record_triggers;
    }
    let beams = config.safety.lidar.as_ref().map_or(0, |l| l.max_beams);
    let recorder = start_recorder(recorder_config, &package, period_ms, beams, &telemetry)?;
    let mut cloud = config.cloud.clone();
    if let Some(url) = cloud_url {
        let mut c = cloud.unwrap_or(toml::from_str(&format!("url = {url:?}"))?);
        c.url = url;
        cloud = Some(c);
    }
    if let Some(ca) = cloud_ca {
        cloud
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("--cloud-ca needs --cloud-url or [cloud]"))?
            .ca_file = Some(ca);
    }
    anyhow::ensure!(
        cloud.is_none() || realtime || arm,
        "a cloud policy link runs on the real clock: add --realtime"
    );
    let options = reflex_sim::lockstep::SimOptions {
        duration_s: duration,
        period_ms,
        seed,
        telemetry: Some(telemetry.clone()),
        recorder: recorder.clone(),
        cloud,
        chunks: config.chunks,
        arbitration: config.arbitration.clone(),
        ..Default::default()
    };
    let _finish = FinishRecorder(recorder);
    anyhow::ensure!(
        scenario == "default",
        "--scenario {scenario:?}: the built-in scenario is `default`; scenario files arrive with the HIL scenario suite (hil-tests/scenarios, hil-tests/scenarios/arm)"
    );
    if arm {
        let scenario = reflex_sim::default_arm_scenario(instruction.as_deref().unwrap_or(""));
        let (summary, report) = reflex_sim::run_arm_realtime(
            &config,
            &package,
            &backend,
            scenario,
            &options,
            &std::sync::Arc::new(reflex_runner::swap::SwapPort {
                telemetry: telemetry.clone(),
                ..Default::default()
            }),
        )?;
        if !report.grants.is_empty() {
            eprintln!("reflex: rt thread: {}", report.grants);
        }
        if json {
            let mut value = serde_json::to_value(&summary)?;
            value["lateness_p99_us"] = report.lateness_p99_us.into();
            value["lateness_max_us"] = report.lateness_max_us.into();
            value["watchdog_trips"] = report.watchdog_trips.into();
            value["worker_restarts"] = report.worker_restarts.into();
            if let Some(cloud) = &report.cloud {
                value["cloud"] = cloud.clone();
                value["cloud_ticks"] = report.cloud_ticks.into();
            }
            println!("{}", serde_json::to_string(&value)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&summary)?);
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        anyhow::ensure!(
            summary.position_violations == 0,
            "the arm was outside its joint limits in {} steps",
            summary.position_violations
        );
        return Ok(());
    }
    let mut scenario = reflex_sim::lockstep::default_scenario(seed);
    if let Some(text) = instruction {
        scenario.instruction = text;
    }
    anyhow::ensure!(
        !(realtime && report.is_some()),
        "--report records lockstep runs; drop --realtime or --report"
    );
    if realtime {
        let mut rt_config = config.runtime.clone();
        rt_config.period_ms = period_ms;
        let (summary, report) = reflex_sim::run_realtime(
            &config.safety,
            &package,
            &backend,
            &rt_config,
            scenario,
            &options,
            &std::sync::Arc::new(reflex_runner::swap::SwapPort {
                telemetry: telemetry.clone(),
                ..Default::default()
            }),
        )?;
        if !report.grants.is_empty() {
            eprintln!("reflex: rt thread: {}", report.grants);
        }
        if json {
            let mut value = serde_json::to_value(&summary)?;
            value["lateness_p50_us"] = report.lateness_p50_us.into();
            value["lateness_p95_us"] = report.lateness_p95_us.into();
            value["lateness_p99_us"] = report.lateness_p99_us.into();
            value["lateness_max_us"] = report.lateness_max_us.into();
            value["watchdog_trips"] = report.watchdog_trips.into();
            value["worker_restarts"] = report.worker_restarts.into();
            value["cloud"] = report.cloud.clone().unwrap_or_default();
            value["cloud_ticks"] = report.cloud_ticks.into();
            println!("{}", serde_json::to_string(&value)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&summary)?);
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        anyhow::ensure!(
            summary.collisions == 0,
            "the robot collided {} times",
            summary.collisions
        );
        return Ok(());
    }
    let world = scenario.world.clone();
    let mut ticks = Vec::new();
    let mut last_print = -1.0f64;
    let summary = reflex_sim::lockstep::run_lockstep(
        &config.safety,
        &package,
        &backend,
        scenario,
        &options,
        &mut |t| {
            if report.is_some() {
                ticks.push(*t);
            }
            if !json && t.time_s - last_print >= 0.5 {
                last_print = t.time_s;
                println!(
                    "{:>6.2}s x {:>5.2} y {:>5.2} v {:>5.2} wz {:>5.2} clr {:>5.2} {:<6} {}",
                    t.time_s,
                    t.pose.x_m,
                    t.pose.y_m,
                    t.velocity.vx_mps,
                    t.velocity.wz_radps,
                    t.clearance_m.min(99.0),
                    t.action.name(),
                    t.reasons
                );
            }
        },
    )?;
    if let Some(dir) = &report {
        reflex_sim::report::write(dir, &world, &ticks)?;
        eprintln!("reflex: report written to {}", dir.display());
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    anyhow::ensure!(
        summary.collisions == 0,
        "the robot collided {} times",
        summary.collisions
    );
    Ok(())
}
