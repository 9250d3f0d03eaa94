//! The backend interface lives in `reflex-core` (the RT crate and the simulator use it without
//! ONNX Runtime); here: buffers shaped from a manifest, and the package's model info.

use crate::Dtype;
use crate::manifest::{InputRole, PolicyManifest};
use reflex_core::{ActionChunk, ImageData, Observation};

impl PolicyManifest {
    /// A zeroed observation with the shapes and dtypes of this manifest's inputs.
    pub fn observation(&self) -> Observation {
        let len = |role| {
            self.input(role)
                .map_or(0, |i| i.shape.iter().product::<i64>() as usize)
        };
        Observation {
            t_obs_ns: 0,
            images: self
                .image_inputs()
                .map(|i| match i.dtype {
                    Dtype::Uint8 => ImageData::U8(vec![0; i.values()]),
                    _ => ImageData::F32(vec![0.0; i.values()]),
                })
                .collect(),
            state: vec![0.0; len(InputRole::State)],
            // Tokens start as padding; an embedding row as -1, no instruction yet (the backend
            // refuses to run until one the package knows is given).
            instruction: if self.input(InputRole::InstructionEmbedding).is_some() {
                vec![-1]
            } else {
                vec![0; len(InputRole::InstructionTokens)]
            },
        }
    }

    /// A zeroed action chunk of this manifest's horizon × action dimensions.
    pub fn action_chunk(&self) -> ActionChunk {
        ActionChunk::new(self.horizon_steps(), self.action_space.len())
    }
}

impl crate::PolicyPackage {
    /// What the metrics endpoint says about this package when it runs as `generation`.
    pub fn model_info(&self, generation: u32) -> reflex_core::metrics::ModelInfo {
        reflex_core::metrics::ModelInfo {
            name: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            digest: self.model_digest().to_string(),
            generation,
        }
    }
}
