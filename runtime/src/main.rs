//! `reflex`: the on-robot runtime's command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use reflex_models::{Accelerator, BackendConfig, OrtBackend, PolicyBackend, PolicyPackage};
use reflex_runtime::config::{ReflexConfig, RobotIo};
use reflex_runtime::{demo, inspect};

/// Reflex: a learned policy beside a real-time loop, behind a safety layer that can always veto.
#[derive(Debug, Parser)]
#[command(name = "reflex", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Drive the built-in simulator's robot with an adversarial policy through a scripted day
    /// (pedestrian, E-stop, frozen lidar, end wall) and print the safety layer's verdicts.
    SafetyDemo {
        /// The Reflex TOML config; its [safety] section is what gets enforced.
        #[arg(long, default_value = "launch/reflex.example.toml")]
        config: PathBuf,
        /// Simulated seconds to run.
        #[arg(long, default_value_t = 14.0)]
        seconds: f64,
        /// Print a line at least this often (ms of simulated time), and at every change.
        #[arg(long, default_value_t = 250)]
        print_every_ms: u64,
        /// Seed of the lidar noise.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Print everything a policy package declares: inputs, outputs, action space and units,
    /// normalization, control rate and horizon, safety envelope, targets, golden pairs.
    Inspect {
        /// The package directory (holding policy.json).
        path: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Pack a policy package directory into an OCI 1.1 artifact: `--out oci-layout:PATH:TAG`.
    Pack {
        /// The package directory (holding policy.json).
        dir: PathBuf,
        /// Destination, `oci-layout:PATH:TAG`.
        #[arg(long)]
        out: String,
        /// Share of the fleet (0-100, by robot-id hash) that takes this version, annotated on
        /// the index (`vnd.reflex.rollout.percent`; absent = everyone). Sign after packing.
        #[arg(long)]
        rollout_percent: Option<f64>,
    },
    /// Push an artifact from `oci-layout:PATH:TAG` to a registry `oci://host[:port]/repo:tag`
    /// (with its signature referrer). HTTPS, or plain HTTP toward loopback only.
    /// Credentials: REFLEX_REGISTRY_USERNAME/PASSWORD or REFLEX_REGISTRY_TOKEN.
    Push {
        source: String,
        destination: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull a policy artifact (`oci-layout:PATH:TAG` or `oci://host[:port]/repo:tag`) into the
    /// local store: signature checked
    /// against --trusted-keys, the artifact for this host chosen, every digest checked, the
    /// package materialized atomically. Prints the package directory.
    Pull {
        reference: String,
        /// The local store directory.
        #[arg(long, default_value = "/var/lib/reflex/store")]
        store: PathBuf,
        /// Directory of trusted public keys (`*.pub`).
        #[arg(long)]
        trusted_keys: Option<PathBuf>,
        /// Accept an unsigned artifact (development only; says so).
        #[arg(long)]
        allow_unsigned: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Make an ed25519 key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign the artifact REF (`oci-layout:PATH:TAG`, or `oci://host/repo:tag` in place in the
    /// registry) with a secret key from `reflex keygen`.
    Sign {
        reference: String,
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Verify a policy package. A directory: schema, every file's sha256, the model's real
    /// inputs and outputs against policy.json, and the golden pairs within tolerance.
    /// `oci-layout:PATH:TAG` or `oci://…`: every blob's digest (for a registry: of this host's
    /// artifact) and a signature from a key in --trusted-keys.
    Verify {
        /// The package directory (holding policy.json), or `oci-layout:PATH:TAG`.
        path: PathBuf,
        /// Directory of trusted public keys (`*.pub`), for artifact references.
        #[arg(long)]
        trusted_keys: Option<PathBuf>,
        /// libonnxruntime.so.1.31.1 to load (default: $ORT_DYLIB_PATH).
        #[arg(long)]
        ort_library: Option<PathBuf>,
        /// Execution provider: cpu, cuda or tensorrt.
        #[arg(long, default_value = "cpu")]
        accelerator: String,
        /// Fall back to the CPU (and say so) when the accelerator is missing.
        #[arg(long)]
        allow_cpu_fallback: bool,
        /// Take `[models]` (accelerator, engine cache, precision) from this robot config: on a
        /// Jetson with `accelerator = "tensorrt"` this builds the TensorRT engine into the same
        /// cache `reflex run` loads it from (engine warm-up).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// What this host offers Reflex: ONNX Runtime, GPUs (CUDA driver, SM, memory).
    Preflight {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// libonnxruntime.so.1.31.1 to try (default: $ORT_DYLIB_PATH).
        #[arg(long)]
        ort_library: Option<PathBuf>,
        /// Read the Jetson files (/etc/nv_tegra_release, /proc/device-tree/model, libnvinfer)
        /// and tools (nvpmodel, jetson_clocks) under this directory instead of / (a mounted
        /// image, or captured outputs in tests).
        #[arg(long, default_value = "/")]
        jetson_root: PathBuf,
    },
    /// Closed loop on the built-in simulator: the demo policy (ONNX Runtime), the action-chunk
    /// queue and the safety layer drive a robot to the goal the instruction names, past a
    /// pedestrian. Lockstep (deterministic, faster than real time) by default; `--realtime` runs
    /// the production thread topology (RT thread, inference worker, supervisor) on the real clock.
    Sim {
        /// The Reflex TOML config.
        #[arg(long, default_value = "launch/reflex.example.toml")]
        config: PathBuf,
        /// The policy package.
        #[arg(long, default_value = "models/demo/reflex-demo-vla")]
        policy: PathBuf,
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
    },
    /// Uploads the queued flight recordings of `[recorder]` to `[recorder.upload]` once, oldest
    /// first (what `reflex run` does continuously), and prints what it did as JSON.
    Upload {
        #[arg(long)]
        config: PathBuf,
    },
    /// Re-runs a flight recording's inputs through the safety layer (from the recording's own
    /// config and state) and reports whether every verdict is bit-identical. Exit 1 if not.
    Replay {
        file: PathBuf,
        /// The policy package of the recording (its model digest must match): the recorded
        /// observations are re-run through it and each chunk compared bit for bit.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// libonnxruntime.so.1.31.1 (default: $ORT_DYLIB_PATH).
        #[arg(long)]
        ort_library: Option<PathBuf>,
    },
    /// The runtime: the policy the store's activation record names (first boot: installed from
    /// `[updates] channel`), the RT loop, and the model manager following the channel (signed
    /// packages only, transactional hot-swap with a health window and automatic rollback).
    /// The robot I/O must be named (`--io` or `[robot] io`): `reflex run` never falls back to
    /// the simulator. Prints a JSON summary.
    Run {
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
    },
    /// The activation record of a store (after crash recovery), as JSON.
    Status {
        #[arg(long, default_value = "/var/lib/reflex/store")]
        store: PathBuf,
    },
    /// Validate a config file and print the safety config hash.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
        /// Override a key: `--set ros.topics.scan=/front/scan` (a TOML value; a bare word is a
        /// string). ROS parameters of the same dotted names do the same under the ROS adapters.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

/// How to reach a registry (credentials come from the environment: REFLEX_REGISTRY_USERNAME +
/// REFLEX_REGISTRY_PASSWORD, or REFLEX_REGISTRY_TOKEN).
#[derive(clap::Args, Debug)]
struct RegistryArgs {
    /// Extra CA certificate (PEM) for a registry with a private CA.
    #[arg(long)]
    registry_ca: Option<PathBuf>,
    /// Plain HTTP toward a non-loopback registry (loopback is always plain HTTP).
    #[arg(long)]
    plain_http: bool,
}

impl RegistryArgs {
    fn options(&self) -> Result<reflex_models::registry::RegistryOptions> {
        if self.plain_http {
            eprintln!("reflex: warning: plain HTTP to the registry (--plain-http): no TLS");
        }
        Ok(reflex_models::registry::RegistryOptions {
            ca_file: self.registry_ca.clone(),
            plain_http: self.plain_http,
            ..Default::default()
        }
        .with_env_auth()?)
    }
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("reflex: error: {err:#}");
        std::process::exit(1);
    }
}

/// `oci-layout:PATH:TAG` → (PATH, TAG).
/// The loop in real time with a ROS adapter as the robot (the task comes from the topics).
#[cfg(any(feature = "dds", feature = "ros2"))]
fn drive_ros(
    config: &ReflexConfig,
    package: &PolicyPackage,
    backend: &BackendConfig,
    options: &reflex_runtime::simrun::SimOptions,
    port: &std::sync::Arc<reflex_runtime::realtime::SwapPort>,
    robot: &mut dyn reflex_runtime::realtime::RobotIo,
) -> Result<(
    reflex_runtime::simrun::SimSummary,
    reflex_runtime::realtime::RealtimeReport,
)> {
    reflex_runtime::realtime::run_robot(
        &config.safety,
        package,
        backend,
        &config.runtime,
        ("ros", ""),
        options,
        port,
        robot,
    )
}

/// `[recorder]` and its `[recorder.upload]`, or an error naming what is missing.
fn upload_config(
    config: &ReflexConfig,
) -> Result<(
    &reflex_runtime::recorder::RecorderConfig,
    &reflex_runtime::upload::UploadConfig,
)> {
    let rec = config.recorder.as_ref().ok_or_else(|| {
        anyhow::anyhow!("the config has no [recorder] section (dir, …); nothing to upload")
    })?;
    let up = rec.upload.as_ref().ok_or_else(|| {
        anyhow::anyhow!("the config has no [recorder.upload] section (bucket, endpoint, …)")
    })?;
    Ok((rec, up))
}

/// Stops a background thread when dropped.
struct StopOnDrop(
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Option<std::thread::JoinHandle<()>>,
);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

/// Writes a pending flight recording and stops the recorder thread when the run ends.
struct FinishRecorder(Option<std::sync::Arc<reflex_runtime::recorder::Recorder>>);

impl Drop for FinishRecorder {
    fn drop(&mut self) {
        if let Some(r) = &self.0
            && let Err(e) = r.finish()
        {
            eprintln!("reflex: flight recorder: {e:#}");
        }
    }
}

/// The flight recorder of `[recorder]` (None: not recording).
fn start_recorder(
    config: Option<reflex_runtime::recorder::RecorderConfig>,
    package: &PolicyPackage,
    period_ms: f64,
    max_beams: usize,
    telemetry: &std::sync::Arc<reflex_runtime::telemetry::Telemetry>,
) -> Result<Option<std::sync::Arc<reflex_runtime::recorder::Recorder>>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let meta = reflex_runtime::recorder::RecordingMeta {
        robot_id: config.robot_id.clone(),
        model_name: package.manifest.name.clone(),
        model_version: package.manifest.version.clone(),
        model_digest: package.model_digest().to_string(),
        wall_minus_mono_ns: i128::from(reflex_runtime::port::wall_clock_ns())
            - i128::from(reflex_runtime::rt::now_ns()),
        ..Default::default()
    };
    eprintln!(
        "reflex: flight recorder: {} (window {} s + {} s, triggers {})",
        config.dir.join("queue").display(),
        config.window_s,
        config.post_s,
        config.triggers.join(",")
    );
    let recorder = reflex_runtime::recorder::Recorder::start(
        config,
        meta,
        period_ms,
        max_beams,
        telemetry.clone(),
    )?;
    // SIGUSR1 = operator mark (trigger `operator_mark`).
    reflex_runtime::rt::install_mark_signal();
    let weak = std::sync::Arc::downgrade(&recorder);
    std::thread::Builder::new()
        .name("reflex-mark".into())
        .spawn(move || {
            while let Some(r) = weak.upgrade() {
                if reflex_runtime::rt::take_mark() {
                    eprintln!("reflex: operator mark (SIGUSR1)");
                    r.mark();
                }
                drop(r);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })?;
    Ok(Some(recorder))
}

/// The metrics shared by the loop, worker and model manager, and the endpoint serving them
/// (`--metrics-bind` over `[telemetry] metrics_bind`; none when neither is set).
fn start_metrics(
    config: &ReflexConfig,
    cli_bind: Option<String>,
) -> Result<(
    std::sync::Arc<reflex_runtime::telemetry::Telemetry>,
    Option<reflex_runtime::telemetry::MetricsServer>,
)> {
    let mut t = config.telemetry.clone();
    if cli_bind.is_some() {
        t.metrics_bind = cli_bind;
    }
    let telemetry = std::sync::Arc::new(reflex_runtime::telemetry::Telemetry::default());
    let server = match t.bind_addr()? {
        Some(addr) => {
            let server = reflex_runtime::telemetry::MetricsServer::start(addr, telemetry.clone())?;
            eprintln!("reflex: metrics at http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };
    Ok((telemetry, server))
}

/// `[safety.arm] joints` names, in the safety layer's order.
#[cfg(any(feature = "dds", feature = "ros2"))]
fn joint_names(config: &ReflexConfig) -> Vec<String> {
    config
        .safety
        .arm
        .as_ref()
        .map(|a| a.joints.iter().map(|j| j.name.clone()).collect())
        .unwrap_or_default()
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
    io: Option<RobotIo>,
) -> Result<(ReflexConfig, Option<RobotIo>, Ros2Node)> {
    let base = ReflexConfig::load(path)?;
    let io = io.or(base.robot.map(|r| r.io));
    if io != Some(RobotIo::Ros2) {
        return Ok((base, io, None));
    }
    let (node, overrides) = reflex_runtime::ros2::node_and_overrides(&base.ros)?;
    Ok((ReflexConfig::load_with(path, &overrides)?, io, Some(node)))
}
#[cfg(not(feature = "ros2"))]
fn load_run_config(
    path: &std::path::Path,
    io: Option<RobotIo>,
) -> Result<(ReflexConfig, Option<RobotIo>, Ros2Node)> {
    let config = ReflexConfig::load(path)?;
    let io = io.or(config.robot.map(|r| r.io));
    anyhow::ensure!(
        io != Some(RobotIo::Ros2),
        "--io ros2: this reflex was built without the `ros2` feature; on a machine with ROS 2 Humble or Jazzy sourced, build it with `cargo build --release --features reflex-runtime/ros2` (see launch/README.md)"
    );
    Ok((config, io, ()))
}
#[cfg(feature = "ros2")]
fn run_ros2(
    node: Ros2Node,
    config: &ReflexConfig,
    package: &PolicyPackage,
    backend: &BackendConfig,
    options: &reflex_runtime::simrun::SimOptions,
    port: &std::sync::Arc<reflex_runtime::realtime::SwapPort>,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(
    reflex_runtime::simrun::SimSummary,
    reflex_runtime::realtime::RealtimeReport,
)> {
    let node = node.context("internal: the ROS 2 node was not created")?;
    let beams = config.safety.lidar.as_ref().map_or(0, |l| l.max_beams);
    let mut robot = reflex_runtime::ros2::Ros2Robot::new(
        node,
        &config.ros,
        beams,
        joint_names(config),
        &package.manifest,
        port.clone(),
    )?;
    robot.state.model_digest = package.model_digest().to_string();
    let result = drive_ros(config, package, backend, options, port, &mut robot);
    extra.insert("ros2".into(), serde_json::to_value(&robot.state.stats)?);
    result
}

#[cfg(not(feature = "ros2"))]
#[allow(clippy::too_many_arguments)]
fn run_ros2(
    _: Ros2Node,
    _: &ReflexConfig,
    _: &PolicyPackage,
    _: &BackendConfig,
    _: &reflex_runtime::simrun::SimOptions,
    _: &std::sync::Arc<reflex_runtime::realtime::SwapPort>,
    _: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(
    reflex_runtime::simrun::SimSummary,
    reflex_runtime::realtime::RealtimeReport,
)> {
    anyhow::bail!(
        "--io ros2: this reflex was built without the `ros2` feature; on a machine with ROS 2 Humble or Jazzy sourced, build it with `cargo build --release --features reflex-runtime/ros2` (see launch/README.md)"
    )
}

/// `reflex run --io dds`: the loop with ROS 2 topics over DDS as the robot.
#[cfg(feature = "dds")]
fn run_dds(
    config: &ReflexConfig,
    package: &PolicyPackage,
    backend: &BackendConfig,
    options: &reflex_runtime::simrun::SimOptions,
    port: &std::sync::Arc<reflex_runtime::realtime::SwapPort>,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(
    reflex_runtime::simrun::SimSummary,
    reflex_runtime::realtime::RealtimeReport,
)> {
    let beams = config.safety.lidar.as_ref().map_or(0, |l| l.max_beams);
    let mut robot = reflex_runtime::dds::DdsRobot::new(
        &config.ros,
        beams,
        joint_names(config),
        &package.manifest,
        port.clone(),
    )?;
    robot.state.model_digest = package.model_digest().to_string();
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

#[cfg(not(feature = "dds"))]
fn run_dds(
    _: &ReflexConfig,
    _: &PolicyPackage,
    _: &BackendConfig,
    _: &reflex_runtime::simrun::SimOptions,
    _: &std::sync::Arc<reflex_runtime::realtime::SwapPort>,
    _: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(
    reflex_runtime::simrun::SimSummary,
    reflex_runtime::realtime::RealtimeReport,
)> {
    anyhow::bail!(
        "--io dds: this reflex was built without the `dds` feature; build it with `cargo build --release --features reflex-runtime/dds`"
    )
}

fn print_pulled(pulled: &reflex_models::store::Pulled) {
    println!(
        "pulled {} {} ({} target, manifest {}) into {}",
        pulled.package.manifest.name,
        pulled.package.manifest.version,
        pulled.target,
        pulled.manifest_digest,
        pulled.package.dir.display()
    );
}

fn layout_ref(reference: &str) -> Result<(PathBuf, String)> {
    let rest = reference.strip_prefix("oci-layout:").with_context(|| {
        format!("{reference:?}: expected oci-layout:PATH:TAG or oci://host[:port]/repository:tag")
    })?;
    let (path, tag) = rest
        .rsplit_once(':')
        .filter(|(p, t)| !p.is_empty() && !t.is_empty())
        .with_context(|| format!("{reference:?}: expected oci-layout:PATH:TAG"))?;
    Ok((PathBuf::from(path), tag.to_string()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::SafetyDemo {
            config,
            seconds,
            print_every_ms,
            seed,
        } => {
            anyhow::ensure!(
                seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0,
                "--seconds must be in (0, 3600], got {seconds}"
            );
            let config = ReflexConfig::load(&config)?;
            let summary = demo::run(
                &config.safety,
                seconds,
                print_every_ms,
                seed,
                &mut std::io::stdout().lock(),
            )?;
            anyhow::ensure!(
                summary.collisions == 0,
                "the simulated robot collided {} times: the safety config does not protect this robot",
                summary.collisions
            );
            Ok(())
        }
        Cmd::Inspect { path, json } => {
            let package = PolicyPackage::open(&path)?;
            if json {
                let mut value = serde_json::to_value(&package.manifest)?;
                value["package_dir"] = path.display().to_string().into();
                value["horizon_steps"] = package.manifest.horizon_steps().into();
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", inspect::describe(&package));
            }
            Ok(())
        }
        Cmd::Pack {
            dir,
            out,
            rollout_percent,
        } => {
            let (root, tag) = layout_ref(&out)?;
            let package = PolicyPackage::open(&dir)?;
            let layout = reflex_models::oci::Layout::open_or_create(&root)?;
            let mut desc = reflex_models::oci::pack(&package, &layout, &tag)?;
            if let Some(percent) = rollout_percent {
                desc = reflex_models::oci::set_rollout(&layout, &tag, percent)?;
                println!("rollout: {percent}% of the fleet (by robot-id hash)");
            }
            println!(
                "packed {} {} as {out} ({})",
                package.manifest.name, package.manifest.version, desc.digest
            );
            Ok(())
        }
        Cmd::Push {
            source,
            destination,
            registry,
        } => {
            let (root, tag) = layout_ref(&source)?;
            let layout = reflex_models::oci::Layout::open(&root)?;
            let digest =
                reflex_models::registry::push(&layout, &tag, &destination, &registry.options()?)?;
            println!("pushed {source} to {destination} ({digest})");
            Ok(())
        }
        Cmd::Pull {
            reference,
            store,
            trusted_keys,
            allow_unsigned,
            registry,
        } => {
            use reflex_models::registry::Trust;
            let trust = match (&trusted_keys, allow_unsigned) {
                (Some(keys), _) => Trust::Keys(keys),
                (None, true) => {
                    eprintln!(
                        "reflex: warning: pulling {reference} WITHOUT a signature check (--allow-unsigned)"
                    );
                    Trust::AllowUnsigned
                }
                (None, false) => anyhow::bail!(
                    "pulling {reference} needs --trusted-keys DIR (or --allow-unsigned for development)"
                ),
            };
            let store = reflex_models::store::Store::open(&store)?;
            if reference.starts_with("oci://") {
                let t0 = std::time::Instant::now();
                let report = reflex_models::registry::pull_to_store(
                    &reference,
                    &store,
                    None,
                    trust,
                    &registry.options()?,
                )?;
                let secs = t0.elapsed().as_secs_f64();
                if let Some(key) = &report.key_id {
                    println!("signature: ok, key {key}");
                }
                print_pulled(&report.pulled);
                println!(
                    "{} blobs, {} bytes received{} in {secs:.2} s",
                    report.blobs_fetched,
                    report.bytes_downloaded,
                    if report.bytes_resumed > 0 {
                        format!(
                            ", {} bytes resumed from an interrupted pull",
                            report.bytes_resumed
                        )
                    } else {
                        String::new()
                    }
                );
                return Ok(());
            }
            let (root, tag) = layout_ref(&reference)?;
            let layout = reflex_models::oci::Layout::open(&root)?;
            if let Trust::Keys(keys) = trust {
                let ok = reflex_models::oci::verify_signed(&layout, &tag, keys)?;
                println!("signature: ok, key {}", ok.key_id);
            }
            print_pulled(&store.pull_layout(&layout, &tag, None)?);
            Ok(())
        }
        Cmd::Keygen { out } => {
            let secret = out.with_extension("key");
            let public = out.with_extension("pub");
            anyhow::ensure!(
                !secret.exists() && !public.exists(),
                "{} or {} exists already; choose another --out (keys are never overwritten)",
                secret.display(),
                public.display()
            );
            let (s, p) = reflex_models::oci::keygen()?;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&secret)
                .with_context(|| format!("cannot create {}", secret.display()))?;
            std::io::Write::write_all(&mut f, s.as_bytes())?;
            std::fs::write(&public, &p)
                .with_context(|| format!("cannot write {}", public.display()))?;
            println!(
                "wrote {} (secret, 0600) and {}",
                secret.display(),
                public.display()
            );
            Ok(())
        }
        Cmd::Sign {
            reference,
            key,
            registry,
        } => {
            if reference.starts_with("oci://") {
                let (digest, sig) =
                    reflex_models::registry::sign_remote(&reference, &key, &registry.options()?)?;
                println!("signed {reference} ({digest}): signature {sig}");
                return Ok(());
            }
            let (root, tag) = layout_ref(&reference)?;
            let layout = reflex_models::oci::Layout::open(&root)?;
            let desc = reflex_models::oci::sign(&layout, &tag, &key)?;
            println!("signed {reference}: signature {}", desc.digest);
            Ok(())
        }
        Cmd::Verify {
            path,
            trusted_keys,
            ort_library: _,
            accelerator: _,
            allow_cpu_fallback: _,
            config: _,
            registry,
        } if path.to_string_lossy().starts_with("oci://")
            || path.to_string_lossy().starts_with("oci-layout:") =>
        {
            let reference = path.to_string_lossy().to_string();
            let trusted = trusted_keys.context(
                "verifying an artifact needs --trusted-keys DIR (public keys from `reflex keygen`)",
            )?;
            if reference.starts_with("oci://") {
                // A registry artifact: pulled into a scratch store (signature first, every
                // digest checked), then removed.
                let scratch =
                    std::env::temp_dir().join(format!("reflex-verify-{}", std::process::id()));
                let store = reflex_models::store::Store::open(&scratch)?;
                let result = reflex_models::registry::pull_to_store(
                    &reference,
                    &store,
                    None,
                    reflex_models::registry::Trust::Keys(&trusted),
                    &registry.options()?,
                );
                let _ = std::fs::remove_dir_all(&scratch);
                let report = result?;
                println!(
                    "verified {reference}: {} blobs match their digests, signed by key {} ({})",
                    report.blobs_fetched,
                    report.key_id.unwrap_or_default(),
                    report.pulled.index_digest
                );
                return Ok(());
            }
            let (root, tag) = layout_ref(&reference)?;
            let layout = reflex_models::oci::Layout::open(&root)?;
            let ok = reflex_models::oci::verify_signed(&layout, &tag, &trusted)?;
            println!(
                "verified {reference}: {} blobs match their digests, signed by key {} ({})",
                ok.blobs_checked, ok.key_id, ok.index_digest
            );
            Ok(())
        }
        Cmd::Verify {
            path,
            trusted_keys: _,
            ort_library,
            accelerator,
            allow_cpu_fallback,
            config,
            registry: _,
        } => {
            let accelerator = match accelerator.as_str() {
                "cpu" => Accelerator::Cpu,
                "cuda" => Accelerator::Cuda,
                "tensorrt" => Accelerator::Tensorrt,
                other => anyhow::bail!("--accelerator {other:?}: use cpu, cuda or tensorrt"),
            };
            let package = PolicyPackage::open(&path)?;
            println!(
                "schema: ok ({} {})",
                package.manifest.name, package.manifest.version
            );
            let files = package.verify_files()?;
            println!("files: {files} sha256 ok");
            let config = match config {
                Some(path) => {
                    let mut models = host_backend(ReflexConfig::load(&path)?.models);
                    if ort_library.is_some() {
                        models.ort_library = ort_library;
                    }
                    models.allow_cpu_fallback |= allow_cpu_fallback;
                    models
                }
                None => BackendConfig {
                    ort_library,
                    accelerator,
                    allow_cpu_fallback,
                    ..BackendConfig::default()
                },
            };
            if config.accelerator == Accelerator::Tensorrt {
                println!(
                    "tensorrt: engine cache {} (the first load builds the engine: minutes on a Jetson)",
                    config.engine_cache_dir.display()
                );
            }
            let mut backend = OrtBackend::load(&package, &config)?;
            let info = backend.describe();
            if info.provider.starts_with("cpu (fallback") {
                eprintln!("reflex: warning: {}", info.provider);
            }
            println!(
                "model: {} loaded on {} (sha256:{}), inputs and output match policy.json",
                info.model_file, info.provider, info.model_digest
            );
            let report = backend.check_golden(&package.golden_pairs()?)?;
            println!(
                "golden: {} pairs within tolerance (max abs error {:.3e})",
                report.pairs, report.max_abs_error
            );
            println!("verified: {}", path.display());
            Ok(())
        }
        Cmd::Preflight {
            json,
            ort_library,
            jetson_root,
        } => {
            let ort = match reflex_models::load_onnx_runtime(ort_library.as_deref()) {
                Ok(path) => Ok(path.display().to_string()),
                Err(e) => Err(e.to_string()),
            };
            let ort_build = match &ort {
                Ok(_) => reflex_models::ort_build().ok(),
                Err(_) => None,
            };
            let gpus = reflex_models::discover_gpus();
            let host = reflex_runtime::rt::host_report();
            let advice = host.advice();
            let jetson = reflex_runtime::jetson::probe(&jetson_root);
            let jetson_advice = jetson.advice(&reflex_runtime::jetson::GpuSide {
                cuda_built: reflex_models::CUDA_BUILT,
                gpu_found: matches!(&gpus, reflex_models::GpuDiscovery::Devices { devices } if !devices.is_empty()),
                ort_providers: ort_build.as_ref().map(|(_, p)| p.as_slice()),
            });
            if json {
                let value = serde_json::json!({
                    "realtime": {
                        "cpus": host.cpus,
                        "sched_fifo": match &host.fifo_allowed { Ok(()) => "allowed".to_string(), Err(e) => format!("refused: {e}") },
                        "rtprio_limit": [host.rtprio_limit.0, host.rtprio_limit.1],
                        "memlock_limit_bytes": host.memlock_limit_bytes,
                        "isolated_cpus": host.isolated_cpus,
                        "preempt_rt": host.preempt_rt,
                        "kernel": host.kernel,
                        "advice": advice,
                    },
                    "onnxruntime": match &ort {
                        Ok(path) => serde_json::json!({
                            "status": "loaded",
                            "path": path,
                            "version": ort_version(std::path::Path::new(path)),
                            "build": ort_build.as_ref().map(|(b, _)| b),
                            "providers": ort_build.as_ref().map(|(_, p)| p),
                        }),
                        Err(e) => serde_json::json!({"status": "unavailable", "error": e}),
                    },
                    "gpu": gpus,
                    "cuda_built": reflex_models::CUDA_BUILT,
                    "jetson": jetson,
                    "jetson_advice": jetson_advice,
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!(
                    "reflex preflight ({} {})",
                    std::env::consts::ARCH,
                    std::env::consts::OS
                );
                match &ort {
                    Ok(path) => println!(
                        "onnxruntime: loaded {path} (version {})",
                        ort_version(std::path::Path::new(path)).unwrap_or_else(|| "unknown".into())
                    ),
                    Err(e) => println!("onnxruntime: unavailable: {e}"),
                }
                if let Some((build, providers)) = &ort_build {
                    println!("onnxruntime build: {}", build.trim());
                    println!("onnxruntime providers: {}", providers.join(", "));
                }
                print_jetson(&jetson);
                match &gpus {
                    reflex_models::GpuDiscovery::NotBuilt => println!(
                        "gpu: not checked: this reflex was built without CUDA (on a Jetson: --features jetpack6 for Orin, jetpack7 for Thor)"
                    ),
                    reflex_models::GpuDiscovery::NoDriver => println!(
                        "gpu: none: no CUDA driver (libcuda.so) on this host; policies run on the CPU"
                    ),
                    reflex_models::GpuDiscovery::DriverError { message } => {
                        println!("gpu: the CUDA driver answered with an error: {message}")
                    }
                    reflex_models::GpuDiscovery::Devices { devices } => {
                        for d in devices {
                            println!(
                                "gpu {}: {} (SM {}, {:.1} GiB)",
                                d.ordinal,
                                d.name,
                                d.sm,
                                d.total_mem_bytes as f64 / (1u64 << 30) as f64
                            );
                        }
                    }
                }
                println!(
                    "real-time: {} CPUs, SCHED_FIFO {}, RLIMIT_RTPRIO {:?}, memlock {}, isolated CPUs [{}], PREEMPT_RT {}, kernel {}",
                    host.cpus,
                    match &host.fifo_allowed {
                        Ok(()) => "allowed".to_string(),
                        Err(e) => format!("refused ({e})"),
                    },
                    host.rtprio_limit,
                    if host.memlock_limit_bytes == u64::MAX {
                        "unlimited".to_string()
                    } else {
                        format!("{} KiB", host.memlock_limit_bytes / 1024)
                    },
                    host.isolated_cpus,
                    if host.preempt_rt { "yes" } else { "no" },
                    host.kernel
                );
                for line in jetson_advice.iter().chain(&advice) {
                    println!("  to do: {line}");
                }
            }
            Ok(())
        }
        Cmd::Upload { config } => {
            let config = ReflexConfig::load(&config)?;
            let (rec, up) = upload_config(&config)?;
            let uploader = reflex_runtime::upload::Uploader::new(
                up,
                &rec.robot_id,
                &rec.dir.join("queue"),
                Default::default(),
            )?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(uploader.drain())?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Cmd::Replay {
            file,
            policy,
            ort_library,
        } => {
            let package = policy.as_deref().map(PolicyPackage::open).transpose()?;
            let backend = reflex_models::BackendConfig {
                ort_library,
                ..Default::default()
            };
            let report =
                reflex_runtime::replay::replay(&file, package.as_ref().map(|p| (p, &backend)))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.identical {
                eprintln!(
                    "reflex replay: {} of {} ticks differ; first: {}",
                    report.mismatches,
                    report.ticks,
                    report.first_mismatch.as_deref().unwrap_or("")
                );
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Status { store } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&reflex_runtime::updates::status(&store)?)?
            );
            Ok(())
        }
        Cmd::Run {
            config,
            duration,
            seed,
            ort_library,
            policy,
            io,
            ros_args,
            metrics_bind,
        } => {
            use reflex_runtime::updates;
            // The robot I/O is explicit: --io, else [robot] io. A robot never silently drives a
            // simulated plant (the first version's systemd unit did).
            let io = match &io {
                Some(name) => Some(RobotIo::parse(name)?),
                None => None,
            };
            let path = config;
            // rcl reads --ros-args itself (the r2r adapter); clap only lets them through.
            anyhow::ensure!(
                ros_args.is_none() || io == Some(RobotIo::Ros2),
                "--ros-args (from ROS 2 launch) are read by the r2r adapter: use `--io ros2` in a build with `--features ros2` and ROS 2 sourced; the `dds` adapter takes its node name, namespace and topics from [ros] in the config"
            );
            let duration = duration.unwrap_or(1e7);
            anyhow::ensure!(
                duration.is_finite() && duration > 0.0,
                "--duration must be a positive number of seconds, got {duration}"
            );
            // Under ROS 2 (r2r) the node's parameters override config keys of the same names.
            let (config, io, ros2_node) = load_run_config(&path, io)?;
            let io = io.ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no robot I/O: pass --io dds|ros2|sim or set [robot] io = \"dds\" (or \"ros2\") in the config; `reflex run` never drives the simulator unless told to",
                    path.display()
                )
            })?;
            if io == RobotIo::Sim {
                eprintln!("reflex: driving the built-in simulator (--io sim), not a robot");
            }
            // Before anything starts: an adapter this build lacks is refused now.
            anyhow::ensure!(
                io != RobotIo::Dds || cfg!(feature = "dds"),
                "--io dds: this reflex was built without the `dds` feature; build it with `cargo build --release --features reflex-runtime/dds`"
            );
            // Before any thread starts: all but the RT thread keep off its CPU (inherited).
            if let Some(cpu) = config.runtime.cpu
                && let Err(e) = reflex_runtime::rt::keep_off_cpu(cpu)
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
                let port = std::sync::Arc::new(reflex_runtime::realtime::SwapPort {
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
                    None => {
                        updates::first_install(&updates_config, &store, &mut activation, &backend)?
                    }
                };
                let package = PolicyPackage::open(&active.dir)?;
                package.verify_files()?;
                eprintln!(
                    "reflex: running {} {} ({})",
                    active.name, active.version, active.index_digest
                );
                let port = std::sync::Arc::new(reflex_runtime::realtime::SwapPort {
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
            telemetry.set_model(&package, 0);
            let beams = config.safety.lidar.as_ref().map_or(0, |l| l.max_beams);
            let recorder = start_recorder(
                config.recorder.clone(),
                &package,
                config.runtime.period_ms,
                beams,
                &telemetry,
            )?;
            let options = reflex_runtime::simrun::SimOptions {
                duration_s: duration,
                seed,
                telemetry: Some(telemetry.clone()),
                recorder: recorder.clone(),
                cloud: config.cloud.clone(),
                chunks: config.chunks,
                arbitration: config.arbitration.clone(),
                ..Default::default()
            };
            let _finish = FinishRecorder(recorder);
            let _uploader = match config
                .recorder
                .as_ref()
                .and_then(|r| r.upload.as_ref().map(|u| (r, u)))
            {
                Some((rec, up)) => {
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let handle = reflex_runtime::upload::Uploader::new(
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
            let mut extra = serde_json::Map::new();
            let result = match io {
                RobotIo::Sim => reflex_runtime::realtime::run_realtime(
                    &config.safety,
                    &package,
                    &backend,
                    &config.runtime,
                    reflex_runtime::simrun::default_scenario(seed),
                    &options,
                    &port,
                ),
                RobotIo::Dds => run_dds(&config, &package, &backend, &options, &port, &mut extra),
                RobotIo::Ros2 => run_ros2(
                    ros2_node, &config, &package, &backend, &options, &port, &mut extra,
                ),
            };
            stop.store(true, std::sync::atomic::Ordering::Release);
            let update_report = match updater {
                Some(h) => Some(
                    h.join()
                        .map_err(|_| anyhow::anyhow!("the model manager thread panicked"))?,
                ),
                None => None,
            };
            let (summary, report) = result?;
            let mut value = serde_json::to_value(&summary)?;
            value["lateness_p99_us"] = report.lateness_p99_us.into();
            value["watchdog_trips"] = report.watchdog_trips.into();
            value["cloud"] = report.cloud.clone().unwrap_or_default();
            value["cloud_ticks"] = report.cloud_ticks.into();
            value["updates"] = serde_json::to_value(&update_report)?;
            for (k, v) in extra {
                value[k] = v;
            }
            println!("{}", serde_json::to_string(&value)?);
            Ok(())
        }
        Cmd::Sim {
            config,
            policy,
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
        } => {
            anyhow::ensure!(
                duration.is_finite() && duration > 0.0 && duration <= 3600.0,
                "--duration must be in (0, 3600] s, got {duration}"
            );
            anyhow::ensure!(
                period_ms.is_finite() && (0.5..=100.0).contains(&period_ms),
                "--period-ms must be in [0.5, 100], got {period_ms}"
            );
            let config = ReflexConfig::load(&config)?;
            let package = PolicyPackage::open(&policy)?;
            package.verify_files()?;
            let mut backend = host_backend(config.models.clone());
            if ort_library.is_some() {
                backend.ort_library = ort_library;
            }
            let (telemetry, _metrics) = start_metrics(&config, metrics_bind)?;
            telemetry.set_model(&package, 0);
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
                cloud.is_none() || realtime,
                "a cloud policy link runs on the real clock: add --realtime"
            );
            let options = reflex_runtime::simrun::SimOptions {
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
                "--scenario {scenario:?}: the built-in scenario is `default`; scenario files arrive with the HIL scenario suite"
            );
            let scenario = reflex_runtime::simrun::default_scenario(seed);
            anyhow::ensure!(
                !(realtime && report.is_some()),
                "--report records lockstep runs; drop --realtime or --report"
            );
            if realtime {
                let mut rt_config = config.runtime.clone();
                rt_config.period_ms = period_ms;
                let (summary, report) = reflex_runtime::realtime::run_realtime(
                    &config.safety,
                    &package,
                    &backend,
                    &rt_config,
                    scenario,
                    &options,
                    &std::sync::Arc::new(reflex_runtime::realtime::SwapPort {
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
            let summary = reflex_runtime::simrun::run_lockstep(
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
                reflex_runtime::report::write(dir, &world, &ticks)?;
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
        Cmd::CheckConfig { config, overrides } => {
            let path = config.display().to_string();
            let overrides = overrides
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?;
            let config = ReflexConfig::load_with(&config, &overrides)?;
            let safety = reflex_safety::Safety::new(config.safety)?;
            println!("{path}: ok, safety config {}", safety.config_hash_hex());
            Ok(())
        }
    }
}

/// The Jetson part of `reflex preflight`'s text output.
fn print_jetson(j: &reflex_runtime::jetson::JetsonReport) {
    if !j.is_jetson {
        println!(
            "jetson: not a Jetson (no {}); the L4T, power mode and clock checks apply on Jetson modules only",
            j.root.join("etc/nv_tegra_release").display()
        );
        return;
    }
    println!(
        "jetson: {}, L4T {} (JetPack {})",
        j.model.as_deref().unwrap_or("unknown module"),
        j.l4t.as_ref().map_or("?", |r| r.version.as_str()),
        j.l4t
            .as_ref()
            .and_then(|r| r.jetpack.as_deref())
            .unwrap_or("?")
    );
    match &j.power_mode {
        Some(m) => println!(
            "power mode: {} ({})",
            m.name,
            m.id.map_or("?".into(), |i| i.to_string())
        ),
        None => println!("power mode: unknown"),
    }
    match &j.clocks {
        Some(c) => println!(
            "clocks: {}",
            if c.locked {
                "locked (jetson_clocks)"
            } else {
                "not locked (DVFS)"
            }
        ),
        None => println!("clocks: unknown"),
    }
    println!("tensorrt: {}", j.tensorrt.as_deref().unwrap_or("not found"));
    for note in &j.notes {
        println!("  note: {note}");
    }
}

/// ONNX Runtime's version from its library's file name (`libonnxruntime.so.1.31.1`), following
/// symlinks (`libonnxruntime.so` → the versioned file, as onnxruntime-gpu builds install it).
fn ort_version(path: &std::path::Path) -> Option<String> {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = real.file_name()?.to_str()?;
    let v = name.split_once(".so.")?.1;
    (v.split('.').all(|p| p.parse::<u32>().is_ok())).then(|| v.to_string())
}

/// `[models]` with the host's TensorRT version filled in when the config leaves it unset, so the
/// engine cache key (`sm87/trt10.3/fp16`) names the TensorRT that builds and loads the engines.
fn host_backend(mut models: BackendConfig) -> BackendConfig {
    if models.tensorrt_version.is_none()
        && let Some(v) = reflex_runtime::jetson::tensorrt_version(std::path::Path::new("/"))
    {
        models.tensorrt_version = Some(v.split('.').take(2).collect::<Vec<_>>().join("."));
    }
    models
}
