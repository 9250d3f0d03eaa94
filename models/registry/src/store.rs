//! The local content-addressed store: blobs under `blobs/sha256/<hex>`, each written to a
//! temporary file, fsynced, digest-checked and only then renamed into place; pulled packages
//! materialized under `packages/<manifest hex>/`, also built in a temporary directory and
//! renamed, so nothing half-written is ever found by its final name.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::oci::{ImageIndex, ImageManifest, Layout};
use crate::{PackageError, PolicyPackage};
use reflex_policy::EngineHost;
use reflex_policy::sha256_bytes;

/// A pulled, verified package.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub package: PolicyPackage,
    pub index_digest: String,
    pub manifest_digest: String,
    /// `onnx` or `tensorrtepcontext`.
    pub target: String,
}

impl Pulled {
    /// `package`, materialized from the manifest `chosen` of the index `index_digest`.
    pub fn new(
        package: PolicyPackage,
        index_digest: String,
        chosen: &crate::oci::Descriptor,
    ) -> Self {
        Self {
            package,
            index_digest,
            manifest_digest: chosen.digest.clone(),
            target: chosen
                .annotations
                .get("vnd.reflex.target")
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// The store directory.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        file: file.to_path_buf(),
        source,
    }
}

impl Store {
    pub fn open(root: &Path) -> Result<Self, PackageError> {
        for sub in ["blobs/sha256", "packages", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).map_err(io_err(root))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Path of a stored blob.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Stores `bytes` as `digest`: temporary file → fsync → digest check → rename.
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, PackageError> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(dest);
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.partial", digest.trim_start_matches("sha256:")));
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        let actual = format!("sha256:{}", sha256_bytes(bytes));
        if actual != digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(PackageError::Digest {
                file: dest,
                expected: digest.trim_start_matches("sha256:").into(),
                actual: actual.trim_start_matches("sha256:").into(),
            });
        }
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        sync_dir(&self.root.join("blobs/sha256"))?;
        Ok(dest)
    }

    /// Pulls `tag` from `layout`: picks the artifact for this host (`host`: the TensorRT engine
    /// host, if any), checks every digest, stores the blobs and materializes the package.
    pub fn pull_layout(
        &self,
        layout: &Layout,
        tag: &str,
        host: Option<&EngineHost<'_>>,
    ) -> Result<Pulled, PackageError> {
        let index_desc = layout.resolve(tag)?;
        let index: ImageIndex = serde_json::from_slice(&layout.read_blob(&index_desc)?)
            .map_err(|e| parse(&layout.root, e))?;
        let chosen = choose_manifest(&index, host, &layout.root.join("index.json"), tag)?;
        let manifest_bytes = layout.read_blob(chosen)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| parse(&layout.root, e))?;
        self.put_blob(&chosen.digest, &manifest_bytes)?;
        for layer in &manifest.layers {
            if !self.blob_path(&layer.digest).exists() {
                self.put_blob(&layer.digest, &layout.read_blob(layer)?)?;
            }
        }
        let package = self.materialize(&chosen.digest, &manifest)?;
        Ok(Pulled::new(package, index_desc.digest, chosen))
    }

    /// Deletes every package and blob not reachable from `keep` (manifest and index digests,
    /// e.g. [`crate::activation::Activation::keep_set`]) and abandoned build directories.
    /// Partial downloads stay (the next pull resumes them). Returns (packages, blobs) removed.
    pub fn gc(&self, keep: &[String]) -> Result<(usize, usize), PackageError> {
        let mut live: std::collections::BTreeSet<String> = keep
            .iter()
            .map(|d| d.trim_start_matches("sha256:").to_string())
            .collect();
        for digest in keep {
            let Ok(bytes) = std::fs::read(self.blob_path(digest)) else {
                continue;
            };
            if let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) {
                for d in std::iter::once(&m.config).chain(&m.layers) {
                    live.insert(d.digest.trim_start_matches("sha256:").to_string());
                }
            }
        }
        let mut removed = (0, 0);
        let packages = self.root.join("packages");
        for entry in std::fs::read_dir(&packages)
            .map_err(io_err(&packages))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if !live.contains(&name) {
                std::fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
                removed.0 += 1;
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for entry in std::fs::read_dir(&blobs).map_err(io_err(&blobs))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !live.contains(&name) {
                std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
                removed.1 += 1;
            }
        }
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".building") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        sync_dir(&packages)?;
        sync_dir(&blobs)?;
        Ok(removed)
    }

    /// Builds `packages/<manifest hex>/` from stored (already digest-checked) blobs, in a
    /// temporary directory renamed into place; hard links where the file system allows.
    pub fn materialize(
        &self,
        manifest_digest: &str,
        manifest: &ImageManifest,
    ) -> Result<PolicyPackage, PackageError> {
        let hex = manifest_digest.trim_start_matches("sha256:");
        let final_dir = self.root.join("packages").join(hex);
        if !final_dir.exists() {
            let building = self.root.join("tmp").join(format!("{hex}.building"));
            let _ = std::fs::remove_dir_all(&building);
            std::fs::create_dir_all(&building).map_err(io_err(&building))?;
            for layer in &manifest.layers {
                let blob = self.blob_path(&layer.digest);
                let title = layer
                    .annotations
                    .get("org.opencontainers.image.title")
                    .filter(|t| !t.contains('/') && !t.contains("..") && !t.is_empty())
                    .ok_or_else(|| PackageError::Field {
                        file: self.blob_path(manifest_digest),
                        field: "layers[].annotations.org.opencontainers.image.title".into(),
                        problem: "a layer has no safe file name".into(),
                    })?;
                let to = building.join(title);
                if std::fs::hard_link(&blob, &to).is_err() {
                    std::fs::copy(&blob, &to).map_err(io_err(&blob))?;
                }
            }
            sync_dir(&building)?;
            std::fs::rename(&building, &final_dir).map_err(io_err(&final_dir))?;
            sync_dir(&self.root.join("packages"))?;
        }
        let package = PolicyPackage::open(&final_dir)?;
        package.verify_files()?;
        Ok(package)
    }
}

