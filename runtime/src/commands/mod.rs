//! One file per subcommand (cargo's `src/bin/cargo/commands/` layout): each has its clap
//! `Args` and an `exec`; `main.rs` only parses and dispatches. What several subcommands share
//! sits here.

use std::path::PathBuf;

use anyhow::{Context, Result};
use reflex_policy::BackendConfig;
use reflex_policy::PolicyPackage;
use reflex_runner::config::ReflexConfig;

pub mod check_config;
pub mod inspect;
pub mod keygen;
pub mod pack;
pub mod preflight;
pub mod pull;
pub mod push;
pub mod replay;
pub mod run;
pub mod safety_demo;
pub mod sign;
pub mod sim;
pub mod status;
pub mod teach_background;
pub mod upload;
pub mod verify;

/// How to reach a registry (credentials come from the environment: REFLEX_REGISTRY_USERNAME +
/// REFLEX_REGISTRY_PASSWORD, or REFLEX_REGISTRY_TOKEN).
#[derive(clap::Args, Debug)]
pub(crate) struct RegistryArgs {
    /// Extra CA certificate (PEM) for a registry with a private CA.
    #[arg(long)]
    registry_ca: Option<PathBuf>,
    /// Plain HTTP toward a non-loopback registry (loopback is always plain HTTP).
    #[arg(long)]
    plain_http: bool,
}

impl RegistryArgs {
    pub(crate) fn options(&self) -> Result<reflex_registry::registry::RegistryOptions> {
        if self.plain_http {
            eprintln!("reflex: warning: plain HTTP to the registry (--plain-http): no TLS");
        }
        Ok(reflex_registry::registry::RegistryOptions {
            ca_file: self.registry_ca.clone(),
            plain_http: self.plain_http,
            ..Default::default()
        }
        .with_env_auth()?)
    }
}

/// `[recorder]` and its `[recorder.upload]`, or an error naming what is missing.
pub(crate) fn upload_config(
    config: &ReflexConfig,
) -> Result<(
    &reflex_telemetry::recorder::RecorderConfig,
    &reflex_telemetry::upload::UploadConfig,
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
pub(crate) struct StopOnDrop(
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
pub(crate) struct FinishRecorder(Option<std::sync::Arc<reflex_telemetry::recorder::Recorder>>);

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
pub(crate) fn start_recorder(
    config: Option<reflex_telemetry::recorder::RecorderConfig>,
    package: &PolicyPackage,
    period_ms: f64,
    max_beams: usize,
    telemetry: &std::sync::Arc<reflex_core::metrics::Telemetry>,
) -> Result<Option<std::sync::Arc<reflex_telemetry::recorder::Recorder>>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let meta = reflex_telemetry::recorder::RecordingMeta {
        robot_id: config.robot_id.clone(),
        model_name: package.manifest.name.clone(),
        model_version: package.manifest.version.clone(),
        model_digest: package.model_digest().to_string(),
        wall_minus_mono_ns: i128::from(reflex_ros::port::wall_clock_ns())
            - i128::from(reflex_rt::ticker::now_ns()),
        ..Default::default()
    };
    eprintln!(
        "reflex: flight recorder: {} (window {} s + {} s, triggers {})",
        config.dir.join("queue").display(),
        config.window_s,
        config.post_s,
        config.triggers.join(",")
    );
    let recorder = reflex_telemetry::recorder::Recorder::start(
        config,
        meta,
        period_ms,
        max_beams,
        telemetry.clone(),
    )?;
    // SIGUSR1 = operator mark (trigger `operator_mark`).
    reflex_rt::ticker::install_mark_signal();
    let weak = std::sync::Arc::downgrade(&recorder);
    std::thread::Builder::new()
        .name("reflex-mark".into())
        .spawn(move || {
            while let Some(r) = weak.upgrade() {
                if reflex_rt::ticker::take_mark() {
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
pub(crate) fn start_metrics(
    config: &ReflexConfig,
    cli_bind: Option<String>,
) -> Result<(
    std::sync::Arc<reflex_core::metrics::Telemetry>,
    Option<reflex_telemetry::metrics::MetricsServer>,
)> {
    let mut t = config.telemetry.clone();
    if cli_bind.is_some() {
        t.metrics_bind = cli_bind;
    }
    let telemetry = std::sync::Arc::new(reflex_core::metrics::Telemetry::default());
    let server = match t.bind_addr()? {
        Some(addr) => {
            let server = reflex_telemetry::metrics::MetricsServer::start(addr, telemetry.clone())?;
            eprintln!("reflex: metrics at http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };
    Ok((telemetry, server))
}

pub(crate) fn print_pulled(pulled: &reflex_registry::store::Pulled) {
    println!(
        "pulled {} {} ({} target, manifest {}) into {}",
        pulled.package.manifest.name,
        pulled.package.manifest.version,
        pulled.target,
        pulled.manifest_digest,
        pulled.package.dir.display()
    );
}

/// `oci-layout:PATH:TAG` → (PATH, TAG).
pub(crate) fn layout_ref(reference: &str) -> Result<(PathBuf, String)> {
    let rest = reference.strip_prefix("oci-layout:").with_context(|| {
        format!("{reference:?}: expected oci-layout:PATH:TAG or oci://host[:port]/repository:tag")
    })?;
    let (path, tag) = rest
        .rsplit_once(':')
        .filter(|(p, t)| !p.is_empty() && !t.is_empty())
        .with_context(|| format!("{reference:?}: expected oci-layout:PATH:TAG"))?;
    Ok((PathBuf::from(path), tag.to_string()))
}

/// ONNX Runtime's version from its library's file name (`libonnxruntime.so.1.31.1`), following
/// symlinks (`libonnxruntime.so` → the versioned file, as onnxruntime-gpu builds install it).
pub(crate) fn ort_version(path: &std::path::Path) -> Option<String> {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = real.file_name()?.to_str()?;
    let v = name.split_once(".so.")?.1;
    (v.split('.').all(|p| p.parse::<u32>().is_ok())).then(|| v.to_string())
}

/// `[models]` with the host's TensorRT version filled in when the config leaves it unset, so the
/// engine cache key (`sm87/trt10.3/fp16/<model>`) names the TensorRT that builds and loads the engines.
pub(crate) fn host_backend(mut models: BackendConfig) -> BackendConfig {
    if models.tensorrt_version.is_none()
        && let Some(v) = crate::jetson::tensorrt_version(std::path::Path::new("/"))
    {
        models.tensorrt_version = Some(v.split('.').take(2).collect::<Vec<_>>().join("."));
    }
    models
}
