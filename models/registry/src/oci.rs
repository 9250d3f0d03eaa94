//! Policy packages as OCI 1.1 artifacts in an OCI image-layout directory: one image index per
//! version, one manifest per target, `policy.json` / model / golden file as layers; ed25519
//! signatures over the index digest stored as referrer artifacts, found through the
//! `sha256-<hex>` tag fallback. Blobs are written to a temporary file and renamed into place
//! only after their digest is known; reads check every digest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{PackageError, PolicyPackage};
use reflex_policy::{TargetKind, sha256_bytes};

pub const ARTIFACT_TYPE: &str = "application/vnd.reflex.policy.v1";
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.reflex.signature.v1";
pub const MEDIA_POLICY_JSON: &str = "application/vnd.reflex.policy.manifest.v1+json";
pub const MEDIA_ONNX: &str = "application/vnd.reflex.model.onnx.v1";
pub const MEDIA_EP_CONTEXT: &str = "application/vnd.reflex.model.trt-ep-context.v1";
pub const MEDIA_GOLDEN: &str = "application/vnd.reflex.golden.v1+json";
/// An ONNX model's external data file (`targets[].external_data`), a layer after the model.
pub const MEDIA_ONNX_DATA: &str = "application/vnd.reflex.model.onnx.external-data.v1";
/// A package's instruction embeddings (`instruction_embeddings.file`, NumPy `.npy`).
pub const MEDIA_INSTRUCTION_EMBEDDINGS: &str = "application/vnd.reflex.instruction-embeddings.v1";
pub const MEDIA_SIGNATURE: &str = "application/vnd.reflex.signature.ed25519.v1";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const TITLE: &str = "org.opencontainers.image.title";

/// The index annotation with the share (0–100) of a fleet that should take this version.
pub const ROLLOUT_ANNOTATION: &str = "vnd.reflex.rollout.percent";

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    // Optional in the image spec (skopeo's index.json has none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    // Optional in the image spec (skopeo's index.json has none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        file: file.to_path_buf(),
        source,
    }
}

