//! ONNX Runtime backend via `ort` with `load-dynamic`: CPU by default, CUDA and TensorRT
//! execution providers behind the `cuda` / `tensorrt` features.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};

use crate::PackageError;
use crate::manifest::{Dtype, InputRole, PolicyManifest, Stats, sha256_bytes};
use crate::package::{EngineHost, GoldenPair, GoldenReport, PolicyPackage};
use reflex_core::{ActionChunk, BackendError, BackendInfo, ImageData, Observation, PolicyBackend};

/// The command that installs the ONNX Runtime library this build is tested with.
pub const ORT_SETUP_HINT: &str = "`bash scripts/setup-python` installs onnxruntime==1.31.1 from PyPI into .venv and prints the path of libonnxruntime.so.1.31.1";

/// `$ORT_DYLIB_PATH`, else where `scripts/setup-python` installs the library under `repo`
/// (for tools and tests run from a checkout).
pub fn ort_library_or_venv(repo: &Path) -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo.join(
                ".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1",
            )
        })
}

/// Which execution provider runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accelerator {
    #[default]
    Cpu,
    Cuda,
    Tensorrt,
}

/// `[models]` config: how to load and run policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `libonnxruntime.so.1.31.1`; unset: `$ORT_DYLIB_PATH`.
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    #[serde(default)]
    pub accelerator: Accelerator,
    /// Run on the CPU (stated in `BackendInfo::provider`) when the accelerator is missing.
    #[serde(default)]
    pub allow_cpu_fallback: bool,
    #[serde(default = "one")]
    pub intra_threads: usize,
    #[serde(default = "one")]
    pub inter_threads: usize,
    /// TensorRT engine and timing caches, keyed below by SM / TensorRT version / precision.
    #[serde(default = "default_cache_dir")]
    pub engine_cache_dir: PathBuf,
    #[serde(default)]
    pub fp16: bool,
    #[serde(default)]
    pub int8: bool,
    /// TensorRT version of this host (JetPack 6: `10.3`), part of the engine cache key:
    /// engines only load on the TensorRT version that built them.
    #[serde(default)]
    pub tensorrt_version: Option<String>,
}

fn one() -> usize {
    1
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("/var/cache/reflex/trt")
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            ort_library: None,
            accelerator: Accelerator::Cpu,
            allow_cpu_fallback: false,
            intra_threads: 1,
            inter_threads: 1,
            engine_cache_dir: default_cache_dir(),
            fp16: false,
            int8: false,
            tensorrt_version: None,
        }
    }
}

impl BackendConfig {
    /// `int8`, `fp16` or `fp32`.
    pub fn precision(&self) -> &'static str {
        if self.int8 {
            "int8"
        } else if self.fp16 {
            "fp16"
        } else {
            "fp32"
        }
    }

    /// Engine and timing cache directory for the model `model_digest` on a GPU of compute
    /// capability `sm`: an engine is only valid for one GPU architecture, TensorRT version and
    /// precision, and only for one model's weights — ORT's TensorRT provider names a cached
    /// engine from the graph's name and I/O, never its weights, so a fine-tuned model of the
    /// same architecture would load the previous one's engine from a shared directory
    /// (`<engine_cache_dir>/sm87/trt10.3/fp16/<first 16 hex of the model digest>`).
    pub fn engine_cache_path(&self, sm: &str, model_digest: &str) -> PathBuf {
        let model: String = model_digest.chars().take(16).collect();
        self.engine_cache_dir
            .join(format!("sm{sm}"))
            .join(format!(
                "trt{}",
                self.tensorrt_version.as_deref().unwrap_or("unknown")
            ))
            .join(self.precision())
            .join(if model.is_empty() {
                "unknown".into()
            } else {
                model
            })
    }
}

static ENVIRONMENT: OnceLock<(PathBuf, Environment)> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

fn runtime_error(message: String) -> PackageError {
    PackageError::Runtime(message)
}

