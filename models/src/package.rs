//! A policy package directory: `policy.json` plus the files it lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::{InputRole, MANIFEST_FILE, PolicyManifest, Target, TargetKind, sha256_file};
use crate::{Dtype, PackageError};

/// An opened (parsed and validated, not yet verified) package.
#[derive(Debug, Clone)]
pub struct PolicyPackage {
    pub dir: PathBuf,
    pub manifest: PolicyManifest,
}

/// What a prebuilt TensorRT engine must match to run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineHost<'a> {
    pub arch: &'a str,
    pub gpu_sm: &'a str,
    pub tensorrt_version: &'a str,
    pub precision: &'a str,
}

/// One golden pair: raw model inputs (already normalized) and the expected raw output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenPair {
    #[serde(default)]
    pub note: String,
    /// Input name → flat values (u8 and i64 inputs are stored as JSON integers).
    pub inputs: BTreeMap<String, Vec<f64>>,
    /// Output name → flat values.
    pub outputs: BTreeMap<String, Vec<f32>>,
}

/// Result of a golden check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoldenReport {
    pub pairs: usize,
    pub max_abs_error: f32,
}

impl PolicyPackage {
    /// Reads and validates `dir/policy.json`. Files are not hashed yet (see `verify_files`).
    pub fn open(dir: &Path) -> Result<Self, PackageError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| PackageError::Io {
            file: path.clone(),
            source,
        })?;
        let manifest = PolicyManifest::parse(&text).map_err(|e| with_file(e, &path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The artifact to run on this host: a TensorRT EP-context engine only when its arch, GPU
    /// SM, TensorRT version and precision all match (an engine for another GPU never loads),
    /// else the portable ONNX model. `host` is `None` when no TensorRT is in use.
    pub fn select_target(&self, host: Option<&EngineHost<'_>>) -> &Target {
        let engine = host.and_then(|h| {
            self.manifest.targets.iter().find(|t| {
                t.kind == TargetKind::TensorrtEpContext
                    && t.arch.as_deref() == Some(h.arch)
                    && t.gpu_sm.as_deref() == Some(h.gpu_sm)
                    && t.tensorrt_version.as_deref() == Some(h.tensorrt_version)
                    && t.precision.as_deref() == Some(h.precision)
            })
        });
        engine.unwrap_or_else(|| {
            self.manifest
                .targets
                .iter()
                .find(|t| t.kind == TargetKind::Onnx)
                .expect("validated: an onnx target exists")
        })
    }

    /// The portable ONNX model file.
    pub fn onnx_path(&self) -> PathBuf {
        let target = self
            .manifest
            .targets
            .iter()
            .find(|t| t.kind == TargetKind::Onnx)
            .expect("validated: an onnx target exists");
        self.dir.join(&target.file)
    }

    /// SHA-256 of the ONNX model file as listed in the manifest (the model digest).
    pub fn model_digest(&self) -> &str {
        self.manifest
            .targets
            .iter()
            .find(|t| t.kind == TargetKind::Onnx)
            .map(|t| t.sha256.as_str())
            .unwrap_or_default()
    }

    /// Checks every listed file's sha256 against the manifest.
    pub fn verify_files(&self) -> Result<usize, PackageError> {
        let mut files: Vec<(&str, &str)> = self
            .manifest
            .targets
            .iter()
            .map(|t| (t.file.as_str(), t.sha256.as_str()))
            .collect();
        files.push((&self.manifest.golden.file, &self.manifest.golden.sha256));
        for (file, expected) in &files {
            let path = self.dir.join(file);
            let actual = sha256_file(&path).map_err(|source| PackageError::Io {
                file: path.clone(),
                source,
            })?;
            if actual != *expected {
                return Err(PackageError::Digest {
                    file: path,
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        Ok(files.len())
    }

    /// Reads the golden pairs and checks they fit the manifest's inputs and output.
    pub fn golden_pairs(&self) -> Result<Vec<GoldenPair>, PackageError> {
        let path = self.dir.join(&self.manifest.golden.file);
        let text = std::fs::read_to_string(&path).map_err(|source| PackageError::Io {
            file: path.clone(),
            source,
        })?;
        let pairs: Vec<GoldenPair> =
            serde_json::from_str(&text).map_err(|e| PackageError::Parse {
                file: path.clone(),
                problem: e.to_string(),
            })?;
        if pairs.is_empty() {
            return Err(PackageError::Field {
                file: path,
                field: "[]".into(),
                problem: "no golden pairs: a package must prove its model with at least one".into(),
            });
        }
        let output = &self.manifest.outputs[0];
        for (i, pair) in pairs.iter().enumerate() {
            for input in &self.manifest.inputs {
                let n: i64 = input.shape.iter().product();
                match pair.inputs.get(&input.name) {
                    Some(values) if values.len() as i64 == n => {
                        let integral = matches!(input.dtype, Dtype::Uint8 | Dtype::Int64);
                        if values
                            .iter()
                            .any(|v| !v.is_finite() || (integral && v.fract() != 0.0))
                        {
                            return Err(golden_field(
                                &path,
                                i,
                                &input.name,
                                "holds a value that is not a finite number of the input's dtype",
                            ));
                        }
                    }
                    Some(values) => {
                        return Err(golden_field(
                            &path,
                            i,
                            &input.name,
                            &format!("has {} values, the input has {n}", values.len()),
                        ));
                    }
                    None => return Err(golden_field(&path, i, &input.name, "is missing")),
                }
            }
            let n: i64 = output.shape.iter().product();
            match pair.outputs.get(&output.name) {
                Some(values) if values.len() as i64 == n => {}
                _ => {
                    return Err(golden_field(
                        &path,
                        i,
                        &output.name,
                        &format!("must hold the {n} output values"),
                    ));
                }
            }
        }
        Ok(pairs)
    }

    /// Whether the manifest declares an input of `role`.
    pub fn has_input(&self, role: InputRole) -> bool {
        self.manifest.input(role).is_some()
    }
}

fn golden_field(path: &Path, pair: usize, name: &str, problem: &str) -> PackageError {
    PackageError::Field {
        file: path.to_path_buf(),
        field: format!("[{pair}].{name}"),
        problem: problem.into(),
    }
}

fn with_file(err: PackageError, path: &Path) -> PackageError {
    match err {
        PackageError::Parse { problem, .. } => PackageError::Parse {
            file: path.to_path_buf(),
            problem,
        },
        PackageError::Field { field, problem, .. } => PackageError::Field {
            file: path.to_path_buf(),
            field,
            problem,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_are_chosen_only_for_the_exact_gpu_tensorrt_and_precision() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/tiny-mlp");
        let mut package = PolicyPackage::open(&dir).unwrap();
        let engine = |sm: &str, precision: &str| Target {
            kind: TargetKind::TensorrtEpContext,
            file: format!("engine_sm{sm}_{precision}.onnx"),
            sha256: "0".repeat(64),
            arch: Some("aarch64".into()),
            gpu_sm: Some(sm.into()),
            tensorrt_version: Some("10.3".into()),
            precision: Some(precision.into()),
        };
        package.manifest.targets.push(engine("87", "fp16"));
        package.manifest.targets.push(engine("110", "fp16"));
        let host = |sm, precision| EngineHost {
            arch: "aarch64",
            gpu_sm: sm,
            tensorrt_version: "10.3",
            precision,
        };
        assert_eq!(
            package.select_target(Some(&host("87", "fp16"))).file,
            "engine_sm87_fp16.onnx"
        );
        assert_eq!(
            package.select_target(Some(&host("110", "fp16"))).file,
            "engine_sm110_fp16.onnx"
        );
        // Another GPU, precision, TensorRT or arch: the portable ONNX model, never a foreign engine.
        for h in [
            host("86", "fp16"),
            host("87", "int8"),
            EngineHost {
                tensorrt_version: "10.7",
                ..host("87", "fp16")
            },
            EngineHost {
                arch: "x86_64",
                ..host("87", "fp16")
            },
        ] {
            assert_eq!(
                package.select_target(Some(&h)).kind,
                TargetKind::Onnx,
                "{h:?}"
            );
        }
        assert_eq!(package.select_target(None).kind, TargetKind::Onnx);
    }
}