fn layout_err(file: &Path, problem: impl Into<String>) -> PackageError {
    PackageError::Parse {
        file: file.to_path_buf(),
        problem: problem.into(),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PackageError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// An OCI image-layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    /// Opens `root`, creating an empty layout when it does not exist yet.
    pub fn open_or_create(root: &Path) -> Result<Self, PackageError> {
        std::fs::create_dir_all(root.join("blobs/sha256")).map_err(io_err(root))?;
        let marker = root.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let empty = ImageIndex {
                schema_version: 2,
                media_type: MEDIA_INDEX.into(),
                artifact_type: None,
                manifests: Vec::new(),
                annotations: BTreeMap::new(),
            };
            write_atomic(
                &index,
                &serde_json::to_vec_pretty(&empty).expect("serializable"),
            )?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing layout.
    pub fn open(root: &Path) -> Result<Self, PackageError> {
        if !root.join("oci-layout").is_file() {
            return Err(layout_err(
                root,
                "not an OCI image layout (no oci-layout file); create one with `reflex pack DIR --out oci-layout:PATH:TAG`",
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, PackageError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| layout_err(&self.root, format!("`{digest}` is not a sha256 digest")))?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// Stores `bytes` and returns their descriptor.
    pub fn put_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, PackageError> {
        let digest = format!("sha256:{}", sha256_bytes(bytes));
        let path = self.blob_path(&digest)?;
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(Descriptor {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: BTreeMap::new(),
        })
    }

    /// Reads a blob and checks its digest and size.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, PackageError> {
        let path = self.blob_path(&desc.digest)?;
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let actual = format!("sha256:{}", sha256_bytes(&bytes));
        if actual != desc.digest || bytes.len() as u64 != desc.size {
            return Err(PackageError::Digest {
                file: path,
                expected: desc.digest.trim_start_matches("sha256:").to_string(),
                actual: actual.trim_start_matches("sha256:").to_string(),
            });
        }
        Ok(bytes)
    }

    fn index(&self) -> Result<ImageIndex, PackageError> {
        let path = self.root.join("index.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| layout_err(&path, e.to_string()))
    }

    /// Points `tag` at `desc` (replacing an existing tag), atomically.
    pub fn tag(&self, tag: &str, desc: &Descriptor) -> Result<(), PackageError> {
        let mut index = self.index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        let mut tagged = desc.clone();
        tagged.annotations.insert(REF_NAME.into(), tag.into());
        index.manifests.push(tagged);
        write_atomic(
            &self.root.join("index.json"),
            &serde_json::to_vec_pretty(&index).expect("serializable"),
        )
    }

    /// The descriptor `tag` points at.
    pub fn resolve(&self, tag: &str) -> Result<Descriptor, PackageError> {
        self.index()?
            .manifests
            .into_iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
            .map(|mut d| {
                d.annotations.remove(REF_NAME);
                d
            })
            .ok_or_else(|| {
                layout_err(
                    &self.root.join("index.json"),
                    format!("no tag `{tag}` in this layout"),
                )
            })
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
    ) -> Result<T, PackageError> {
        let bytes = self.read_blob(desc)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            layout_err(
                &self.blob_path(&desc.digest).unwrap_or_default(),
                e.to_string(),
            )
        })
    }
}

/// Packs `package` into `layout` as one image index (one manifest per target) tagged `tag`.
/// The package is verified first; returns the index descriptor.
pub fn pack(
    package: &PolicyPackage,
    layout: &Layout,
    tag: &str,
) -> Result<Descriptor, PackageError> {
    package.verify_files()?;
    let policy_path = package.dir.join(crate::MANIFEST_FILE);
    let policy_bytes = std::fs::read(&policy_path).map_err(io_err(&policy_path))?;
    let golden_path = package.dir.join(&package.manifest.golden.file);
    let golden_bytes = std::fs::read(&golden_path).map_err(io_err(&golden_path))?;
    let titled = |mut d: Descriptor, title: &str| {
        d.annotations.insert(TITLE.into(), title.into());
        d
    };
    let policy = titled(
        layout.put_blob(MEDIA_POLICY_JSON, &policy_bytes)?,
        crate::MANIFEST_FILE,
    );
    let golden = titled(
        layout.put_blob(MEDIA_GOLDEN, &golden_bytes)?,
        &package.manifest.golden.file,
    );
    // Files every target shares, after the model's layers.
    let mut shared = vec![golden];
    if let Some(table) = &package.manifest.instruction_embeddings {
        let path = package.dir.join(&table.file);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        shared.push(titled(
            layout.put_blob(MEDIA_INSTRUCTION_EMBEDDINGS, &bytes)?,
            &table.file,
        ));
    }
    let config = layout.put_blob(MEDIA_EMPTY, b"{}")?;
    let mut entries = Vec::new();
    for target in &package.manifest.targets {
        let path = package.dir.join(&target.file);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let media = match target.kind {
            TargetKind::Onnx => MEDIA_ONNX,
            TargetKind::TensorrtEpContext => MEDIA_EP_CONTEXT,
        };
        let model = titled(layout.put_blob(media, &bytes)?, &target.file);
        // Each external data file is a layer of its own: a pull fetches it, checks its digest
        // and puts it beside the model (and a version that keeps its weights reuses the blob).
        let mut data_layers = Vec::with_capacity(target.external_data.len());
        for data in &target.external_data {
            let path = package.dir.join(&data.file);
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            data_layers.push(titled(
                layout.put_blob(MEDIA_ONNX_DATA, &bytes)?,
                &data.file,
            ));
        }
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.version".into(),
            package.manifest.version.clone(),
        );
        annotations.insert(
            "vnd.reflex.target".into(),
            format!("{:?}", target.kind).to_lowercase(),
        );
        for (key, value) in [
            ("vnd.reflex.gpu.sm", &target.gpu_sm),
            ("vnd.reflex.tensorrt.version", &target.tensorrt_version),
            ("vnd.reflex.precision", &target.precision),
        ] {
            if let Some(v) = value {
                annotations.insert(key.into(), v.clone());
            }
        }
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST.into(),
            artifact_type: Some(ARTIFACT_TYPE.into()),
            config: config.clone(),
            layers: [policy.clone(), model]
                .into_iter()
                .chain(data_layers)
                .chain(shared.iter().cloned())
                .collect(),
            subject: None,
            annotations: annotations.clone(),
        };
        let mut desc = layout.put_blob(
            MEDIA_MANIFEST,
            &serde_json::to_vec(&manifest).expect("serializable"),
        )?;
        // The entries of the index carry no `artifactType` (the manifests and the index do):
        // skopeo 1.9 (Debian 12) re-serializes an index without descriptor fields it does not
        // know, which makes `skopeo copy --preserve-digests` refuse the copy.
        desc.annotations = annotations;
        desc.platform = Some(Platform {
            // A portable ONNX model runs anywhere; engines name their arch.
            architecture: match (&target.kind, target.arch.as_deref()) {
                (TargetKind::Onnx, _) => "any".into(),
                (_, Some("aarch64")) => "arm64".into(),
                (_, Some("x86_64")) => "amd64".into(),
                (_, other) => other.unwrap_or("unknown").into(),
            },
            os: "linux".into(),
        });
        entries.push(desc);
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.title".into(),
        package.manifest.name.clone(),
    );
    annotations.insert(
        "org.opencontainers.image.version".into(),
        package.manifest.version.clone(),
    );
    let index = ImageIndex {
        schema_version: 2,
        media_type: MEDIA_INDEX.into(),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        manifests: entries,
        annotations,
    };
    let mut desc = layout.put_blob(
        MEDIA_INDEX,
        &serde_json::to_vec(&index).expect("serializable"),
    )?;
    desc.artifact_type = Some(ARTIFACT_TYPE.into());
    layout.tag(tag, &desc)?;
    Ok(desc)
}

/// A new ed25519 key pair from the OS's randomness: (secret hex, public hex).
pub fn keygen() -> Result<(String, String), PackageError> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io_err(Path::new("/dev/urandom")))?;
    let key = SigningKey::from_bytes(&seed);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Ok((hex(&key.to_bytes()), hex(key.verifying_key().as_bytes())))
}

