//! Shared set-up of the runtime's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use reflex_policy::{BackendConfig, PolicyPackage};
use reflex_runner::config::ReflexConfig;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ONNX Runtime library scripts/test installs; a clear failure when it is missing.
pub fn ort_library() -> PathBuf {
    let path = reflex_policy::ort_library_or_venv(&repo());
    assert!(
        path.is_file(),
        "ONNX Runtime not found at {}: run `bash scripts/test`",
        path.display()
    );
    path
}

/// The example config, the demo policy and a CPU backend config.
pub fn setup() -> (ReflexConfig, PolicyPackage, BackendConfig) {
    let config = ReflexConfig::load(&repo().join("launch/reflex.example.toml")).unwrap();
    let package = PolicyPackage::open(&repo().join("models/demo/reflex-demo-vla")).unwrap();
    let backend = BackendConfig {
        ort_library: Some(ort_library()),
        ..BackendConfig::default()
    };
    (config, package, backend)
}