/// Loads ONNX Runtime once per process from `configured` or `$ORT_DYLIB_PATH` and returns the
/// path it was loaded from (later calls return the first path).
pub fn load_onnx_runtime(configured: Option<&Path>) -> Result<&'static Path, PackageError> {
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((path, _)) = ENVIRONMENT.get() {
        return Ok(path);
    }
    let path = match configured {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .ok_or_else(|| {
                runtime_error(format!(
                    "no ONNX Runtime library configured: pass --ort-library, set `[models] ort_library` in the config, or set ORT_DYLIB_PATH; {ORT_SETUP_HINT}"
                ))
            })?,
    };
    if !path.is_file() {
        return Err(runtime_error(format!(
            "library not found at {}; {ORT_SETUP_HINT}",
            path.display()
        )));
    }
    let builder = ort::init_from(&path).map_err(|e| {
        runtime_error(format!(
            "cannot load {} ({e}); Reflex needs ONNX Runtime 1.24 or newer (C API 24); {ORT_SETUP_HINT}",
            path.display()
        ))
    })?;
    let environment = builder.with_name("reflex").build().map_err(|e| {
        runtime_error(format!(
            "cannot create an environment from {}: {e}",
            path.display()
        ))
    })?;
    let (path, _) = ENVIRONMENT.get_or_init(|| (path, environment));
    Ok(path)
}

/// What the loaded ONNX Runtime offers: its build string and the execution providers it was
/// compiled with (`TensorrtExecutionProvider`, `CUDAExecutionProvider`, …, always
/// `CPUExecutionProvider` last). Call after [`load_onnx_runtime`] succeeded.
pub fn ort_build() -> Result<(String, Vec<String>), PackageError> {
    if ENVIRONMENT.get().is_none() {
        return Err(runtime_error(
            "ONNX Runtime is not loaded yet; load it first (--ort-library or ORT_DYLIB_PATH)"
                .into(),
        ));
    }
    let info = ort::info().to_string();
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut n: std::ffi::c_int = 0;
    // SAFETY: ORT's documented call: it fills `list` with `n` NUL-terminated strings that stay
    // valid until ReleaseAvailableProviders, which is called below with the same pointer and
    // count; a non-null status is an error object, released after reading it.
    #[allow(unsafe_code)]
    let providers = unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut n);
        if !status.0.is_null() {
            let message = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0))
                .to_string_lossy()
                .into_owned();
            (api.ReleaseStatus)(status.0);
            return Err(runtime_error(format!(
                "GetAvailableProviders failed: {message}"
            )));
        }
        let mut names = Vec::with_capacity(n.max(0) as usize);
        for i in 0..n.max(0) as usize {
            names.push(
                std::ffi::CStr::from_ptr(*list.add(i))
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        if !list.is_null() {
            let status = (api.ReleaseAvailableProviders)(list, n);
            if !status.0.is_null() {
                (api.ReleaseStatus)(status.0);
            }
        }
        names
    };
    Ok((info, providers))
}

/// The process's ONNX Runtime environment, once `load_onnx_runtime` has succeeded (for tools
/// and benchmarks that build a bare session next to Reflex's).
pub fn ort_environment() -> Option<&'static Environment> {
    ENVIRONMENT.get().map(|(_, env)| env)
}

fn environment() -> &'static Environment {
    &ENVIRONMENT
        .get()
        .expect("load_onnx_runtime succeeded first")
        .1
}

fn element_type(dtype: Dtype) -> TensorElementType {
    match dtype {
        Dtype::Uint8 => TensorElementType::Uint8,
        Dtype::Float32 => TensorElementType::Float32,
        Dtype::Int64 => TensorElementType::Int64,
    }
}