fn parse_key_hex(path: &Path, text: &str) -> Result<[u8; 32], PackageError> {
    let t = text.trim();
    if t.len() != 64 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(layout_err(
            path,
            "a key file holds 64 hex digits (from `reflex keygen`)",
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// Key id: the first 16 hex digits of sha256(public key).
pub fn key_id(public: &[u8; 32]) -> String {
    sha256_bytes(public)[..16].to_string()
}

/// Signs the artifact `tag` points at with the secret key in `key_file`; stores the signature
/// as a referrer (subject = the signed index) tagged `sha256-<hex>`.
pub fn sign(layout: &Layout, tag: &str, key_file: &Path) -> Result<Descriptor, PackageError> {
    let text = std::fs::read_to_string(key_file).map_err(io_err(key_file))?;
    let key = SigningKey::from_bytes(&parse_key_hex(key_file, &text)?);
    let subject = layout.resolve(tag)?;
    let signature = key.sign(subject.digest.as_bytes());
    let mut sig_desc = layout.put_blob(MEDIA_SIGNATURE, &signature.to_bytes())?;
    sig_desc.annotations.insert(
        "vnd.reflex.key.id".into(),
        key_id(key.verifying_key().as_bytes()),
    );
    let config = layout.put_blob(MEDIA_EMPTY, b"{}")?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.into(),
        artifact_type: Some(SIGNATURE_ARTIFACT_TYPE.into()),
        config,
        layers: vec![sig_desc],
        subject: Some(Descriptor {
            annotations: BTreeMap::new(),
            ..subject.clone()
        }),
        annotations: BTreeMap::new(),
    };
    let mut desc = layout.put_blob(
        MEDIA_MANIFEST,
        &serde_json::to_vec(&manifest).expect("serializable"),
    )?;
    desc.artifact_type = Some(SIGNATURE_ARTIFACT_TYPE.into());
    layout.tag(
        &format!("sha256-{}", subject.digest.trim_start_matches("sha256:")),
        &desc,
    )?;
    Ok(desc)
}

/// Annotates the index `tag` points at with the share of the fleet (0–100) that should take it
/// (`vnd.reflex.rollout.percent`) and re-tags it. The index digest changes: sign afterwards.
pub fn set_rollout(layout: &Layout, tag: &str, percent: f64) -> Result<Descriptor, PackageError> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(PackageError::Field {
            file: layout.root.clone(),
            field: "rollout percent".into(),
            problem: format!("{percent} is outside 0-100; give e.g. 10 for a 10% canary"),
        });
    }
    let root = layout.resolve(tag)?;
    let mut index: ImageIndex = layout.read_json(&root)?;
    index
        .annotations
        .insert(ROLLOUT_ANNOTATION.into(), percent.to_string());
    let mut desc = layout.put_blob(
        &root.media_type,
        &serde_json::to_vec(&index).expect("serializable"),
    )?;
    desc.artifact_type = root.artifact_type;
    layout.tag(tag, &desc)?;
    Ok(desc)
}

