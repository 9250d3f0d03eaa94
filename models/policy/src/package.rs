//! A policy package directory: `policy.json` plus the files it lists.

use std::collections::BTreeMap;
use std::io::Write;
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

    /// The portable ONNX model's digest ([`Target::model_digest`]: its file's SHA-256, or
    /// with external data the digest of the graph's and every data file's).
    pub fn model_digest(&self) -> String {
        self.manifest
            .targets
            .iter()
            .find(|t| t.kind == TargetKind::Onnx)
            .map(Target::model_digest)
            .unwrap_or_default()
    }

    /// Checks every listed file's sha256 against the manifest.
    pub fn verify_files(&self) -> Result<usize, PackageError> {
        let mut files: Vec<(&str, &str)> = self
            .manifest
            .targets
            .iter()
            .flat_map(|t| {
                std::iter::once((t.file.as_str(), t.sha256.as_str())).chain(
                    t.external_data
                        .iter()
                        .map(|d| (d.file.as_str(), d.sha256.as_str())),
                )
            })
            .collect();
        files.push((&self.manifest.golden.file, &self.manifest.golden.sha256));
        if let Some(e) = &self.manifest.instruction_embeddings {
            files.push((&e.file, &e.sha256));
        }
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

    /// The instruction embeddings (`instruction_embeddings`), row `i` for instruction `i`, read
    /// once, checked against their digest and the `instruction_embedding` input's shape (`None`
    /// without one). Refused, naming the file and the fix, when anything differs.
    pub fn instruction_embeddings(&self) -> Result<Option<Vec<f32>>, PackageError> {
        let (Some(table), Some(input)) = (
            &self.manifest.instruction_embeddings,
            self.manifest.input(InputRole::InstructionEmbedding),
        ) else {
            return Ok(None);
        };
        let path = self.dir.join(&table.file);
        let bytes = std::fs::read(&path).map_err(|source| PackageError::Io {
            file: path.clone(),
            source,
        })?;
        let actual = crate::manifest::sha256_bytes(&bytes);
        if actual != table.sha256 {
            return Err(PackageError::Digest {
                file: path,
                expected: table.sha256.clone(),
                actual,
            });
        }
        let refuse = |problem: String| PackageError::Field {
            file: path.clone(),
            field: "instruction_embeddings.file".into(),
            problem,
        };
        let (shape, values) = read_npy_f32(&bytes).map_err(|p| {
            refuse(format!(
                "{p}; write it with numpy: np.save(path, embeddings.astype(np.float32))"
            ))
        })?;
        let want: Vec<usize> = std::iter::once(table.instructions.len())
            .chain(input.shape[1..].iter().map(|&d| d as usize))
            .collect();
        if shape != want {
            return Err(refuse(format!(
                "holds an array of shape {shape:?}; {} instructions for input `{}` {:?} need {want:?} (one row per instruction, in the order of instruction_embeddings.instructions)",
                table.instructions.len(),
                input.name,
                input.shape
            )));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            let row = i / (values.len() / table.instructions.len()).max(1);
            return Err(refuse(format!(
                "value {i} (instruction {row}, {:?}) is {}: an embedding must be finite",
                table.instructions[row], values[i]
            )));
        }
        Ok(Some(values))
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

/// Writes a copy of the package in `src` to `dst` with another `version` and, optionally, its
/// ONNX model padded by `pad_bytes` of pseudo-random data in an unknown protobuf field (field
/// 1000 of ModelProto, which ONNX Runtime skips): the model computes exactly the same outputs,
/// but the artifact is as large as a real VLA. For transfer tests and benchmarks (a 500 MB
/// package without a 500 MB file in the repository); `policy.json` digests are rewritten.
pub fn derive_package(
    src: &Path,
    dst: &Path,
    version: &str,
    pad_bytes: u64,
) -> Result<PolicyPackage, PackageError> {
    let io = |file: &Path| {
        let file = file.to_path_buf();
        move |source| PackageError::Io { file, source }
    };
    let package = PolicyPackage::open(src)?;
    std::fs::create_dir_all(dst).map_err(io(dst))?;
    let policy_path = src.join("policy.json");
    let text = std::fs::read_to_string(&policy_path).map_err(io(&policy_path))?;
    let mut policy: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PackageError::Parse {
            file: policy_path.clone(),
            problem: e.to_string(),
        })?;
    policy["version"] = version.into();
    for entry in std::fs::read_dir(src).map_err(io(src))?.flatten() {
        let name = entry.file_name();
        if name != "policy.json" && entry.path().is_file() {
            std::fs::copy(entry.path(), dst.join(&name)).map_err(io(&entry.path()))?;
        }
    }
    if pad_bytes > 0 {
        let targets = policy["targets"]
            .as_array_mut()
            .ok_or_else(|| PackageError::Field {
                file: policy_path.clone(),
                field: "targets".into(),
                problem: "not a list".into(),
            })?;
        for target in targets.iter_mut().filter(|t| t["kind"] == "onnx") {
            let file = dst.join(target["file"].as_str().unwrap_or_default());
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .map_err(io(&file))?;
            // Key: field 1000, wire type 2 (length-delimited); then the varint length.
            let mut head = Vec::new();
            for mut v in [(1000u64 << 3) | 2, pad_bytes] {
                while v >= 0x80 {
                    head.push((v as u8) | 0x80);
                    v >>= 7;
                }
                head.push(v as u8);
            }
            f.write_all(&head).map_err(io(&file))?;
            let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ pad_bytes;
            let mut block = vec![0u8; 1 << 20];
            let mut left = pad_bytes;
            while left > 0 {
                for word in block.chunks_exact_mut(8) {
                    // xorshift64*: incompressible filler.
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
                }
                let n = left.min(block.len() as u64) as usize;
                f.write_all(&block[..n]).map_err(io(&file))?;
                left -= n as u64;
            }
            f.sync_all().map_err(io(&file))?;
            target["sha256"] = sha256_file(&file).map_err(io(&file))?.into();
        }
    }
    let out = dst.join("policy.json");
    std::fs::write(
        &out,
        serde_json::to_vec_pretty(&policy).expect("serializable"),
    )
    .map_err(io(&out))?;
    let _ = package;
    PolicyPackage::open(dst)
}

/// A NumPy `.npy` array of little-endian float32 in C order: (shape, values). The problem
/// otherwise.
pub fn read_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    let Some(rest) = bytes.strip_prefix(b"\x93NUMPY") else {
        return Err("not a NumPy .npy file (no \\x93NUMPY magic)".into());
    };
    let (header_len, start) = match rest.first() {
        Some(1) if rest.len() >= 4 => (u16::from_le_bytes([rest[2], rest[3]]) as usize, 10),
        Some(2 | 3) if rest.len() >= 6 => (
            u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize,
            12,
        ),
        _ => return Err("an .npy version this reader does not know (1, 2 and 3 are)".into()),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("a truncated or non-text .npy header")?;
    let value_of = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = value_of("descr").ok_or("the .npy header has no 'descr'")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        let shown: String = descr.chars().take_while(|&c| c != ',').collect();
        return Err(format!("holds {shown}, not little-endian float32 ('<f4')"));
    }
    if !value_of("fortran_order").is_some_and(|v| v.starts_with("False")) {
        return Err("is in Fortran order; save a C-ordered array (np.ascontiguousarray)".into());
    }
    let shape_text = value_of("shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split_once(')'))
        .map(|(inside, _)| inside)
        .ok_or("the .npy header has no 'shape'")?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("the .npy shape ({shape_text}) is not a list of sizes"))?;
    let count: usize = shape.iter().product();
    let data = &bytes[start + header_len..];
    if data.len() != count * 4 {
        return Err(format!(
            "holds {} bytes of data, shape {shape:?} of float32 needs {} (truncated?)",
            data.len(),
            count * 4
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_are_chosen_only_for_the_exact_gpu_tensorrt_and_precision() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/tiny-mlp");
        let mut package = PolicyPackage::open(&dir).unwrap();
        let engine = |sm: &str, precision: &str| Target {
            kind: TargetKind::TensorrtEpContext,
            file: format!("engine_sm{sm}_{precision}.onnx"),
            sha256: "0".repeat(64),
            arch: Some("aarch64".into()),
            gpu_sm: Some(sm.into()),
            tensorrt_version: Some("10.3".into()),
            precision: Some(precision.into()),
            external_data: vec![],
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