/// Normalization as `y = (x - offset) * scale`, and its inverse.
#[derive(Debug, Clone)]
struct Affine {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

impl Affine {
    /// mean/std: (x - mean) / std; min/max: to [-1, 1].
    fn from_stats(stats: &Stats) -> Self {
        match (&stats.mean, &stats.std, &stats.min, &stats.max) {
            (Some(mean), Some(std), _, _) => Self {
                offset: mean.clone(),
                scale: std.iter().map(|s| 1.0 / s).collect(),
            },
            (_, _, Some(min), Some(max)) => Self {
                offset: min.iter().zip(max).map(|(a, b)| 0.5 * (a + b)).collect(),
                scale: min.iter().zip(max).map(|(a, b)| 2.0 / (b - a)).collect(),
            },
            _ => unreachable!("validated by the manifest"),
        }
    }
}

/// A policy running in an ONNX Runtime session.
#[derive(Debug)]
pub struct OrtBackend {
    session: Session,
    manifest: PolicyManifest,
    model_file: PathBuf,
    model_digest: String,
    provider: String,
    intra_threads: usize,
    state_norm: Affine,
    action_norm: Affine,
    /// Relative action dimensions and the state entry each is an offset from.
    relative: Vec<(usize, usize)>,
    /// The noise input's generator and its preallocated draws (schema 2 `role: noise`).
    noise: Option<(crate::noise::NoiseSource, Vec<f32>)>,
    /// The package's instruction embeddings, one row per known instruction (schema 2
    /// `role: instruction_embedding`), verified at load.
    embeddings: Option<Vec<f32>>,
    /// Preallocated: normalized state, raw model output.
    state_buf: Vec<f32>,
    raw_out: Vec<f32>,
}

impl OrtBackend {
    /// Loads the package's ONNX model (its bytes must match the manifest's sha256), builds the
    /// session on the configured accelerator and checks the model's real inputs and output
    /// against the manifest.
    pub fn load(package: &PolicyPackage, config: &BackendConfig) -> Result<Self, PackageError> {
        load_onnx_runtime(config.ort_library.as_deref())?;
        let target = match config.accelerator {
            Accelerator::Tensorrt => {
                let sm = match crate::device::discover_gpus() {
                    crate::GpuDiscovery::Devices { devices } if !devices.is_empty() => {
                        devices[0].sm.clone()
                    }
                    _ => String::new(),
                };
                let host = EngineHost {
                    arch: std::env::consts::ARCH,
                    gpu_sm: &sm,
                    tensorrt_version: config.tensorrt_version.as_deref().unwrap_or(""),
                    precision: config.precision(),
                };
                package.select_target(Some(&host)).clone()
            }
            _ => package.select_target(None).clone(),
        };
        let model_file = package.dir.join(&target.file);
        let bytes = std::fs::read(&model_file).map_err(|source| PackageError::Io {
            file: model_file.clone(),
            source,
        })?;
        let digest = sha256_bytes(&bytes);
        if digest != target.sha256 {
            return Err(PackageError::Digest {
                file: model_file,
                expected: target.sha256.clone(),
                actual: digest,
            });
        }
        // External data: every file read and verified before ONNX Runtime sees it, then handed
        // over as those bytes (ORT never opens a file the digest did not cover).
        let mut external = Vec::with_capacity(target.external_data.len());
        for data in &target.external_data {
            let path = package.dir.join(&data.file);
            let bytes = read_shared(&path).map_err(|source| PackageError::Io {
                file: path.clone(),
                source,
            })?;
            let actual = sha256_bytes(&bytes);
            if actual != data.sha256 {
                return Err(PackageError::Digest {
                    file: path,
                    expected: data.sha256.clone(),
                    actual,
                });
            }
            external.push((data.file.clone(), bytes));
        }
        let digest = target.model_digest();
        let model_error = |problem: String| PackageError::Model {
            file: model_file.clone(),
            problem,
        };
        let mut builder = Session::builder(environment())
            .map_err(|e| model_error(format!("cannot create a session builder: {e}")))?
            .with_intra_threads(config.intra_threads.max(1))
            .map_err(|e| model_error(format!("intra_threads: {e}")))?
            .with_inter_threads(config.inter_threads.max(1))
            .map_err(|e| model_error(format!("inter_threads: {e}")))?;
        // A tensor in an external file that policy.json does not list would be read from disk
        // unverified (relative to the working directory, for a model loaded from memory): point
        // ORT's external data folder nowhere, so only the verified buffers below resolve.
        builder = builder
            .with_config_entry(
                "session.model_external_initializers_file_folder_path",
                UNLISTED_EXTERNAL_DATA,
            )
            .map_err(|e| model_error(format!("external data folder: {e}")))?;
        for (file, bytes) in external {
            builder = builder
                .with_external_initializer_file_in_memory(&file, bytes)
                .map_err(|e| model_error(format!("external data `{file}`: {e}")))?;
        }
        let (b, registered) = register_accelerator(builder, config, &digest);
        builder = b;
        let provider = match registered {
            Ok(provider) => provider,
            Err(err) if config.allow_cpu_fallback => {
                format!("cpu (fallback allowed by config: {err})")
            }
            Err(err) => return Err(runtime_error(err)),
        };
        let session = builder.commit_from_memory(&bytes).map_err(|e| {
            let e = e.to_string();
            if e.contains(UNLISTED_EXTERNAL_DATA) {
                model_error(format!(
                    "the model keeps tensors in an external data file that policy.json does not list: add each file with its sha256 to targets[].external_data (a plain file name beside the model; a graph whose tensors name a location in another directory must be re-saved with onnx.save_model(..., location=\"<name>\")) ({e})"
                ))
            } else {
                model_error(format!(
                    "not a loadable ONNX model (corrupt or truncated?): {e}"
                ))
            }
        })?;
        check_io(&session, &package.manifest).map_err(model_error)?;
        let embeddings = package.instruction_embeddings()?;
        let manifest = package.manifest.clone();
        let state_len = manifest
            .input(InputRole::State)
            .map_or(0, |i| i.shape.iter().product::<i64>() as usize);
        let out_len = manifest.outputs[0].shape.iter().product::<i64>() as usize;
        Ok(Self {
            state_norm: Affine::from_stats(&manifest.normalization.state),
            action_norm: Affine::from_stats(&manifest.normalization.action),
            relative: manifest.relative_actions(),
            noise: manifest.input(InputRole::Noise).and_then(|spec| {
                let generator = spec.generator.as_ref()?;
                Some((
                    crate::noise::NoiseSource::new(generator),
                    vec![0.0; spec.values()],
                ))
            }),
            embeddings,
            session,
            model_file,
            model_digest: digest,
            provider,
            intra_threads: config.intra_threads.max(1),
            state_buf: vec![0.0; state_len],
            raw_out: vec![0.0; out_len],
            manifest,
        })
    }