/// What `verify_signed` proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedArtifact {
    pub index_digest: String,
    pub key_id: String,
    pub blobs_checked: usize,
}

/// Checks that `tag` is a Reflex policy index whose every blob matches its digest and that it
/// carries a valid signature from a key in `trusted_keys` (files `*.pub`).
pub fn verify_signed(
    layout: &Layout,
    tag: &str,
    trusted_keys: &Path,
) -> Result<SignedArtifact, PackageError> {
    let desc = layout.resolve(tag)?;
    let index: ImageIndex = layout.read_json(&desc)?;
    if index.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(layout_err(
            &layout.root,
            format!(
                "`{tag}` is not a Reflex policy (artifactType {:?})",
                index.artifact_type
            ),
        ));
    }
    let mut blobs = 1;
    for entry in &index.manifests {
        let manifest: ImageManifest = layout.read_json(entry)?;
        blobs += 1;
        for layer in &manifest.layers {
            layout.read_blob(layer)?;
            blobs += 1;
        }
    }
    let sig_tag = format!("sha256-{}", desc.digest.trim_start_matches("sha256:"));
    let sig_desc = layout
        .resolve(&sig_tag)
        .map_err(|_| unsigned(tag, &desc.digest))?;
    let sig_manifest: ImageManifest = layout.read_json(&sig_desc)?;
    let layer = signature_layer(tag, &desc.digest, &sig_manifest)?;
    let sig_bytes = layout.read_blob(layer)?;
    let key_id = check_signature(tag, &desc.digest, &sig_bytes, trusted_keys)?;
    Ok(SignedArtifact {
        index_digest: desc.digest,
        key_id,
        blobs_checked: blobs,
    })
}

/// The error for an artifact without a signature referrer.
pub fn unsigned(what: &str, digest: &str) -> PackageError {
    PackageError::Signature(format!(
        "`{what}` ({digest}) is unsigned: no signature referrer (tag sha256-{}); sign it with `reflex sign`",
        digest.trim_start_matches("sha256:")
    ))
}

/// The signature layer of a signature referrer whose subject must be `subject`.
pub fn signature_layer<'a>(
    what: &str,
    subject: &str,
    sig_manifest: &'a ImageManifest,
) -> Result<&'a Descriptor, PackageError> {
    if sig_manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(subject) {
        return Err(PackageError::Signature(format!(
            "the signature referrer of `{what}` names another subject"
        )));
    }
    sig_manifest.layers.first().ok_or_else(|| {
        PackageError::Signature("signature artifact without a signature layer".into())
    })
}

/// Checks an ed25519 signature over `subject` (the index digest) against every `*.pub` key in
/// `trusted_keys`; returns the id of the key that signed it.
pub fn check_signature(
    what: &str,
    subject: &str,
    sig_bytes: &[u8],
    trusted_keys: &Path,
) -> Result<String, PackageError> {
    let signature = Signature::from_slice(sig_bytes)
        .map_err(|e| PackageError::Signature(format!("malformed signature: {e}")))?;
    let entries = std::fs::read_dir(trusted_keys).map_err(io_err(trusted_keys))?;
    let mut tried = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pub") {
            continue;
        }
        tried += 1;
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let public = parse_key_hex(&path, &text)?;
        let Ok(key) = VerifyingKey::from_bytes(&public) else {
            continue;
        };
        if key.verify(subject.as_bytes(), &signature).is_ok() {
            return Ok(key_id(&public));
        }
    }
    Err(PackageError::Signature(format!(
        "`{what}` ({subject}) is not signed by any of the {tried} trusted keys in {}",
        trusted_keys.display()
    )))
}
