//! `policy.json`: the manifest of a policy package, parsed with unknown fields rejected, then
//! checked field by field; every error names the file and the field.
//!
//! Schema 1 (still read): the policy's state is the base velocity (`base_vx`, `base_vy`,
//! `base_wz` in the first entries, zeros after), so it may drive only base axes. Schema 2 adds
//! `state_sources` (one per state entry, measured: joint positions and velocities by joint name,
//! gripper position, base velocity) and joint-named `drives` (`joint_position/<joint>`); see
//! `reflex_core::actions` for the spellings. The robot's config resolves both at load.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use reflex_core::actions::{ActionTarget, RobotShape, StateSource};

use crate::PackageError;

/// The newest schema version this build reads (and `reflex pack` writes).
pub const SCHEMA_VERSION: u32 = 2;
/// Every schema version this build reads.
pub const SCHEMA_VERSIONS: [u32; 2] = [1, 2];
/// Name of the manifest inside a package directory.
pub const MANIFEST_FILE: &str = "policy.json";

/// Tensor element types a policy may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    Uint8,
    Float32,
    Int64,
}

/// What an input carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRole {
    /// A camera image (schema 1: one, NCHW; schema 2: any number, each bound to an image
    /// topic by its input name, laid out and normalized as its `preprocess` says).
    Image,
    /// Robot state vector, [1, S].
    State,
    /// Instruction token ids, [1, T].
    InstructionTokens,
    /// Schema 2: the instruction as an embedding computed offline by the text encoder the
    /// policy was trained with, float32 `[1, …]`: the row of the package's
    /// `instruction_embeddings` file for the instruction the robot was given (one the package
    /// does not list makes no observation: the robot stops, never runs on a guessed one).
    InstructionEmbedding,
    /// Schema 2: the noise a flow-matching or diffusion head starts from (pi0's, Diffusion
    /// Policy's), float32 `[1, …]`, drawn fresh for every inference from the input's
    /// `generator` (seeded: the same package makes the same sequence of draws after every load).
    Noise,
}

/// Schema 2, noise inputs: the distribution and the seed of the draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseGenerator {
    pub distribution: NoiseDistribution,
    /// The generator restarts from this seed at load and after warm-up, so the first
    /// inference that drives the robot always gets the first draw.
    pub seed: u64,
}

/// What a noise input's values are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseDistribution {
    /// N(0, 1) per value, independent.
    StandardNormal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<i64>,
    pub role: InputRole,
    /// Schema 2, image inputs: how a camera frame becomes this tensor (default: NCHW, nearest
    /// neighbour, stretched, no normalization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<ImagePreprocess>,
    /// Schema 2, noise inputs (required there, refused elsewhere): how its values are drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<NoiseGenerator>,
}

/// Schema 2: the instructions a package with an `instruction_embedding` input knows, and the
/// file of their embeddings (row `i` is `instructions[i]`'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructionEmbeddings {
    /// A NumPy `.npy` file in the package (`np.save`): little-endian float32, C order, shape
    /// `[len(instructions), …the input's shape without its batch]`.
    pub file: String,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// The instruction texts, matched as [`normalize_instruction`] spells them.
    pub instructions: Vec<String>,
}

/// How an instruction is matched against a package's `instruction_embeddings.instructions`:
/// lowercase words, punctuation around each word dropped, single spaces ("Pick up the red
/// cube." is "pick up the red cube").
pub fn normalize_instruction(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Tensor layout of an image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageLayout {
    /// `[1, 3, H, W]`.
    #[default]
    Nchw,
    /// `[1, H, W, 3]`.
    Nhwc,
}

/// How pixels are sampled when the camera's size differs from the input's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMethod {
    #[default]
    Nearest,
    /// Half-pixel centres, no antialiasing (OpenCV's `INTER_LINEAR`).
    Bilinear,
}

/// How a camera frame of another aspect ratio fits the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageFit {
    /// Each axis scaled on its own (distorts when the aspect ratios differ).
    #[default]
    Stretch,
    /// Scaled to cover the input, the centre kept, the overhanging sides cut.
    CenterCrop,
    /// Scaled to fit inside the input, centred, padded with black (openpi's `resize_with_pad`).
    Letterbox,
}

/// Schema 2: how a camera frame becomes an image input. A float32 input receives
/// `(pixel / 255 - mean[c]) / std[c]` per RGB channel (mean 0, std 1 when not given); a uint8
/// input receives the RGB bytes (no `mean`/`std`: the model normalizes them itself).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePreprocess {
    #[serde(default)]
    pub layout: ImageLayout,
    #[serde(default)]
    pub resize: ResizeMethod,
    #[serde(default)]
    pub fit: ImageFit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<[f32; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<[f32; 3]>,
}

