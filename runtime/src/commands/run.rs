//! `reflex run`: the runtime on a robot — the active policy, the RT loop, the model manager.

use std::path::PathBuf;

use super::{FinishRecorder, StopOnDrop, host_backend, start_metrics, start_recorder};
use anyhow::Result;
#[cfg(any(feature = "dds", feature = "ros2"))]
use reflex_policy::BackendConfig;
use reflex_policy::PolicyPackage;
use reflex_runner::config::{ReflexConfig, RobotIoKind};
use reflex_runner::run::RunOptions;
#[cfg(any(feature = "dds", feature = "ros2"))]
use reflex_runner::run::{LoopSummary, RealtimeReport};

/// The runtime: the policy the store's activation record names (first boot: installed from
/// `[updates] channel`), the RT loop, and the model manager following the channel (signed
/// packages only, transactional hot-swap with a health window and automatic rollback).
/// The robot I/O must be named (`--io` or `[robot] io`): `reflex run` never falls back to
/// the simulator. Prints a JSON summary.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// Seconds to run (default: until killed).
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// libonnxruntime.so.1.31.1 (default: [models] ort_library or $ORT_DYLIB_PATH).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// Run this package directory instead of following `[updates]` (no model manager).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The robot: `dds` (ROS 2 topics over a pure-Rust DDS; build with `--features dds`),
    /// `ros2` (rcl via r2r; `--features ros2`, ROS sourced) or `sim` (the built-in simulator,
    /// development only). Overrides `[robot] io`; one of the two is required.
    #[arg(long)]
    io: Option<String>,
    /// What ROS 2 launch appends (`--ros-args -r … --params-file …`): read by rcl under
    /// `--io ros2`; refused otherwise.
    #[arg(long = "ros-args", num_args = 0.., allow_hyphen_values = true)]
    ros_args: Option<Vec<String>>,
    /// Serve Prometheus metrics at http://ADDR/metrics (overrides [telemetry] metrics_bind).
    #[arg(long)]
    metrics_bind: Option<String>,
    /// HIL fault injection (tests only): `panic@S` kills the RT thread S seconds after the
    /// start, `stall@S:D` stops it for D seconds; the actuator gate must send zero.
    #[arg(long, hide = true)]
    inject_rt_fault: Option<String>,
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        config,
        duration,
        seed,
        ort_library,
        policy,
        io,
        ros_args,
        metrics_bind,
        inject_rt_fault,
    } = args;
    use reflex_runner::updates;
    let rt_fault = inject_rt_fault
        .as_deref()
        .map(reflex_runner::run::InjectedRtFault::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if let Some(f) = rt_fault {
        eprintln!("reflex: TEST HOOK: injecting an RT-thread fault ({f:?})");
    }
    // SIGTERM (systemd) and SIGINT (ros2 launch, Ctrl-C): zero to the actuator, then exit.
    reflex_rt::shutdown::install().map_err(anyhow::Error::msg)?;
    // The robot I/O is explicit: --io, else [robot] io. A robot never silently drives a
    // simulated plant (the first version's systemd unit did).
    let io = match &io {
        Some(name) => Some(RobotIoKind::parse(name)?),
        None => None,
    };
    let path = config;
    let duration = duration.unwrap_or(1e7);
    anyhow::ensure!(
        duration.is_finite() && duration > 0.0,
        "--duration must be a positive number of seconds, got {duration}"
    );
    // Under ROS 2 (r2r) the node's parameters override config keys of the same names.
    let (config, io, ros2_node) = load_run_config(&path, io)?;
    #[cfg(not(feature = "ros2"))]
    let () = ros2_node;
    let io = io.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no robot I/O: pass --io dds|ros2|sim or set [robot] io = \"dds\" (or \"ros2\") in the config; `reflex run` never drives the simulator unless told to",
            path.display()
        )
    })?;
    // rcl reads --ros-args itself (the r2r adapter); clap only lets them through.
    anyhow::ensure!(
        ros_args.is_none() || io == RobotIoKind::Ros2,
        "--ros-args (from ROS 2 launch) are read by the r2r adapter: use `--io ros2` (or `[robot] io = \"ros2\"`) in a build with `--features ros2` and ROS 2 sourced; the `dds` adapter takes its node name, namespace and topics from [ros] in the config"
    );
    if io == RobotIoKind::Sim {
        eprintln!("reflex: driving the built-in simulator (--io sim), not a robot");
    }
    // Before anything starts: an adapter this build lacks is refused now.
    anyhow::ensure!(io != RobotIoKind::Dds || cfg!(feature = "dds"), NO_DDS);
    // Before any thread starts: all but the RT thread keep off its CPU (inherited).
    if let Some(cpu) = config.runtime.cpu
        && let Err(e) = reflex_rt::ticker::keep_off_cpu(cpu)
    {
        eprintln!("reflex: cannot keep the other threads off RT CPU {cpu}: {e}");
    }
    let (telemetry, _metrics) = start_metrics(&config, metrics_bind)?;
    let mut backend = host_backend(config.models.clone());
    if ort_library.is_some() {
        backend.ort_library = ort_library;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The policy: a package directory (no updates), or the store's active version with
    // the model manager following [updates] channel.
    let (package, port, updater) = if let Some(dir) = policy {
        let package = PolicyPackage::open(&dir)?;
        package.verify_files()?;
        eprintln!(
            "reflex: running {} {} from {} (no updates)",
            package.manifest.name,
            package.manifest.version,
            dir.display()
        );
        let port = std::sync::Arc::new(reflex_runner::swap::SwapPort {
            telemetry: telemetry.clone(),
            ..Default::default()
        });
        (package, port, None)
    } else {
        let updates_config = config.updates.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: `reflex run` needs an [updates] section (channel, store, trusted_keys; see docs/registry.md) or --policy DIR",
                path.display()
            )
        })?;
        if updates_config.allow_unsigned {
            eprintln!(
                "reflex: WARNING: updates.allow_unsigned = true: unsigned policies are accepted (development only)"
            );
        }
        let (store, mut activation) = updates::open_store(&updates_config)?;
        let active = match activation.active().cloned() {
            Some(v) => v,
            None => updates::first_install(&updates_config, &store, &mut activation, &backend)?,
        };
        let package = PolicyPackage::open(&active.dir)?;
        package.verify_files()?;
        eprintln!(
            "reflex: running {} {} ({})",
            active.name, active.version, active.index_digest
        );
        let port = std::sync::Arc::new(reflex_runner::swap::SwapPort {
            swap_when: updates_config.swap_when,
            telemetry: telemetry.clone(),
            ..Default::default()
        });
        let updater = updates::Updater::new(
            updates_config,
            store,
            activation,
            backend.clone(),
            port.clone(),
            package.clone(),
        );
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("reflex-updates".into())
            .spawn(move || updater.run(&stop))?;
        (package, port, Some(handle))
    };
    *port
        .current_package
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((0, package.clone()));
    telemetry.set_model(package.model_info(0));
    let beams = config.safety.lidar.as_ref().map_or(0, |l| l.max_beams);
    let recorder = start_recorder(
        config.recorder.clone(),
        &package,
        config.runtime.period_ms,
        beams,
        &telemetry,
    )?;
    let options = RunOptions {
        duration_s: duration,
        telemetry: Some(telemetry.clone()),
        recorder: recorder.clone(),
        cloud: config.cloud.clone(),
        chunks: config.chunks,
        arbitration: config.arbitration.clone(),
        inboxes: None,
        rt_fault,
    };
    let _finish = FinishRecorder(recorder);
    let _uploader = match config
        .recorder
        .as_ref()
        .and_then(|r| r.upload.as_ref().map(|u| (r, u)))
    {
        Some((rec, up)) => {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let handle = reflex_telemetry::upload::Uploader::new(
                up,
                &rec.robot_id,
                &rec.dir.join("queue"),
                telemetry.clone(),
            )?
            .spawn(stop.clone())?;
            Some(StopOnDrop(stop, Some(handle)))
        }
        None => None,
    };
    #[allow(unused_mut)] // filled by the ROS adapters only
    let mut extra = serde_json::Map::new();
    // The summary: what the loop did; with `--io sim` also what the simulator saw
    // (collisions, goal), never for a robot.
    #[cfg(any(feature = "dds", feature = "ros2"))]
    let as_json =
        |(s, r): (LoopSummary, RealtimeReport)| -> Result<(serde_json::Value, RealtimeReport)> {
            Ok((serde_json::to_value(&s)?, r))
        };
    let result = match io {
        RobotIoKind::Sim => reflex_sim::run_realtime(
            &config.safety,
            &package,
            &backend,
            &config.runtime,
            reflex_sim::default_scenario(seed),
            &reflex_sim::SimOptions::from_run(&options, seed),
            &port,
        )
        .and_then(|(s, r)| Ok((serde_json::to_value(&s)?, r))),
        #[cfg(feature = "dds")]
        RobotIoKind::Dds => {
            run_dds(&config, &package, &backend, &options, &port, &mut extra).and_then(as_json)
        }
        #[cfg(feature = "ros2")]
        RobotIoKind::Ros2 => run_ros2(
            ros2_node, &config, &package, &backend, &options, &port, &mut extra,
        )
        .and_then(as_json),
        // Refused before anything started (the early checks); kept for the match.
        #[cfg(not(feature = "dds"))]
        RobotIoKind::Dds => Err(anyhow::anyhow!(NO_DDS)),
        #[cfg(not(feature = "ros2"))]
        RobotIoKind::Ros2 => Err(anyhow::anyhow!(NO_ROS2)),
    };
    stop.store(true, std::sync::atomic::Ordering::Release);
    let update_report = match updater {
        Some(h) => Some(
            h.join()
                .map_err(|_| anyhow::anyhow!("the model manager thread panicked"))?,
        ),
        None => None,
    };
    let (mut value, report) = result?;
    value["lateness_p99_us"] = report.lateness_p99_us.into();
    value["watchdog_trips"] = report.watchdog_trips.into();
    value["rt_stalls"] = report.rt_stalls.into();
    value["verdict_to_wire_us"] = serde_json::to_value(report.verdict_to_wire_us)?;
    value["grants"] = report.grants.clone().into();
    value["cloud"] = report.cloud.clone().unwrap_or_default();
    value["cloud_ticks"] = report.cloud_ticks.into();
    value["updates"] = serde_json::to_value(&update_report)?;
    for (k, v) in extra {
        value[k] = v;
    }
    println!("{}", serde_json::to_string(&value)?);
    Ok(())
}

