//! Packing into an OCI image layout, signing and verifying.

use std::path::{Path, PathBuf};

use reflex_models::PolicyPackage;
use reflex_models::oci::{self, Layout};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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
        reflex_models::sha256_file(&repo().join("models/demo/reflex-demo-vla/model.onnx")).unwrap();
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