impl InputSpec {
    /// The preprocessing of an image input (the defaults when `preprocess` is absent).
    pub fn image_preprocess(&self) -> ImagePreprocess {
        self.preprocess.clone().unwrap_or_default()
    }

    /// Height and width of an image input, from its shape and layout.
    pub fn image_size(&self) -> (usize, usize) {
        let (h, w) = match self.image_preprocess().layout {
            ImageLayout::Nchw => (self.shape[2], self.shape[3]),
            ImageLayout::Nhwc => (self.shape[1], self.shape[2]),
        };
        (h as usize, w as usize)
    }

    /// Values in the tensor.
    pub fn values(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }
}

/// One action dimension: its unit and the safety axis it drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDim {
    pub name: String,
    pub unit: String,
    /// `base_vx`, `base_vy`, `base_wz`, `gripper`, or (schema 2) `joint_position/<joint>`,
    /// `joint_velocity/<joint>` by the joint's `[safety.arm]` name.
    pub drives: String,
    /// Schema 2: the value is an offset from the state measured at the chunk's observation
    /// (openpi's and LeRobot's delta actions), not an absolute target: the backend adds the
    /// `state_sources` entry that measures what the dimension drives (`joint_position/<j>` for
    /// `joint_position/<j>`, `gripper_position` for `gripper`) to every step, after
    /// denormalization, so the safety layer only ever sees absolute targets. Default: absolute.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relative: bool,
}

/// Per-dimension statistics: mean/std or min/max (exactly one pair).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub state: Stats,
    pub action: Stats,
}

/// The envelope the policy was trained for; the runtime refuses a policy whose envelope exceeds
/// the robot's safety limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyEnvelope {
    pub max_vx_mps: f64,
    #[serde(default)]
    pub max_vy_mps: f64,
    pub max_wz_radps: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Portable ONNX model, runs anywhere ONNX Runtime does.
    Onnx,
    /// A prebuilt TensorRT engine wrapped as an ORT EP-context model.
    TensorrtEpContext,
}

/// One artifact of the package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub kind: TargetKind,
    /// Path relative to the package directory.
    pub file: String,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// `x86_64` or `aarch64` (engines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// CUDA compute capability, e.g. `87` for Orin (engines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_sm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensorrt_version: Option<String>,
    /// `fp32`, `fp16` or `int8` (engines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// The model's external data files (ONNX tensors stored beside the graph, as
    /// `onnx.save_model(..., save_as_external_data=True)` writes them; needed past 2 GB),
    /// each by its file name in the package directory (the name the graph's tensors give as
    /// their `location`) and its SHA-256. Loaded only as verified bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_data: Vec<ExternalData>,
}

/// One external data file of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalData {
    /// A plain file name in the package directory (no directories: a package is flat).
    pub file: String,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
}

impl Target {
    /// The model's identity: the graph's SHA-256, or with external data the SHA-256 of the
    /// graph's digest and every data file's name and digest (a fine-tuned model with the same
    /// graph file and other weights is another model: another digest, another engine cache).
    pub fn model_digest(&self) -> String {
        if self.external_data.is_empty() {
            return self.sha256.clone();
        }
        let mut text = format!("onnx {}\n", self.sha256);
        for data in &self.external_data {
            text.push_str(&format!("data {} {}\n", data.file, data.sha256));
        }
        sha256_bytes(text.as_bytes())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

/// Golden input/output pairs, stored in a JSON file of the package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Golden {
    pub file: String,
    pub sha256: String,
    pub tolerance: Tolerance,
}

/// `policy.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyManifest {
    pub schema_version: u32,
    pub name: String,
    /// Semantic version, `MAJOR.MINOR.PATCH[-PRE]`.
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub inputs: Vec<InputSpec>,
    /// The action chunk, float32 `[1, H, A]`, first; schema 2 may declare further outputs the
    /// model computes (e.g. a value estimate), checked against the model and not used.
    pub outputs: Vec<TensorSpec>,
    pub action_space: Vec<ActionDim>,
    pub normalization: Normalization,
    pub control_rate_hz: f64,
    pub chunk_horizon_s: f64,
    pub safety_envelope: SafetyEnvelope,
    pub targets: Vec<Target>,
    pub golden: Golden,
    /// Word-level vocabulary for the instruction input: id = index; unknown words map to
    /// `<unk>` (index 1), padding is `<pad>` (index 0). Required when an instruction input exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction_vocabulary: Option<Vec<String>>,
    /// Schema 2: where each entry of the state input comes from (`joint_position/<joint>`,
    /// `joint_velocity/<joint>`, `gripper_position`, `base_vx`, `base_vy`, `base_wz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_sources: Option<Vec<String>>,
    /// Schema 2: the known instructions and their embeddings, required with (and only with) an
    /// `instruction_embedding` input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction_embeddings: Option<InstructionEmbeddings>,
}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> PackageError {
    PackageError::Field {
        file: PathBuf::from(MANIFEST_FILE),
        field: field.into(),
        problem: problem.into(),
    }
}