/// What `--io dds` says in a build without the `dds` feature.
const NO_DDS: &str = "--io dds: this reflex was built without the `dds` feature; build it with `cargo build --release -p reflex-cli --features dds` (see launch/README.md)";
/// What `--io ros2` says in a build without the `ros2` feature.
#[cfg(not(feature = "ros2"))]
const NO_ROS2: &str = "--io ros2: this reflex was built without the `ros2` feature; on a machine with ROS 2 Humble or Jazzy sourced, build it with `cargo build --release -p reflex-cli --features ros2` (see launch/README.md)";

/// The loop in real time with a ROS adapter as the robot (the task comes from the topics).
#[cfg(any(feature = "dds", feature = "ros2"))]
fn drive_ros(
    config: &ReflexConfig,
    package: &PolicyPackage,
    backend: &BackendConfig,
    options: &RunOptions,
    port: &std::sync::Arc<reflex_runner::swap::SwapPort>,
    robot: &mut dyn reflex_core::RobotIo,
) -> Result<(LoopSummary, RealtimeReport)> {
    reflex_runner::run::run_robot(
        &config.safety,
        package,
        &reflex_runner::run::ort_loader(backend),
        &config.runtime,
        ("ros", ""),
        options,
        port,
        robot,
    )
}

/// Per E-stop source, its heartbeat (`[safety.estop] sources.max_age_ms`, ns).
#[cfg(any(feature = "dds", feature = "ros2"))]
fn heartbeats(config: &ReflexConfig) -> [Option<u64>; reflex_safety::EstopSource::COUNT] {
    let mut out = [None; reflex_safety::EstopSource::COUNT];
    for s in &config.safety.estop.sources {
        out[s.name.index()] = s.max_age_ms.map(|ms| (ms * 1e6) as u64);
    }
    out
}