/// fsync a directory, so a rename inside it survives power loss.
pub fn sync_dir(dir: &Path) -> Result<(), PackageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn parse(root: &Path, e: serde_json::Error) -> PackageError {
    PackageError::Parse {
        file: root.to_path_buf(),
        problem: e.to_string(),
    }
}

/// [`select_manifest`], or an error naming what the index offers and what this host needs.
pub fn choose_manifest<'a>(
    index: &'a ImageIndex,
    host: Option<&EngineHost<'_>>,
    file: &Path,
    what: &str,
) -> Result<&'a crate::oci::Descriptor, PackageError> {
    select_manifest(index, host).ok_or_else(|| PackageError::Field {
        file: file.to_path_buf(),
        field: what.into(),
        problem: format!(
            "no artifact for this host ({}): the index offers {:?}; publish the portable ONNX target or an engine built for this GPU/TensorRT/precision",
            host.map_or("no TensorRT".into(), |h| format!(
                "{} sm{} TensorRT {} {}",
                h.arch, h.gpu_sm, h.tensorrt_version, h.precision
            )),
            index
                .manifests
                .iter()
                .map(|m| {
                    let a = &m.annotations;
                    [
                        a.get("vnd.reflex.target").cloned().unwrap_or_default(),
                        m.platform.as_ref().map(|p| p.architecture.clone()).unwrap_or_default(),
                        a.get("vnd.reflex.gpu.sm").map(|s| format!("sm{s}")).unwrap_or_default(),
                        a.get("vnd.reflex.tensorrt.version").cloned().unwrap_or_default(),
                        a.get("vnd.reflex.precision").cloned().unwrap_or_default(),
                    ]
                    .join(" ")
                    .trim()
                    .to_string()
                })
                .collect::<Vec<_>>()
        ),
    })
}

/// The manifest for this host: an engine only for the exact arch, SM, TensorRT version and
/// precision, else the portable ONNX model; never an engine built for another GPU.
pub fn select_manifest<'a>(
    index: &'a ImageIndex,
    host: Option<&EngineHost<'_>>,
) -> Option<&'a crate::oci::Descriptor> {
    let arch = |a: &str| {
        match a {
            "aarch64" => "arm64",
            "x86_64" => "amd64",
            other => other,
        }
        .to_string()
    };
    let engine = host.and_then(|h| {
        index.manifests.iter().find(|m| {
            m.annotations.get("vnd.reflex.target").map(String::as_str) == Some("tensorrtepcontext")
                && m.platform.as_ref().map(|p| p.architecture.clone()) == Some(arch(h.arch))
                && m.annotations.get("vnd.reflex.gpu.sm").map(String::as_str) == Some(h.gpu_sm)
                && m.annotations
                    .get("vnd.reflex.tensorrt.version")
                    .map(String::as_str)
                    == Some(h.tensorrt_version)
                && m.annotations
                    .get("vnd.reflex.precision")
                    .map(String::as_str)
                    == Some(h.precision)
        })
    });
    engine.or_else(|| {
        index
            .manifests
            .iter()
            .find(|m| m.annotations.get("vnd.reflex.target").map(String::as_str) == Some("onnx"))
    })
}