    /// Runs the model on raw (already normalized) inputs and returns the raw output.
    pub fn run_raw(
        &mut self,
        images: &[ImageData],
        state: &[f32],
        instruction: &[i64],
        embedding: &[f32],
        noise: &[f32],
    ) -> Result<&[f32], PackageError> {
        let mut inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(self.manifest.inputs.len());
        let mut images = images.iter();
        for spec in &self.manifest.inputs {
            let shape = spec.shape.as_slice();
            let expected: usize = spec.shape.iter().product::<i64>() as usize;
            let wrong = |what: &str, got: usize| {
                PackageError::Inference(format!(
                    "input `{}`: expected {expected} {:?} values, got {got} {what}",
                    spec.name, spec.dtype
                ))
            };
            let image = if spec.role == InputRole::Image {
                images.next()
            } else {
                None
            };
            let value: ort::session::SessionInputValue<'_> = match (spec.role, spec.dtype, image) {
                (InputRole::Image, Dtype::Uint8, Some(ImageData::U8(data))) => {
                    if data.len() != expected {
                        return Err(wrong("uint8 values", data.len()));
                    }
                    tensor(shape, data)?
                }
                (InputRole::Image, Dtype::Float32, Some(ImageData::F32(data))) => {
                    if data.len() != expected {
                        return Err(wrong("float32 values", data.len()));
                    }
                    tensor(shape, data)?
                }
                (InputRole::Image, _, Some(ImageData::U8(data))) => {
                    return Err(wrong("uint8 values: wrong dtype", data.len()));
                }
                (InputRole::Image, _, Some(ImageData::F32(data))) => {
                    return Err(wrong("float32 values: wrong dtype", data.len()));
                }
                (InputRole::Image, _, None) => return Err(wrong("(no image)", 0)),
                (InputRole::State, _, _) => {
                    if state.len() != expected {
                        return Err(wrong("float32 values", state.len()));
                    }
                    tensor(shape, state)?
                }
                (InputRole::InstructionTokens, _, _) => {
                    if instruction.len() != expected {
                        return Err(wrong("int64 values", instruction.len()));
                    }
                    tensor(shape, instruction)?
                }
                (InputRole::InstructionEmbedding, _, _) => {
                    if embedding.len() != expected {
                        return Err(wrong("float32 values", embedding.len()));
                    }
                    tensor(shape, embedding)?
                }
                (InputRole::Noise, _, _) => {
                    if noise.len() != expected {
                        return Err(wrong("float32 values", noise.len()));
                    }
                    tensor(shape, noise)?
                }
            };
            inputs.push((spec.name.as_str(), value));
        }
        if images.next().is_some() {
            return Err(PackageError::Inference(format!(
                "the observation has more images than the policy's {} image inputs",
                self.manifest.image_inputs().count()
            )));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| PackageError::Inference(format!("run failed: {e}")))?;
        // By name: with further outputs (schema 2) the chunk need not be the model's first.
        let (_, data) = outputs[self.manifest.outputs[0].name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| PackageError::Inference(format!("output: {e}")))?;
        if data.len() != self.raw_out.len() {
            return Err(PackageError::Inference(format!(
                "output has {} values, the manifest declares {}",
                data.len(),
                self.raw_out.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(PackageError::NonFinite(format!(
                "output value {i} is {} (NaN/Inf): the policy's output is not usable",
                data[i]
            )));
        }
        self.raw_out.copy_from_slice(data);
        Ok(&self.raw_out)
    }

    /// Runs every golden pair and compares with `|got - want| <= abs + rel·|want|`.
    pub fn check_golden(&mut self, pairs: &[GoldenPair]) -> Result<GoldenReport, PackageError> {
        let tolerance = self.manifest.golden.tolerance;
        let output = self.manifest.outputs[0].name.clone();
        let mut max_abs_error = 0.0f32;
        for (index, pair) in pairs.iter().enumerate() {
            let mut images = Vec::new();
            let mut state = Vec::new();
            let mut tokens = Vec::new();
            let mut embedding = Vec::new();
            let mut noise = Vec::new();
            for spec in &self.manifest.inputs {
                let values = &pair.inputs[&spec.name];
                match (spec.role, spec.dtype) {
                    (InputRole::Image, Dtype::Uint8) => {
                        images.push(ImageData::U8(values.iter().map(|v| *v as u8).collect()))
                    }
                    (InputRole::Image, _) => {
                        images.push(ImageData::F32(values.iter().map(|v| *v as f32).collect()))
                    }
                    (InputRole::State, _) => state = values.iter().map(|v| *v as f32).collect(),
                    (InputRole::InstructionTokens, _) => {
                        tokens = values.iter().map(|v| *v as i64).collect()
                    }
                    // The pair carries the embedding itself: golden pairs check the model.
                    (InputRole::InstructionEmbedding, _) => {
                        embedding = values.iter().map(|v| *v as f32).collect()
                    }
                    // The pair's own noise: golden outputs are reproducible only with it.
                    (InputRole::Noise, _) => noise = values.iter().map(|v| *v as f32).collect(),
                }
            }
            let got = self.run_raw(&images, &state, &tokens, &embedding, &noise)?;
            for (i, (g, w)) in got.iter().zip(&pair.outputs[&output]).enumerate() {
                let err = (g - w).abs();
                max_abs_error = max_abs_error.max(err);
                if err > tolerance.abs + tolerance.rel * w.abs() {
                    return Err(PackageError::Golden(format!(
                        "pair {index} ({}), output `{output}`[{i}]: got {g}, expected {w} (tolerance abs {} rel {})",
                        pair.note, tolerance.abs, tolerance.rel
                    )));
                }
            }
        }
        Ok(GoldenReport {
            pairs: pairs.len(),
            max_abs_error,
        })
    }
}

fn tensor<'a, T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static>(
    shape: &'a [i64],
    data: &'a [T],
) -> Result<ort::session::SessionInputValue<'a>, PackageError> {
    TensorRef::from_array_view((shape, data))
        .map(Into::into)
        .map_err(|e| PackageError::Inference(format!("cannot wrap an input: {e}")))
}

type Builder = ort::session::builder::SessionBuilder;
/// The builder back, with the provider now in use or why the requested one could not start.
type Registered = (Builder, Result<String, String>);

/// Registers the configured execution provider with `error_on_failure`: a missing accelerator
/// comes back as an error (with the builder, so the caller may fall back explicitly).
fn register_accelerator(
    builder: Builder,
    config: &BackendConfig,
    model_digest: &str,
) -> Registered {
    match config.accelerator {
        Accelerator::Cpu => (builder, Ok("cpu".into())),
        Accelerator::Cuda => register_cuda(builder),
        Accelerator::Tensorrt => register_tensorrt(builder, config, model_digest),
    }
}

#[cfg(feature = "gpu")]
fn register_cuda(builder: Builder) -> Registered {
    let ep = ort::ep::CUDA::default().build().error_on_failure();
    match builder.with_execution_providers([ep]) {
        Ok(b) => (b, Ok("cuda".into())),
        Err(e) => {
            let message = format!(
                "accelerator `cuda` requested but the CUDA execution provider cannot start on this host: {e}; check the NVIDIA driver and the onnxruntime-gpu build, or set accelerator = \"cpu\""
            );
            (e.recover(), Err(message))
        }
    }
}

#[cfg(not(feature = "gpu"))]
fn register_cuda(builder: Builder) -> Registered {
    (
        builder,
        Err("accelerator `cuda` requested but this reflex was built without the `cuda` feature; rebuild with `--features jetpack6` (Orin) or `--features jetpack7` (Thor), or set accelerator = \"cpu\"".into()),
    )
}

#[cfg(feature = "tensorrt")]
fn register_tensorrt(builder: Builder, config: &BackendConfig, model_digest: &str) -> Registered {
    let precision = config.precision();
    let sm = match crate::device::discover_gpus() {
        crate::GpuDiscovery::Devices { devices } if !devices.is_empty() => devices[0].sm.clone(),
        _ => "unknown".to_string(),
    };
    let cache = config.engine_cache_path(&sm, model_digest);
    let ep = ort::ep::TensorRT::default()
        .with_fp16(config.fp16)
        .with_int8(config.int8)
        .with_engine_cache(true)
        .with_engine_cache_path(cache.display().to_string())
        .with_timing_cache(true)
        .with_timing_cache_path(cache.display().to_string())
        .build()
        .error_on_failure();
    match builder.with_execution_providers([ep]) {
        Ok(b) => (
            b,
            Ok(format!("tensorrt ({precision}, cache {})", cache.display())),
        ),
        Err(e) => {
            let message = format!(
                "accelerator `tensorrt` requested but the TensorRT execution provider cannot start on this host: {e}; check the NVIDIA driver, TensorRT and the onnxruntime-gpu build, or set accelerator = \"cpu\""
            );
            (e.recover(), Err(message))
        }
    }
}

#[cfg(not(feature = "tensorrt"))]
fn register_tensorrt(builder: Builder, _config: &BackendConfig, _model_digest: &str) -> Registered {
    (
        builder,
        Err("accelerator `tensorrt` requested but this reflex was built without the `tensorrt` feature; rebuild with `--features jetpack6` (Orin) or `--features jetpack7` (Thor), or set accelerator = \"cpu\"".into()),
    )
}

/// The model's declared inputs and output must be exactly the manifest's.
/// Where ONNX Runtime would look for external data files policy.json does not list: nowhere.
const UNLISTED_EXTERNAL_DATA: &str = "/nonexistent/reflex-unlisted-external-data";

/// A whole file read straight into one shared buffer (no intermediate copy of a multi-GB
/// tensor file); a file that grows or shrinks while read is an error. ONNX Runtime copies the
/// tensors out of it while it builds the session (the buffer may be freed after that, and is,
/// with the builder): the peak at load is about twice the weights, once after.
fn read_shared(path: &std::path::Path) -> std::io::Result<std::sync::Arc<[u8]>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|_| std::io::Error::other("larger than this machine's address space"))?;
    let mut buffer: std::sync::Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
    let slot = std::sync::Arc::get_mut(&mut buffer).expect("just made: the only reference");
    file.read_exact(slot)?;
    if file.read(&mut [0u8; 1])? != 0 {
        return Err(std::io::Error::other("the file grew while it was read"));
    }
    Ok(buffer)
}