#[cfg(feature = "ros2")]
type Ros2Node = Option<r2r::Node>;
#[cfg(not(feature = "ros2"))]
type Ros2Node = ();

/// The config of `reflex run` and its robot I/O (`--io`, else `[robot] io`); under `ros2` the
/// rcl node too, whose parameters override config keys of the same dotted names.
#[cfg(feature = "ros2")]
fn load_run_config(
    path: &std::path::Path,
    io: Option<RobotIoKind>,
) -> Result<(ReflexConfig, Option<RobotIoKind>, Ros2Node)> {
    let base = ReflexConfig::load(path)?;
    let io = io.or(base.robot.map(|r| r.io));
    if io != Some(RobotIoKind::Ros2) {
        return Ok((base, io, None));
    }
    let (node, overrides) = reflex_ros::ros2::node_and_overrides(&base.ros)?;
    Ok((ReflexConfig::load_with(path, &overrides)?, io, Some(node)))
}
#[cfg(not(feature = "ros2"))]
fn load_run_config(
    path: &std::path::Path,
    io: Option<RobotIoKind>,
) -> Result<(ReflexConfig, Option<RobotIoKind>, Ros2Node)> {
    let config = ReflexConfig::load(path)?;
    let io = io.or(config.robot.map(|r| r.io));
    anyhow::ensure!(io != Some(RobotIoKind::Ros2), NO_ROS2);
    Ok((config, io, ()))
}