fn check_semver(version: &str) -> bool {
    let (core, pre) = version.split_once('-').unwrap_or((version, ""));
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && (version.len() == core.len()
            || (!pre.is_empty()
                && pre
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')))
}

/// The state source a relative action dimension is an offset from (`None`: it cannot be
/// relative).
fn relative_reference(drives: &str) -> Option<String> {
    match drives.split_once('/') {
        Some(("joint_position", joint)) => Some(format!("joint_position/{joint}")),
        _ if drives == "gripper" => Some("gripper_position".into()),
        _ => None,
    }
}

fn check_relative(field: &str, file: &str) -> Result<(), PackageError> {
    let path = Path::new(file);
    let inside = !file.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("`{file}` must be a relative path inside the package (no `..`, not absolute)"),
        ))
    }
}

fn check_sha256(field: &str, digest: &str) -> Result<(), PackageError> {
    if digest.len() == 64
        && digest
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("`{digest}` is not 64 lowercase hex digits (sha256sum output)"),
        ))
    }
}

fn check_stats(field: &str, stats: &Stats, dims: usize) -> Result<(), PackageError> {
    let pair = match (&stats.mean, &stats.std, &stats.min, &stats.max) {
        (Some(mean), Some(std), None, None) => {
            if let Some(i) = std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(field_error(
                    format!("{field}.std[{i}]"),
                    format!("must be finite and > 0, got {}", std[i]),
                ));
            }
            (mean, std, "mean", "std")
        }
        (None, None, Some(min), Some(max)) => {
            if let Some(i) = (0..min.len().min(max.len()))
                .find(|&i| min[i].partial_cmp(&max[i]) != Some(std::cmp::Ordering::Less))
            {
                return Err(field_error(
                    format!("{field}.min[{i}]"),
                    format!("min must be < max, got {} and {}", min[i], max[i]),
                ));
            }
            (min, max, "min", "max")
        }
        _ => {
            return Err(field_error(
                field,
                "missing normalization statistics: give either `mean` and `std` or `min` and `max`",
            ));
        }
    };
    for (values, name) in [(pair.0, pair.2), (pair.1, pair.3)] {
        if values.len() != dims {
            return Err(field_error(
                format!("{field}.{name}"),
                format!(
                    "has {} entries, the tensor has {dims} dimensions",
                    values.len()
                ),
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(field_error(
                format!("{field}.{name}[{i}]"),
                "is not a finite number",
            ));
        }
    }
    Ok(())
}

/// Schema 1's state entries: the base velocity.
const SCHEMA_1_STATE: [&str; 3] = ["base_vx", "base_vy", "base_wz"];

impl PolicyManifest {
    /// Parses `policy.json` text; unknown fields are refused.
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let manifest: PolicyManifest =
            serde_json::from_str(text).map_err(|e| PackageError::Parse {
                file: PathBuf::from(MANIFEST_FILE),
                problem: e.to_string(),
            })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Chunk horizon in control steps, H.
    pub fn horizon_steps(&self) -> usize {
        (self.chunk_horizon_s * self.control_rate_hz).round() as usize
    }

    /// Token ids of `text` for the instruction input: lowercase words looked up in the
    /// vocabulary (`<unk>` otherwise), truncated or padded with `<pad>` to `out.len()`.
    pub fn tokenize(&self, text: &str, out: &mut [i64]) {
        out.fill(0);
        let Some(vocab) = &self.instruction_vocabulary else {
            return;
        };
        for (slot, word) in out.iter_mut().zip(text.split_whitespace()) {
            let word = word
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase();
            *slot = vocab.iter().position(|v| *v == word).unwrap_or(1) as i64;
        }
    }

    /// The row of `instruction_embeddings` for `text` ([`normalize_instruction`]), if the
    /// package knows it.
    pub fn instruction_id(&self, text: &str) -> Option<usize> {
        let known = &self.instruction_embeddings.as_ref()?.instructions;
        let text = normalize_instruction(text);
        known.iter().position(|k| normalize_instruction(k) == text)
    }

    /// Length of `Observation::instruction`: the token count of a tokens input, 1 (the row)
    /// for an embedding input, 0 without an instruction input.
    pub fn instruction_len(&self) -> usize {
        if self.input(InputRole::InstructionEmbedding).is_some() {
            return 1;
        }
        self.input(InputRole::InstructionTokens)
            .map_or(0, |i| i.shape.iter().product::<i64>() as usize)
    }

    /// Writes the instruction `text` into `out` (`Observation::instruction`): token ids for a
    /// tokens input ([`Self::tokenize`]: unknown words are `<unk>`), the embedding row for an
    /// embedding input. Returns false, with `out` set to -1 (no instruction: the backend
    /// refuses to run), when the package has no embedding for `text`.
    pub fn encode_instruction(&self, text: &str, out: &mut [i64]) -> bool {
        if self.input(InputRole::InstructionEmbedding).is_none() {
            self.tokenize(text, out);
            return true;
        }
        let id = self.instruction_id(text);
        out.fill(id.map_or(-1, |i| i as i64));
        id.is_some()
    }

    /// The known instructions, for an error that names them (empty without embeddings).
    pub fn known_instructions(&self) -> String {
        self.instruction_embeddings
            .as_ref()
            .map(|e| {
                e.instructions
                    .iter()
                    .map(|i| format!("{:?}", normalize_instruction(i)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }

    /// The relative action dimensions (`action_space[].relative`) with the index of the state
    /// entry each is an offset from: `(action dimension, state entry)`. Empty when every
    /// dimension is absolute; valid after [`Self::validate`].
    pub fn relative_actions(&self) -> Vec<(usize, usize)> {
        let sources = self.state_sources();
        self.action_space
            .iter()
            .enumerate()
            .filter(|(_, dim)| dim.relative)
            .filter_map(|(i, dim)| {
                let measured = relative_reference(&dim.drives)?;
                Some((i, sources.iter().position(|s| *s == measured)?))
            })
            .collect()
    }

    /// Where each state entry comes from: `state_sources` (schema 2), or the base velocity for
    /// the first (at most three) entries of a schema 1 state (the rest stay zero).
    pub fn state_sources(&self) -> Vec<&str> {
        match &self.state_sources {
            Some(sources) => sources.iter().map(String::as_str).collect(),
            None => {
                let dims = self
                    .input(InputRole::State)
                    .map_or(0, |s| s.shape[1] as usize);
                SCHEMA_1_STATE.iter().copied().take(dims).collect()
            }
        }
    }

    /// The action targets and state sources on the robot `shape` describes (from its safety
    /// config). Refused, naming the field, when the policy drives or reads something the robot
    /// does not have, or drives one command twice.
    pub fn resolve(
        &self,
        shape: &RobotShape,
    ) -> Result<(Vec<ActionTarget>, Vec<StateSource>), PackageError> {
        let mut targets: Vec<ActionTarget> = Vec::with_capacity(self.action_space.len());
        for (i, dim) in self.action_space.iter().enumerate() {
            let field = format!("action_space[{i}].drives");
            let target = ActionTarget::resolve(&dim.drives, shape).map_err(|e| {
                field_error(&field, format!("{e}; fix the package or the robot config"))
            })?;
            if targets.contains(&target) {
                return Err(field_error(
                    field,
                    format!(
                        "`{}` drives a command an earlier dimension already drives",
                        dim.drives
                    ),
                ));
            }
            targets.push(target);
        }
        // Schema 1 states are the base velocity, zero on a robot without a base.
        let shape1;
        let state_shape = if self.state_sources.is_none() {
            shape1 = RobotShape {
                has_base: true,
                ..shape.clone()
            };
            &shape1
        } else {
            shape
        };
        let sources = self
            .state_sources()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                StateSource::resolve(s, state_shape).map_err(|e| {
                    field_error(
                        format!("state_sources[{i}]"),
                        format!("{e}; fix the package or the robot config"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((targets, sources))
    }

    /// The first part of the I/O contract (inputs, outputs, rate, horizon, action space, state
    /// sources, vocabulary) in which `other` differs from `self`, named as its `policy.json`
    /// field: a running loop cannot take a model with another contract (hot swap).
    /// A noise input's `generator` is not part of it: each loaded model draws from its own.
    pub fn contract_difference(&self, other: &PolicyManifest) -> Option<&'static str> {
        let same_input = |a: &InputSpec, b: &InputSpec| {
            InputSpec {
                generator: None,
                ..a.clone()
            } == InputSpec {
                generator: None,
                ..b.clone()
            }
        };
        if self.inputs.len() != other.inputs.len()
            || !self
                .inputs
                .iter()
                .zip(&other.inputs)
                .all(|(a, b)| same_input(a, b))
        {
            Some("inputs")
        } else if self.outputs != other.outputs {
            Some("outputs")
        } else if self.control_rate_hz != other.control_rate_hz {
            Some("control_rate_hz")
        } else if self.horizon_steps() != other.horizon_steps() {
            Some("chunk_horizon_s")
        } else if self.action_space != other.action_space {
            Some("action_space")
        } else if self.state_sources() != other.state_sources() {
            Some("state_sources")
        } else if self.instruction_vocabulary != other.instruction_vocabulary {
            Some("instruction_vocabulary")
        } else if self
            .instruction_embeddings
            .as_ref()
            .map(|e| &e.instructions)
            != other
                .instruction_embeddings
                .as_ref()
                .map(|e| &e.instructions)
        {
            // The robot's instruction is held as a row of this list: another list would
            // silently give the new model another instruction's embedding.
            Some("instruction_embeddings.instructions")
        } else {
            None
        }
    }

    /// The input with `role`, if any (the first image input for `Image`).
    pub fn input(&self, role: InputRole) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.role == role)
    }

    /// The image inputs, in input order (the order of `Observation::images`).
    pub fn image_inputs(&self) -> impl Iterator<Item = &InputSpec> {
        self.inputs.iter().filter(|i| i.role == InputRole::Image)
    }

    /// `inputs[i].preprocess`: schema 2 image inputs only; three channels where the layout
    /// puts them; mean/std for float32 only, std > 0.
    fn check_preprocess(&self, i: usize, input: &InputSpec) -> Result<(), PackageError> {
        let field = |f: &str| format!("inputs[{i}].{f}");
        if input.role != InputRole::Image {
            return match input.preprocess {
                Some(_) => Err(field_error(
                    field("preprocess"),
                    "only image inputs have a preprocess",
                )),
                None => Ok(()),
            };
        }
        if input.preprocess.is_some() && self.schema_version < 2 {
            return Err(field_error(
                field("preprocess"),
                "needs schema_version 2 (schema 1 images are NCHW, nearest neighbour, stretched)",
            ));
        }
        let p = input.image_preprocess();
        let channels = match p.layout {
            ImageLayout::Nchw => input.shape[1],
            ImageLayout::Nhwc => input.shape[3],
        };
        if channels != 3 {
            return Err(field_error(
                field("shape"),
                format!(
                    "{:?}: a {:?} image input has 3 (RGB) channels at axis {}; fix the shape or `preprocess.layout`",
                    input.shape,
                    p.layout,
                    if p.layout == ImageLayout::Nchw { 1 } else { 3 }
                ),
            ));
        }
        for (name, values) in [("mean", p.mean), ("std", p.std)] {
            let Some(values) = values else { continue };
            if input.dtype != Dtype::Float32 {
                return Err(field_error(
                    field(&format!("preprocess.{name}")),
                    "a uint8 image input takes the camera's bytes; normalization needs dtype float32",
                ));
            }
            if let Some(c) = values
                .iter()
                .position(|v| !v.is_finite() || (name == "std" && *v <= 0.0))
            {
                return Err(field_error(
                    field(&format!("preprocess.{name}[{c}]")),
                    format!(
                        "must be finite{}, got {}",
                        if name == "std" { " and > 0" } else { "" },
                        values[c]
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `instruction_embeddings`: given exactly when an `instruction_embedding` input is, not
    /// beside instruction tokens, a plain file name of its own, at least one instruction, each
    /// non-empty and distinct as matched.
    fn check_instruction_embeddings(&self) -> Result<(), PackageError> {
        let input = self.input(InputRole::InstructionEmbedding);
        let table = match (input, &self.instruction_embeddings) {
            (None, None) => return Ok(()),
            (Some(input), None) => {
                return Err(field_error(
                    "instruction_embeddings",
                    format!(
                        "input `{}` takes an instruction embedding, so the package must list its instructions and their embeddings: {{\"file\": \"instructions.npy\", \"sha256\": \"…\", \"instructions\": [\"…\"]}}",
                        input.name
                    ),
                ));
            }
            (None, Some(_)) => {
                return Err(field_error(
                    "instruction_embeddings",
                    "no input has role `instruction_embedding`; remove the field or add the input",
                ));
            }
            (Some(_), Some(table)) => table,
        };
        if let Some(tokens) = self.input(InputRole::InstructionTokens) {
            return Err(field_error(
                format!("inputs (`{}`)", tokens.name),
                "a policy takes its instruction as tokens or as an embedding, not both",
            ));
        }
        let file = &table.file;
        let plain = !file.is_empty() && !file.contains(['/', '\\']) && file != "." && file != "..";
        if !plain {
            return Err(field_error(
                "instruction_embeddings.file",
                format!(
                    "`{file}` must be a plain file name in the package directory (a package is flat)"
                ),
            ));
        }
        let taken = *file == MANIFEST_FILE
            || *file == self.golden.file
            || self
                .targets
                .iter()
                .any(|t| t.file == *file || t.external_data.iter().any(|d| d.file == *file));
        if taken {
            return Err(field_error(
                "instruction_embeddings.file",
                format!("`{file}` is already another file of the package"),
            ));
        }
        check_sha256("instruction_embeddings.sha256", &table.sha256)?;
        if table.instructions.is_empty() {
            return Err(field_error(
                "instruction_embeddings.instructions",
                "is empty: list the instructions the embeddings were computed for",
            ));
        }
        for (i, text) in table.instructions.iter().enumerate() {
            let field = format!("instruction_embeddings.instructions[{i}]");
            let norm = normalize_instruction(text);
            if norm.is_empty() {
                return Err(field_error(field, "has no words"));
            }
            if let Some(j) = table.instructions[..i]
                .iter()
                .position(|o| normalize_instruction(o) == norm)
            {
                return Err(field_error(
                    field,
                    format!("{text:?} is instruction {j} again (matched as {norm:?})"),
                ));
            }
        }
        Ok(())
    }

    /// Field-by-field checks (stage 2).
    pub fn validate(&self) -> Result<(), PackageError> {
        if !SCHEMA_VERSIONS.contains(&self.schema_version) {
            return Err(field_error(
                "schema_version",
                format!(
                    "this reflex reads schemas {SCHEMA_VERSIONS:?}, the package has {}; repack it with a matching `reflex pack`",
                    self.schema_version
                ),
            ));
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        {
            return Err(field_error(
                "name",
                format!(
                    "`{}` must be non-empty lowercase letters, digits, `-`, `_`, `.`",
                    self.name
                ),
            ));
        }
        if !check_semver(&self.version) {
            return Err(field_error(
                "version",
                format!("`{}` is not a semantic version like 1.2.3", self.version),
            ));
        }
        if !(self.control_rate_hz.is_finite() && self.control_rate_hz > 0.0) {
            return Err(field_error(
                "control_rate_hz",
                "must be a finite number > 0",
            ));
        }
        if !(self.chunk_horizon_s.is_finite() && self.chunk_horizon_s > 0.0) {
            return Err(field_error(
                "chunk_horizon_s",
                "must be a finite number > 0",
            ));
        }
        for (i, input) in self.inputs.iter().enumerate() {
            let field = |f: &str| format!("inputs[{i}].{f}");
            if self.inputs[..i].iter().any(|o| o.name == input.name) {
                return Err(field_error(
                    field("name"),
                    format!("`{}` appears twice", input.name),
                ));
            }
            let several_cameras = input.role == InputRole::Image && self.schema_version >= 2;
            if !several_cameras && self.inputs[..i].iter().any(|o| o.role == input.role) {
                return Err(field_error(
                    field("role"),
                    if input.role == InputRole::Image {
                        "schema 1 takes one image input; give a policy with several cameras schema_version 2"
                    } else {
                        "each role may appear once (several inputs only for role `image`)"
                    },
                ));
            }
            if input.shape.is_empty() || input.shape.iter().any(|&d| d <= 0) {
                return Err(field_error(
                    field("shape"),
                    format!(
                        "{:?}: every dimension must be > 0 (fixed shapes only)",
                        input.shape
                    ),
                ));
            }
            let (dtypes, rank): (&[Dtype], usize) = match input.role {
                InputRole::Image => (&[Dtype::Uint8, Dtype::Float32], 4),
                InputRole::State => (&[Dtype::Float32], 2),
                InputRole::InstructionTokens => (&[Dtype::Int64], 2),
                // [1, D] (a pooled embedding) or [1, T, D] (one per token).
                InputRole::InstructionEmbedding => (&[Dtype::Float32], input.shape.len().max(2)),
                // Any rank of at least 2 (e.g. [1, H, A] for a flow-matching head).
                InputRole::Noise => (&[Dtype::Float32], input.shape.len().max(2)),
            };
            if !dtypes.contains(&input.dtype) {
                return Err(field_error(
                    field("dtype"),
                    format!(
                        "{:?} is not allowed for role {:?}; use one of {dtypes:?}",
                        input.dtype, input.role
                    ),
                ));
            }
            if input.shape.len() != rank || input.shape[0] != 1 {
                return Err(field_error(
                    field("shape"),
                    format!(
                        "{:?}: role {:?} needs rank {rank} with batch 1",
                        input.shape, input.role
                    ),
                ));
            }
            self.check_preprocess(i, input)?;
            match (input.role, &input.generator) {
                (InputRole::Noise, _) if self.schema_version < 2 => {
                    return Err(field_error(field("role"), "`noise` needs schema_version 2"));
                }
                (InputRole::InstructionEmbedding, _) if self.schema_version < 2 => {
                    return Err(field_error(
                        field("role"),
                        "`instruction_embedding` needs schema_version 2",
                    ));
                }
                (InputRole::Noise, None) => {
                    return Err(field_error(
                        field("generator"),
                        "a noise input needs its generator, e.g. {\"distribution\": \"standard_normal\", \"seed\": 0}",
                    ));
                }
                (InputRole::Noise, Some(_)) | (_, None) => {}
                (_, Some(_)) => {
                    return Err(field_error(
                        field("generator"),
                        "only noise inputs have a generator",
                    ));
                }
            }
        }
        let Some(state) = self.input(InputRole::State) else {
            return Err(field_error("inputs", "no input has role `state`"));
        };
        let output = match self.outputs.as_slice() {
            [] => {
                return Err(field_error(
                    "outputs",
                    "is empty: the action chunk comes first",
                ));
            }
            [output] => output,
            [output, ..] if self.schema_version >= 2 => output,
            _ => {
                return Err(field_error(
                    "outputs",
                    format!(
                        "schema 1 has exactly one output (the action chunk), got {}; further outputs need schema_version 2",
                        self.outputs.len()
                    ),
                ));
            }
        };
        for (i, extra) in self.outputs.iter().enumerate().skip(1) {
            if self.outputs[..i].iter().any(|o| o.name == extra.name)
                || self.inputs.iter().any(|o| o.name == extra.name)
            {
                return Err(field_error(
                    format!("outputs[{i}].name"),
                    format!("`{}` is already the name of an input or output", extra.name),
                ));
            }
        }
        let a = self.action_space.len();
        let h = self.horizon_steps();
        if output.dtype != Dtype::Float32 || output.shape != [1, h as i64, a as i64] {
            return Err(field_error(
                "outputs[0].shape",
                format!(
                    "{:?} {:?}: the action chunk must be float32 [1, H, A] = [1, {h}, {a}] (H = chunk_horizon_s × control_rate_hz, A = action_space entries)",
                    output.dtype, output.shape
                ),
            ));
        }
        if a == 0 {
            return Err(field_error("action_space", "is empty"));
        }
        for (i, dim) in self.action_space.iter().enumerate() {
            let named = dim.drives.contains('/');
            if !ActionTarget::is_spelling(&dim.drives) || (named && self.schema_version < 2) {
                return Err(field_error(
                    format!("action_space[{i}].drives"),
                    format!(
                        "`{}` is not a safety axis: base_vx, base_vy, base_wz, gripper, or (schema 2) joint_position/<joint> and joint_velocity/<joint> with the joint's [safety.arm] name",
                        dim.drives
                    ),
                ));
            }
            if self.schema_version == 1 && !dim.drives.starts_with("base_") {
                return Err(field_error(
                    format!("action_space[{i}].drives"),
                    format!(
                        "`{}`: a schema 1 policy sees only the base velocity as its state, so it may drive only base axes; give the arm policy schema_version 2 with `state_sources`",
                        dim.drives
                    ),
                ));
            }
            if self.action_space[..i]
                .iter()
                .any(|d| d.drives == dim.drives)
            {
                return Err(field_error(
                    format!("action_space[{i}].drives"),
                    format!("`{}` is driven twice", dim.drives),
                ));
            }
        }
        match (&self.state_sources, self.schema_version) {
            (Some(_), 1) => {
                return Err(field_error(
                    "state_sources",
                    "needs schema_version 2 (schema 1 states are the base velocity)",
                ));
            }
            (None, 2) => {
                return Err(field_error(
                    "state_sources",
                    format!(
                        "schema 2 needs one source per state entry ({} for input `{}`), e.g. \"joint_position/shoulder\"",
                        state.shape[1], state.name
                    ),
                ));
            }
            (Some(sources), _) => {
                if sources.len() != state.shape[1] as usize {
                    return Err(field_error(
                        "state_sources",
                        format!(
                            "has {} entries, input `{}` has {} state values",
                            sources.len(),
                            state.name,
                            state.shape[1]
                        ),
                    ));
                }
                for (i, source) in sources.iter().enumerate() {
                    if !StateSource::is_spelling(source) {
                        return Err(field_error(
                            format!("state_sources[{i}]"),
                            format!(
                                "`{source}` is not a state source: base_vx, base_vy, base_wz, joint_position/<joint>, joint_velocity/<joint> or gripper_position"
                            ),
                        ));
                    }
                    if sources[..i].contains(source) {
                        return Err(field_error(
                            format!("state_sources[{i}]"),
                            format!("`{source}` appears twice"),
                        ));
                    }
                }
            }
            (None, _) => {}
        }
        let sources = self.state_sources();
        for (i, dim) in self
            .action_space
            .iter()
            .enumerate()
            .filter(|(_, d)| d.relative)
        {
            let field = format!("action_space[{i}].relative");
            if self.schema_version < 2 {
                return Err(field_error(
                    field,
                    "needs schema_version 2 (a schema 1 state holds no measured position to add)",
                ));
            }
            let Some(measured) = relative_reference(&dim.drives) else {
                return Err(field_error(
                    field,
                    format!(
                        "`{}` cannot be relative: only joint_position/<joint> and gripper targets are offsets from a measured position (a velocity is never relative)",
                        dim.drives
                    ),
                ));
            };
            if !sources.contains(&measured.as_str()) {
                return Err(field_error(
                    field,
                    format!(
                        "`{}` is an offset from `{measured}`, which is not among state_sources ({}): add it, or make the dimension absolute",
                        dim.drives,
                        sources.join(", ")
                    ),
                ));
            }
        }
        check_stats(
            "normalization.state",
            &self.normalization.state,
            state.shape[1] as usize,
        )?;
        check_stats("normalization.action", &self.normalization.action, a)?;
        let e = &self.safety_envelope;
        for (name, v) in [
            ("max_vx_mps", e.max_vx_mps),
            ("max_vy_mps", e.max_vy_mps),
            ("max_wz_radps", e.max_wz_radps),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(field_error(
                    format!("safety_envelope.{name}"),
                    "must be a finite number >= 0",
                ));
            }
        }
        if !self.targets.iter().any(|t| t.kind == TargetKind::Onnx) {
            return Err(field_error(
                "targets",
                "no portable `onnx` target: every package needs one",
            ));
        }
        for (i, target) in self.targets.iter().enumerate() {
            check_relative(&format!("targets[{i}].file"), &target.file)?;
            check_sha256(&format!("targets[{i}].sha256"), &target.sha256)?;
            for (j, data) in target.external_data.iter().enumerate() {
                let field = format!("targets[{i}].external_data[{j}]");
                let plain = !data.file.is_empty()
                    && data.file != "."
                    && data.file != ".."
                    && !data.file.contains(['/', '\\']);
                if !plain {
                    return Err(field_error(
                        format!("{field}.file"),
                        format!(
                            "`{}` must be a plain file name in the package directory (no directories)",
                            data.file
                        ),
                    ));
                }
                let taken = data.file == crate::MANIFEST_FILE
                    || data.file == self.golden.file
                    || self.targets.iter().any(|t| t.file == data.file)
                    || target.external_data[..j]
                        .iter()
                        .any(|d| d.file == data.file);
                if taken {
                    return Err(field_error(
                        format!("{field}.file"),
                        format!("`{}` is already another file of the package", data.file),
                    ));
                }
                check_sha256(&format!("{field}.sha256"), &data.sha256)?;
            }
            if target.kind == TargetKind::TensorrtEpContext
                && (target.arch.is_none()
                    || target.gpu_sm.is_none()
                    || target.tensorrt_version.is_none()
                    || target.precision.is_none())
            {
                return Err(field_error(
                    format!("targets[{i}]"),
                    "a tensorrt_ep_context target needs arch, gpu_sm, tensorrt_version and precision",
                ));
            }
        }
        if let Some(tokens) = self.input(InputRole::InstructionTokens) {
            match &self.instruction_vocabulary {
                Some(v) if v.len() >= 2 && v[0] == "<pad>" && v[1] == "<unk>" => {}
                _ => {
                    return Err(field_error(
                        "instruction_vocabulary",
                        format!(
                            "input `{}` takes instruction tokens, so a vocabulary starting with \"<pad>\", \"<unk>\" is required",
                            tokens.name
                        ),
                    ));
                }
            }
        }
        self.check_instruction_embeddings()?;
        check_relative("golden.file", &self.golden.file)?;
        check_sha256("golden.sha256", &self.golden.sha256)?;
        let t = self.golden.tolerance;
        if !(t.abs.is_finite() && t.abs >= 0.0 && t.rel.is_finite() && t.rel >= 0.0) {
            return Err(field_error(
                "golden.tolerance",
                "abs and rel must be finite and >= 0",
            ));
        }
        Ok(())
    }
}

/// Lowercase hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
