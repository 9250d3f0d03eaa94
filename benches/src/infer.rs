//! Inference set-ups: Reflex's `OrtBackend::infer` next to a bare `ort` session on the same
//! model and inputs (ORT's own time, no wrapper), for the demo VLA and the tiny MLP.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ort::session::Session;
use ort::value::TensorRef;
use reflex_policy::{
    ActionChunk, BackendConfig, ImageData, InputRole, Observation, OrtBackend, PolicyPackage,
};

/// The demo packages, relative to the repository.
pub const MODELS: [&str; 2] = ["tiny-mlp", "reflex-demo-vla"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `$ORT_DYLIB_PATH`, else the repo's .venv (scripts/setup-python).
pub fn ort_library() -> Result<PathBuf> {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo().join(
                ".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1",
            )
        });
    anyhow::ensure!(
        path.is_file(),
        "ONNX Runtime not found at {}; {}",
        path.display(),
        reflex_policy::ORT_SETUP_HINT
    );
    Ok(path)
}

/// One model loaded twice: through Reflex and as a bare session, with one observation.
#[derive(Debug)]
pub struct InferBench {
    pub name: &'static str,
    pub backend: OrtBackend,
    pub bare: Session,
    pub obs: Observation,
    pub chunk: ActionChunk,
    package: PolicyPackage,
    state_normalized: Vec<f32>,
    /// A noise input's values (zeros: the bare run measures ORT, not the generator).
    noise: Vec<f32>,
}

impl InferBench {
    pub fn new(name: &'static str) -> Result<Self> {
        let package = PolicyPackage::open(&repo().join("models/demo").join(name))?;
        package.verify_files()?;
        let config = BackendConfig {
            ort_library: Some(ort_library()?),
            ..BackendConfig::default()
        };
        let backend = OrtBackend::load(&package, &config)?;
        let env = reflex_policy::ort_environment().context("ONNX Runtime loaded")?;
        let bare = Session::builder(env)?
            .with_intra_threads(1)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_inter_threads(1)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .commit_from_file(package.onnx_path())?;
        let mut obs = package.manifest.observation();
        for image in obs.images.iter_mut() {
            if let ImageData::U8(img) = image {
                for (i, p) in img.iter_mut().enumerate() {
                    *p = (i * 31 % 251) as u8;
                }
            }
        }
        package
            .manifest
            .tokenize("go to the red marker", &mut obs.instruction);
        for (i, s) in obs.state.iter_mut().enumerate() {
            *s = 0.1 * i as f32;
        }
        let chunk = package.manifest.action_chunk();
        let state_normalized = obs.state.clone();
        let noise = vec![
            0.0;
            package
                .manifest
                .input(reflex_policy::InputRole::Noise)
                .map_or(0, |i| i.values())
        ];
        Ok(Self {
            noise,
            name,
            backend,
            bare,
            obs,
            chunk,
            package,
            state_normalized,
        })
    }

    /// Reflex: normalize, run, check, denormalize into the chunk.
    pub fn reflex_infer(&mut self) -> Result<()> {
        self.backend.infer(&self.obs, &mut self.chunk)?;
        Ok(())
    }

    /// Bare ort: the same inputs straight into `Session::run`, output extracted, nothing else.
    pub fn bare_infer(&mut self) -> Result<f32> {
        let mut inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> = Vec::with_capacity(3);
        let mut images = self.obs.images.iter();
        for spec in &self.package.manifest.inputs {
            let shape = spec.shape.as_slice();
            let value: ort::session::SessionInputValue<'_> = match spec.role {
                InputRole::Image => match images.next() {
                    Some(ImageData::U8(d)) => {
                        TensorRef::from_array_view((shape, d.as_slice()))?.into()
                    }
                    Some(ImageData::F32(d)) => {
                        TensorRef::from_array_view((shape, d.as_slice()))?.into()
                    }
                    None => anyhow::bail!("no image"),
                },
                InputRole::State => {
                    TensorRef::from_array_view((shape, self.state_normalized.as_slice()))?.into()
                }
                InputRole::InstructionTokens => {
                    TensorRef::from_array_view((shape, self.obs.instruction.as_slice()))?.into()
                }
                InputRole::Noise => {
                    TensorRef::from_array_view((shape, self.noise.as_slice()))?.into()
                }
                InputRole::InstructionEmbedding => {
                    anyhow::bail!("the bare-ORT comparison takes no instruction embedding")
                }
            };
            inputs.push((spec.name.as_str(), value));
        }
        let outputs = self.bare.run(inputs)?;
        let (_, data) =
            outputs[self.package.manifest.outputs[0].name.as_str()].try_extract_tensor::<f32>()?;
        Ok(data[0])
    }
}
