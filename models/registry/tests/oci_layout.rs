//! Packing into an OCI image layout, signing and verifying.

use std::path::{Path, PathBuf};

use reflex_policy::PolicyPackage;
use reflex_registry::oci::{self, Layout};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reflex-oci-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn packed(test: &str) -> (PathBuf, Layout, oci::Descriptor) {
    let dir = scratch(test);
    let package = PolicyPackage::open(&repo().join("models/demo/reflex-demo-vla")).unwrap();
    let layout = Layout::open_or_create(&dir.join("layout")).unwrap();
    let desc = oci::pack(&package, &layout, "0.1.0").unwrap();
    (dir, layout, desc)
}

fn keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (secret, public) = oci::keygen().unwrap();
    let trusted = dir.join(format!("trusted-{name}"));
    std::fs::create_dir_all(&trusted).unwrap();
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&key, secret).unwrap();
    std::fs::write(trusted.join(format!("{name}.pub")), public).unwrap();
    (key, trusted)
}

#[test]
fn pack_writes_one_index_with_a_manifest_per_target_reproducibly() {
    let (dir, layout, desc) = packed("pack");
    assert_eq!(desc.artifact_type.as_deref(), Some(oci::ARTIFACT_TYPE));
    assert_eq!(layout.resolve("0.1.0").unwrap().digest, desc.digest);
    let index: oci::ImageIndex = serde_json::from_slice(&layout.read_blob(&desc).unwrap()).unwrap();
    assert_eq!(index.manifests.len(), 1);
    let manifest: oci::ImageManifest =
        serde_json::from_slice(&layout.read_blob(&index.manifests[0]).unwrap()).unwrap();
    let titles: Vec<_> = manifest
        .layers
        .iter()
        .map(|l| l.annotations["org.opencontainers.image.title"].as_str())
        .collect();
    assert_eq!(titles, ["policy.json", "model.onnx", "golden.json"]);
    assert_eq!(manifest.layers[1].media_type, oci::MEDIA_ONNX);
    // Same package, same digests.
    let again = Layout::open_or_create(&dir.join("again")).unwrap();
    let package = PolicyPackage::open(&repo().join("models/demo/reflex-demo-vla")).unwrap();
    assert_eq!(
        oci::pack(&package, &again, "x").unwrap().digest,
        desc.digest
    );
}

#[test]
fn a_signed_package_verifies_only_against_a_trusted_key() {
    let (dir, layout, desc) = packed("sign");
    let (key, trusted) = keys(&dir, "release");
    let (_, other) = keys(&dir, "stranger");
    let err = oci::verify_signed(&layout, "0.1.0", &trusted)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unsigned") && err.contains("reflex sign"),
        "{err}"
    );
    oci::sign(&layout, "0.1.0", &key).unwrap();
    let ok = oci::verify_signed(&layout, "0.1.0", &trusted).unwrap();
    assert_eq!(ok.index_digest, desc.digest);
    assert_eq!(ok.blobs_checked, 5);
    let err = oci::verify_signed(&layout, "0.1.0", &other)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not signed by any of the 1 trusted keys"),
        "{err}"
    );
}

#[test]
fn a_tampered_blob_is_refused() {
    let (dir, layout, _) = packed("tamper");
    let (key, trusted) = keys(&dir, "release");
    oci::sign(&layout, "0.1.0", &key).unwrap();
    // Flip a byte of the model blob in the layout's storage.
    let model = std::fs::read(repo().join("models/demo/reflex-demo-vla/model.onnx")).unwrap();
    let hex =
        reflex_policy::sha256_file(&repo().join("models/demo/reflex-demo-vla/model.onnx")).unwrap();
    let path = layout.root.join("blobs/sha256").join(&hex);
    let mut bytes = model.clone();
    bytes[10] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let err = oci::verify_signed(&layout, "0.1.0", &trusted)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("digest mismatch") && err.contains(&hex),
        "{err}"
    );
}

