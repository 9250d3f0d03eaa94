//! `reflex verify`: a package directory (files, model I/O, golden pairs) or an artifact (digests, signature).

use std::path::PathBuf;

use super::{RegistryArgs, host_backend, layout_ref};
use anyhow::{Context, Result};
use reflex_policy::{Accelerator, BackendConfig, OrtBackend, PolicyPackage};
use reflex_runner::config::ReflexConfig;

/// Verify a policy package. A directory: schema, every file's sha256, the model's real
/// inputs and outputs against policy.json, and the golden pairs within tolerance.
/// `oci-layout:PATH:TAG` or `oci://…`: every blob's digest (for a registry: of this host's
/// artifact) and a signature from a key in --trusted-keys.
#[derive(Debug, clap::Args)]
pub struct Args {
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
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        path,
        trusted_keys,
        ort_library,
        accelerator,
        allow_cpu_fallback,
        config,
        registry,
    } = args;
    let reference = path.to_string_lossy().to_string();
    if reference.starts_with("oci://") || reference.starts_with("oci-layout:") {
        verify_artifact(&reference, trusted_keys, &registry)
    } else {
        verify_dir(path, ort_library, accelerator, allow_cpu_fallback, config)
    }
}

/// An artifact: every blob's digest and a trusted signature.
fn verify_artifact(
    reference: &str,
    trusted_keys: Option<PathBuf>,
    registry: &RegistryArgs,
) -> Result<()> {
    let trusted = trusted_keys.context(
        "verifying an artifact needs --trusted-keys DIR (public keys from `reflex keygen`)",
    )?;
    if reference.starts_with("oci://") {
        // A registry artifact: pulled into a scratch store (signature first, every
        // digest checked), then removed.
        let scratch = std::env::temp_dir().join(format!("reflex-verify-{}", std::process::id()));
        let store = reflex_registry::store::Store::open(&scratch)?;
        let result = reflex_registry::registry::pull_to_store(
            reference,
            &store,
            None,
            reflex_registry::registry::Trust::Keys(&trusted),
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
    let (root, tag) = layout_ref(reference)?;
    let layout = reflex_registry::oci::Layout::open(&root)?;
    let ok = reflex_registry::oci::verify_signed(&layout, &tag, &trusted)?;
    println!(
        "verified {reference}: {} blobs match their digests, signed by key {} ({})",
        ok.blobs_checked, ok.key_id, ok.index_digest
    );
    Ok(())
}

/// A package directory: files, model I/O, golden pairs.
fn verify_dir(
    path: PathBuf,
    ort_library: Option<PathBuf>,
    accelerator: String,
    allow_cpu_fallback: bool,
    config: Option<PathBuf>,
) -> Result<()> {
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
