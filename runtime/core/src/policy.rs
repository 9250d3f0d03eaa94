//! The policy interface: preallocated observations in, preallocated action chunks out. The
//! shapes come from a package's manifest (`reflex_policy::PolicyManifest::observation` and
//! `::action_chunk`); the engines implement [`PolicyBackend`] (`reflex_policy::OrtBackend`).

/// Camera image in the dtype the model declares.
#[derive(Debug, PartialEq)]
pub enum ImageData {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Clone for ImageData {
    fn clone(&self) -> Self {
        match self {
            Self::U8(v) => Self::U8(v.clone()),
            Self::F32(v) => Self::F32(v.clone()),
        }
    }

    /// In place when the dtypes match (`Vec::clone_from` keeps a large enough buffer): the
    /// robot I/O thread copies every fresh frame into the cloud link's slot without allocating.
    /// A derived `Clone` would allocate a new image every time.
    fn clone_from(&mut self, source: &Self) {
        match (self, source) {
            (Self::U8(a), Self::U8(b)) => a.clone_from(b),
            (Self::F32(a), Self::F32(b)) => a.clone_from(b),
            (this, source) => *this = source.clone(),
        }
    }
}

/// One observation, sized from the manifest once and refilled in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Observation time on the monotonic clock (ns), copied into the chunk.
    pub t_obs_ns: u64,
    /// One image per image input of the policy, in the manifest's input order, already in the
    /// input's layout, dtype and normalization (empty: the policy takes no camera).
    pub images: Vec<ImageData>,
    /// Robot state in physical units (normalized by the backend).
    pub state: Vec<f32>,
    /// Instruction token ids (see `PolicyManifest::tokenize`).
    pub instruction: Vec<i64>,
}

/// H × A actions in physical units (denormalized), row-major by step.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionChunk {
    pub t_obs_ns: u64,
    pub horizon: usize,
    pub dims: usize,
    pub actions: Vec<f32>,
    /// sha256 of the model that produced it.
    pub model_digest: String,
}

impl ActionChunk {
    /// A zeroed chunk of `horizon` steps × `dims` actions.
    pub fn new(horizon: usize, dims: usize) -> Self {
        Self {
            t_obs_ns: 0,
            horizon,
            dims,
            actions: vec![0.0; horizon * dims],
            model_digest: String::new(),
        }
    }

    /// Action `step` (0-based) as a slice of `dims` values.
    pub fn step(&self, step: usize) -> &[f32] {
        &self.actions[step * self.dims..(step + 1) * self.dims]
    }
}

/// What a loaded backend is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub backend: &'static str,
    /// Execution provider actually in use (`cpu`, `cuda`, `tensorrt`).
    pub provider: String,
    pub model_file: String,
    pub model_digest: String,
    pub intra_threads: usize,
}

/// What a backend's `warm_up` or `infer` failed with (each engine has its own error type; its
/// message starts with what failed).
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// A loaded policy. `infer` writes into a preallocated chunk. Runs on the inference worker
/// thread, never on the RT thread.
pub trait PolicyBackend: Send {
    fn describe(&self) -> BackendInfo;
    /// Runs `runs` inferences on a zero observation (first-run allocations, kernel selection).
    fn warm_up(&mut self, runs: usize) -> Result<(), BackendError>;
    /// Runs the policy on `obs`; a NaN/Inf output or a wrong-shaped observation is an error and
    /// leaves `out` untouched.
    fn infer(&mut self, obs: &Observation, out: &mut ActionChunk) -> Result<(), BackendError>;
}

impl PolicyBackend for Box<dyn PolicyBackend> {
    fn describe(&self) -> BackendInfo {
        (**self).describe()
    }
    fn warm_up(&mut self, runs: usize) -> Result<(), BackendError> {
        (**self).warm_up(runs)
    }
    fn infer(&mut self, obs: &Observation, out: &mut ActionChunk) -> Result<(), BackendError> {
        (**self).infer(obs, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_copied_into_the_buffers_already_there() {
        let source = vec![ImageData::U8(vec![7; 640]), ImageData::F32(vec![0.5; 48])];
        let mut slot = vec![ImageData::U8(vec![0; 640]), ImageData::F32(vec![0.0; 48])];
        let before: Vec<usize> = slot
            .iter()
            .map(|i| match i {
                ImageData::U8(v) => v.as_ptr() as usize,
                ImageData::F32(v) => v.as_ptr() as usize,
            })
            .collect();
        slot.clone_from(&source);
        assert_eq!(slot, source);
        let after: Vec<usize> = slot
            .iter()
            .map(|i| match i {
                ImageData::U8(v) => v.as_ptr() as usize,
                ImageData::F32(v) => v.as_ptr() as usize,
            })
            .collect();
        assert_eq!(before, after, "a new buffer was allocated");
        // Another dtype: replaced.
        slot[0].clone_from(&ImageData::F32(vec![1.0; 4]));
        assert_eq!(slot[0], ImageData::F32(vec![1.0; 4]));
    }
}