#[cfg(feature = "ros2")]
fn run_ros2(
    node: Ros2Node,
    config: &ReflexConfig,
    package: &PolicyPackage,
    backend: &BackendConfig,
    options: &RunOptions,
    port: &std::sync::Arc<reflex_runner::swap::SwapPort>,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(LoopSummary, RealtimeReport)> {
    use anyhow::Context as _;
    let node = node.context("internal: the ROS 2 node was not created")?;
    let beams = config.safety.lidar.as_ref().map_or(0, |l| l.max_beams);
    let mut robot = reflex_ros::ros2::Ros2Robot::new(
        node,
        &config.ros,
        beams,
        &config.safety,
        &package.manifest,
        port.status.clone(),
    )?;
    robot.state.model_digest = package.model_digest().to_string();
    robot.state.set_heartbeats(heartbeats(config));
    let result = drive_ros(config, package, backend, options, port, &mut robot);
    extra.insert("ros2".into(), serde_json::to_value(&robot.state.stats)?);
    result
}

/// `reflex run --io dds`: the loop with ROS 2 topics over DDS as the robot.
#[cfg(feature = "dds")]
fn run_dds(
    config: &ReflexConfig,
    package: &PolicyPackage,
    backend: &BackendConfig,
    options: &RunOptions,
    port: &std::sync::Arc<reflex_runner::swap::SwapPort>,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(LoopSummary, RealtimeReport)> {
    let beams = config.safety.lidar.as_ref().map_or(0, |l| l.max_beams);
    let mut robot = reflex_ros::dds::DdsRobot::new(
        &config.ros,
        beams,
        &config.safety,
        &package.manifest,
        port.status.clone(),
    )?;
    robot.state.model_digest = package.model_digest().to_string();
    robot.state.set_heartbeats(heartbeats(config));
    eprintln!(
        "reflex: ROS 2 node {} in {} on DDS domain {}",
        config.ros.node_name,
        config.ros.namespace,
        std::env::var("ROS_DOMAIN_ID").unwrap_or_else(|_| "0".into())
    );
    let result = drive_ros(config, package, backend, options, port, &mut robot);
    extra.insert("dds".into(), serde_json::to_value(&robot.state.stats)?);
    result
}