fn check_io(session: &Session, manifest: &PolicyManifest) -> Result<(), String> {
    let describe = |t: &ValueType| format!("{t:?}");
    for outlet in session.inputs() {
        let Some(spec) = manifest.inputs.iter().find(|i| i.name == outlet.name()) else {
            return Err(format!(
                "the model has an input `{}` that policy.json does not declare",
                outlet.name()
            ));
        };
        check_tensor(
            &spec.name,
            spec.dtype,
            &spec.shape,
            outlet.dtype(),
            "inputs",
        )?;
    }
    for spec in &manifest.inputs {
        if !session.inputs().iter().any(|o| o.name() == spec.name) {
            return Err(format!(
                "policy.json declares input `{}` but the model has no such input",
                spec.name
            ));
        }
    }
    for output in &manifest.outputs {
        match session.outputs().iter().find(|o| o.name() == output.name) {
            Some(outlet) => check_tensor(
                &output.name,
                output.dtype,
                &output.shape,
                outlet.dtype(),
                "outputs",
            )?,
            None => {
                return Err(format!(
                    "policy.json declares output `{}` but the model's outputs are {:?}",
                    output.name,
                    session
                        .outputs()
                        .iter()
                        .map(|o| format!("{} {}", o.name(), describe(o.dtype())))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    Ok(())
}

fn check_tensor(
    name: &str,
    dtype: Dtype,
    shape: &[i64],
    actual: &ValueType,
    field: &str,
) -> Result<(), String> {
    let ValueType::Tensor {
        ty,
        shape: model_shape,
        ..
    } = actual
    else {
        return Err(format!(
            "{field} `{name}`: the model's value is not a tensor"
        ));
    };
    if *ty != element_type(dtype) {
        return Err(format!(
            "{field} `{name}`: policy.json says {dtype:?}, the model takes {ty:?}"
        ));
    }
    let dims: &[i64] = model_shape;
    let fits = dims.len() == shape.len() && dims.iter().zip(shape).all(|(m, s)| *m < 0 || m == s);
    if !fits {
        return Err(format!(
            "{field} `{name}`: policy.json says shape {shape:?}, the model has {dims:?}"
        ));
    }
    Ok(())
}

impl PolicyBackend for OrtBackend {
    fn describe(&self) -> BackendInfo {
        OrtBackend::describe(self)
    }

    fn warm_up(&mut self, runs: usize) -> Result<(), BackendError> {
        Ok(OrtBackend::warm_up(self, runs)?)
    }

    fn infer(&mut self, obs: &Observation, out: &mut ActionChunk) -> Result<(), BackendError> {
        Ok(OrtBackend::infer(self, obs, out)?)
    }
}

impl OrtBackend {
    /// What this backend is (provider actually in use, model digest).
    pub fn describe(&self) -> BackendInfo {
        BackendInfo {
            backend: "onnxruntime",
            provider: self.provider.clone(),
            model_file: self.model_file.display().to_string(),
            model_digest: self.model_digest.clone(),
            intra_threads: self.intra_threads,
        }
    }

    /// Runs `runs` inferences on a zero observation (first-run allocations, kernel selection),
    /// with the first known instruction's embedding when the policy takes one (the results are
    /// thrown away).
    pub fn warm_up(&mut self, runs: usize) -> Result<(), PackageError> {
        let mut obs = self.manifest.observation();
        if self.embeddings.is_some() {
            obs.instruction.fill(0);
        }
        let mut chunk = self.manifest.action_chunk();
        for _ in 0..runs {
            self.infer(&obs, &mut chunk)?;
        }
        // The first inference that drives the robot gets the seed's first draw.
        if let Some((source, _)) = &mut self.noise {
            source.reseed();
        }
        Ok(())
    }

    /// Runs the policy on `obs`; a NaN/Inf output or a wrong-shaped observation is an error and
    /// leaves `out` untouched.
    pub fn infer(&mut self, obs: &Observation, out: &mut ActionChunk) -> Result<(), PackageError> {
        if out.actions.len() != self.raw_out.len() {
            return Err(PackageError::Inference(format!(
                "action chunk has {} slots, the policy produces {}",
                out.actions.len(),
                self.raw_out.len()
            )));
        }
        if obs.state.len() != self.state_buf.len() {
            return Err(PackageError::Inference(format!(
                "observation state has {} values, the policy takes {}",
                obs.state.len(),
                self.state_buf.len()
            )));
        }
        if let Some(&(d, si)) = self
            .relative
            .iter()
            .find(|(_, si)| !obs.state[*si].is_finite())
        {
            return Err(PackageError::Inference(format!(
                "state entry {si} ({}) is {}: relative action `{}` has no measured position to add to",
                self.manifest.state_sources()[si],
                obs.state[si],
                self.manifest.action_space[d].name
            )));
        }
        let dims = self.state_norm.offset.len().max(1);
        for (i, (n, x)) in self.state_buf.iter_mut().zip(&obs.state).enumerate() {
            let d = i % dims;
            *n = (x - self.state_norm.offset[d]) * self.state_norm.scale[d];
        }
        // The embedding row of the instruction: none (-1, or out of the table) runs nothing.
        let rows = self
            .manifest
            .instruction_embeddings
            .as_ref()
            .map_or(0, |e| e.instructions.len());
        let row = match obs.instruction.first().map(|&r| usize::try_from(r)) {
            Some(Ok(row)) if row < rows => row,
            _ if self.embeddings.is_none() => 0,
            _ => {
                return Err(PackageError::Inference(format!(
                    "no instruction the package knows was given (embedding row {:?} of {rows}); send one of: {}",
                    obs.instruction.first(),
                    self.manifest.known_instructions()
                )));
            }
        };
        // Moved out for the run (run_raw borrows self mutably), as the state buffer is.
        let table = self.embeddings.take();
        let state = std::mem::take(&mut self.state_buf);
        let mut noise = self.noise.take();
        if let Some((source, draws)) = &mut noise {
            source.fill(draws);
        }
        let draws = noise.as_ref().map_or(&[][..], |(_, d)| d.as_slice());
        let embedding = table.as_ref().map_or(&[][..], |t| {
            let width = t.len() / rows.max(1);
            &t[row * width..(row + 1) * width]
        });
        let result = self
            .run_raw(&obs.images, &state, &obs.instruction, embedding, draws)
            .map(|_| ());
        self.state_buf = state;
        self.noise = noise;
        self.embeddings = table;
        result?;
        let a = self.action_norm.offset.len();
        for (i, (y, raw)) in out.actions.iter_mut().zip(&self.raw_out).enumerate() {
            let d = i % a;
            *y = raw / self.action_norm.scale[d] + self.action_norm.offset[d];
        }
        // Delta actions: offsets from the state measured at this observation, made absolute.
        for step in out.actions.chunks_mut(a) {
            for &(d, si) in &self.relative {
                step[d] += obs.state[si];
            }
        }
        out.t_obs_ns = obs.t_obs_ns;
        if out.model_digest != self.model_digest {
            out.model_digest.clone_from(&self.model_digest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_caches_are_keyed_by_gpu_tensorrt_precision_and_model() {
        let mut config = BackendConfig {
            engine_cache_dir: PathBuf::from("/var/cache/reflex/trt"),
            tensorrt_version: Some("10.3".into()),
            fp16: true,
            ..BackendConfig::default()
        };
        let digest = "96794312c2aec5f630d2d5d0963161bb9bd5e73dc2569753d1ddcdc361188d65";
        assert_eq!(
            config.engine_cache_path("87", digest),
            PathBuf::from("/var/cache/reflex/trt/sm87/trt10.3/fp16/96794312c2aec5f6")
        );
        config.int8 = true;
        assert_eq!(
            config.engine_cache_path("110", digest),
            PathBuf::from("/var/cache/reflex/trt/sm110/trt10.3/int8/96794312c2aec5f6")
        );
        config.tensorrt_version = None;
        assert!(
            config
                .engine_cache_path("87", digest)
                .ends_with("sm87/trtunknown/int8/96794312c2aec5f6")
        );
    }

    /// Two packages with the same graph file and other weights (external data) are two
    /// models: two digests, two engine caches — never one's engine for the other.
    #[test]
    fn same_graph_other_weights_get_another_engine_cache() {
        use crate::manifest::{ExternalData, Target, TargetKind};
        let target = |weights: &str| Target {
            kind: TargetKind::Onnx,
            file: "model.onnx".into(),
            sha256: "a".repeat(64),
            arch: None,
            gpu_sm: None,
            tensorrt_version: None,
            precision: None,
            external_data: vec![ExternalData {
                file: "model.onnx.data".into(),
                sha256: weights.repeat(64),
            }],
        };
        let (a, b) = (target("b").model_digest(), target("c").model_digest());
        assert_ne!(a, b);
        let config = BackendConfig::default();
        assert_ne!(
            config.engine_cache_path("87", &a),
            config.engine_cache_path("87", &b)
        );
    }
}
