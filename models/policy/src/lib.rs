//! Policy packages and inference backends of Reflex: `policy.json` manifests, file and golden
//! verification, and the ONNX Runtime backend (CPU; CUDA / TensorRT behind features).
//!
//! # Guarantees
//! - A package is never used unverified: every file's sha256 is checked against the manifest,
//!   the model's real inputs and outputs are checked against the declared names, dtypes and
//!   shapes, and the golden pairs must reproduce within tolerance (`reflex verify`).
//! - Bad input is an error that names the file and the field; nothing panics.
//! - A requested accelerator that is missing is an error, or an explicit CPU fallback that
//!   the config allows and the log states; never silent (ORT's `error_on_failure`).
//! - ONNX Runtime is loaded at run time from a path (config or `ORT_DYLIB_PATH`); a missing or
//!   too old library is an error naming the path and the command that installs it.
//!
//! # Config keys (`[models]`, see [`BackendConfig`])
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `ort_library` | path | `$ORT_DYLIB_PATH` | `libonnxruntime.so.1.31.1` to load |
//! | `accelerator` | `cpu`/`cuda`/`tensorrt` | `cpu` | execution provider |
//! | `allow_cpu_fallback` | bool | false | run on CPU (logged) when the accelerator is missing |
//! | `intra_threads`, `inter_threads` | usize | 1, 1 | ORT thread pools |
//! | `engine_cache_dir` | path | `/var/cache/reflex/trt` | TensorRT engine and timing caches |
//! | `fp16`, `int8` | bool | false | TensorRT precision flags |
//!
//! # Example
//! ```no_run
//! use reflex_policy::{BackendConfig, OrtBackend, PolicyPackage};
//! let package = PolicyPackage::open("models/demo/reflex-demo-vla".as_ref())?;
//! package.verify_files()?;
//! let mut backend = OrtBackend::load(&package, &BackendConfig::default())?;
//! let mut obs = package.manifest.observation();
//! package.manifest.tokenize("go to the red marker", &mut obs.instruction);
//! let mut chunk = package.manifest.action_chunk();
//! backend.infer(&obs, &mut chunk)?;
//! # Ok::<(), reflex_policy::PackageError>(())
//! ```

// Two `unsafe` blocks, each with its SAFETY note: device.rs (probing for the CUDA driver
// library) and `ort_build` (listing ONNX Runtime's execution providers through its C API).
#![deny(unsafe_code)]

#[cfg(all(feature = "gpu", not(any(feature = "cuda", feature = "cuda-13000"))))]
compile_error!(
    "reflex-models: a GPU build needs a CUDA version: add `cuda` (CUDA 12.6, JetPack 6 / Orin) or `cuda-13000` (CUDA 13.0, JetPack 7 / Thor), or build with `--features jetpack6` / `--features jetpack7`"
);
#[cfg(all(feature = "cuda", feature = "cuda-13000"))]
compile_error!(
    "reflex-models: `cuda` (CUDA 12.6, JetPack 6) and `cuda-13000` (CUDA 13.0, JetPack 7) exclude each other: choose the JetPack of the robot (`jetpack6` or `jetpack7`)"
);

mod backend;
mod device;
pub mod image;
mod manifest;
pub mod noise;
mod ort_backend;
mod package;

use std::path::PathBuf;

pub use device::{CUDA_BUILT, GpuDevice, GpuDiscovery, discover_gpus};
pub use manifest::{
    ActionDim, Dtype, ExternalData, Golden, ImageFit, ImageLayout, ImagePreprocess, InputRole,
    InputSpec, InstructionEmbeddings, MANIFEST_FILE, NoiseDistribution, NoiseGenerator,
    Normalization, PolicyManifest, ResizeMethod, SCHEMA_VERSION, SafetyEnvelope, Stats, Target,
    TargetKind, TensorSpec, Tolerance, normalize_instruction, sha256_bytes, sha256_file,
};
pub use ort_backend::{
    Accelerator, BackendConfig, ORT_SETUP_HINT, OrtBackend, load_onnx_runtime, ort_build,
    ort_environment, ort_library_or_venv,
};
pub use package::{
    EngineHost, GoldenPair, GoldenReport, PolicyPackage, derive_package, read_npy_f32,
};
pub use reflex_core::{
    ActionChunk, BackendError, BackendInfo, ImageData, Observation, PolicyBackend,
};

/// Everything that can go wrong with a package or a backend. Messages start with what failed
/// and name the file, field or input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    #[error("package: cannot read {file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("package: {file} is not valid: {problem}")]
    Parse { file: PathBuf, problem: String },
    #[error("package: {file}: field `{field}`: {problem}")]
    Field {
        file: PathBuf,
        field: String,
        problem: String,
    },
    #[error(
        "package: digest mismatch for {file}: manifest says sha256:{expected}, file is sha256:{actual}"
    )]
    Digest {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("onnxruntime: {0}")]
    Runtime(String),
    #[error("model {file}: {problem}")]
    Model { file: PathBuf, problem: String },
    #[error("inference: {0}")]
    Inference(String),
    /// The model computed NaN/Inf: this output is dropped and counted, the worker goes on.
    #[error("inference: {0}")]
    NonFinite(String),
    #[error("golden check failed: {0}")]
    Golden(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("registry: {0}")]
    Registry(String),
}