#[test]
fn pull_from_a_layout_verifies_and_materializes_the_package() {
    let (dir, layout, desc) = packed("pull");
    let store = reflex_registry::store::Store::open(&dir.join("store")).unwrap();
    let pulled = store.pull_layout(&layout, "0.1.0", None).unwrap();
    assert_eq!(pulled.index_digest, desc.digest);
    assert_eq!(pulled.target, "onnx");
    assert_eq!(pulled.package.verify_files().unwrap(), 2);
    assert_eq!(pulled.package.manifest.name, "reflex-demo-vla");
    // Pulling again reuses the materialized package.
    let again = store.pull_layout(&layout, "0.1.0", None).unwrap();
    assert_eq!(again.package.dir, pulled.package.dir);
    assert!(
        std::fs::read_dir(dir.join("store/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temporary files left"
    );
}

#[test]
fn a_model_with_external_data_travels_as_its_own_layer_and_arrives_whole() {
    let dir = scratch("external");
    let package = PolicyPackage::open(&repo().join("models/demo/tiny-mlp-external")).unwrap();
    let layout = Layout::open_or_create(&dir.join("layout")).unwrap();
    oci::pack(&package, &layout, "0.1.0").unwrap();
    let store = reflex_registry::store::Store::open(&dir.join("store")).unwrap();
    let pulled = store.pull_layout(&layout, "0.1.0", None).unwrap();
    let manifest: oci::ImageManifest =
        serde_json::from_slice(&std::fs::read(store.blob_path(&pulled.manifest_digest)).unwrap())
            .unwrap();
    let layers: Vec<_> = manifest
        .layers
        .iter()
        .map(|l| {
            (
                l.annotations["org.opencontainers.image.title"].as_str(),
                l.media_type.as_str(),
            )
        })
        .collect();
    assert_eq!(
        layers,
        [
            ("policy.json", oci::MEDIA_POLICY_JSON),
            ("model.onnx", oci::MEDIA_ONNX),
            ("model.onnx.data", oci::MEDIA_ONNX_DATA),
            ("golden.json", oci::MEDIA_GOLDEN),
        ]
    );
    // The installed package has the weights beside the graph, each file verified.
    assert_eq!(pulled.package.verify_files().unwrap(), 3);
    assert_eq!(pulled.package.model_digest(), package.model_digest());
    assert!(pulled.package.dir.join("model.onnx.data").is_file());
}

#[test]
fn instruction_embeddings_travel_with_the_package() {
    let dir = scratch("language");
    let package = PolicyPackage::open(&repo().join("models/demo/tiny-language")).unwrap();
    let layout = Layout::open_or_create(&dir.join("layout")).unwrap();
    oci::pack(&package, &layout, "0.1.0").unwrap();
    let store = reflex_registry::store::Store::open(&dir.join("store")).unwrap();
    let pulled = store.pull_layout(&layout, "0.1.0", None).unwrap();
    let manifest: oci::ImageManifest =
        serde_json::from_slice(&std::fs::read(store.blob_path(&pulled.manifest_digest)).unwrap())
            .unwrap();
    let last = manifest.layers.last().unwrap();
    assert_eq!(
        (
            last.annotations["org.opencontainers.image.title"].as_str(),
            last.media_type.as_str()
        ),
        ("instructions.npy", oci::MEDIA_INSTRUCTION_EMBEDDINGS)
    );
    // Installed whole: the table verifies and reads as the package's.
    assert_eq!(pulled.package.verify_files().unwrap(), 3);
    assert_eq!(
        pulled.package.instruction_embeddings().unwrap(),
        package.instruction_embeddings().unwrap()
    );
}

#[test]
fn a_tampered_layout_blob_never_reaches_the_store() {
    let (dir, layout, _) = packed("pull-tamper");
    let hex =
        reflex_policy::sha256_file(&repo().join("models/demo/reflex-demo-vla/model.onnx")).unwrap();
    let path = layout.root.join("blobs/sha256").join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let store = reflex_registry::store::Store::open(&dir.join("store")).unwrap();
    let err = store
        .pull_layout(&layout, "0.1.0", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!store.blob_path(&format!("sha256:{hex}")).exists());
    assert!(
        std::fs::read_dir(dir.join("store/packages"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn the_platform_resolver_never_picks_an_engine_for_another_gpu() {
    use reflex_policy::EngineHost;
    use reflex_registry::store::select_manifest;
    let entry = |target: &str, sm: Option<&str>| {
        let mut d = oci::Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!(
                "sha256:{}",
                reflex_registry::oci::key_id(&[sm.map_or(0, |s| s.len() as u8); 32]).repeat(4)
            ),
            size: 1,
            artifact_type: None,
            platform: Some(oci::Platform {
                architecture: if target == "onnx" {
                    "any".into()
                } else {
                    "arm64".into()
                },
                os: "linux".into(),
            }),
            annotations: Default::default(),
        };
        d.annotations
            .insert("vnd.reflex.target".into(), target.into());
        if let Some(sm) = sm {
            d.annotations.insert("vnd.reflex.gpu.sm".into(), sm.into());
            d.annotations
                .insert("vnd.reflex.tensorrt.version".into(), "10.3".into());
            d.annotations
                .insert("vnd.reflex.precision".into(), "fp16".into());
        }
        d
    };
    let index = oci::ImageIndex {
        schema_version: 2,
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        artifact_type: Some(oci::ARTIFACT_TYPE.into()),
        manifests: vec![entry("tensorrtepcontext", Some("87")), entry("onnx", None)],
        annotations: Default::default(),
    };
    let orin = EngineHost {
        arch: "aarch64",
        gpu_sm: "87",
        tensorrt_version: "10.3",
        precision: "fp16",
    };
    let thor = EngineHost {
        gpu_sm: "110",
        ..orin
    };
    let pick = |h: Option<&EngineHost<'_>>| {
        select_manifest(&index, h).unwrap().annotations["vnd.reflex.target"].clone()
    };
    assert_eq!(pick(Some(&orin)), "tensorrtepcontext");
    assert_eq!(pick(Some(&thor)), "onnx");
    assert_eq!(pick(None), "onnx");
    let engines_only = oci::ImageIndex {
        manifests: vec![entry("tensorrtepcontext", Some("87"))],
        ..index.clone()
    };
    assert!(select_manifest(&engines_only, Some(&thor)).is_none());
    assert!(select_manifest(&engines_only, None).is_none());
}

#[test]
fn gc_keeps_the_active_and_previous_versions_and_removes_the_rest() {
    use reflex_registry::activation::{Activation, Version};
    use reflex_registry::store::Store;
    let dir = scratch("gc");
    let layout = Layout::open_or_create(&dir.join("build")).unwrap();
    let store = Store::open(&dir.join("store")).unwrap();
    let (mut activation, _) = Activation::open(&store, 1).unwrap();
    let mut installed = Vec::new();
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        let package = reflex_policy::derive_package(
            &repo().join("models/demo/reflex-demo-vla"),
            &dir.join(v),
            v,
            // A distinct model blob per version.
            1 + installed.len() as u64,
        )
        .unwrap();
        oci::pack(&package, &layout, v).unwrap();
        let pulled = store.pull_layout(&layout, v, None).unwrap();
        activation
            .begin(Version {
                name: pulled.package.manifest.name.clone(),
                version: v.into(),
                index_digest: pulled.index_digest.clone(),
                manifest_digest: pulled.manifest_digest.clone(),
                dir: pulled.package.dir.clone(),
            })
            .unwrap();
        activation.commit().unwrap();
        installed.push(pulled);
        store.gc(&activation.keep_set()).unwrap();
    }
    // keep_previous = 1: 1.2.0 active, 1.1.0 previous, 1.0.0 collected.
    assert!(!installed[0].package.dir.exists());
    assert!(
        !store
            .blob_path(&format!(
                "sha256:{}",
                installed[0].package.manifest.targets[0].sha256
            ))
            .exists()
    );
    for kept in &installed[1..] {
        assert_eq!(kept.package.verify_files().unwrap(), 2);
    }
    let record = activation.record();
    assert_eq!(record.active.as_ref().unwrap().version, "1.2.0");
    assert_eq!(record.previous.len(), 1);
    assert_eq!(record.previous[0].version, "1.1.0");
    std::fs::remove_dir_all(&dir).unwrap();
}
