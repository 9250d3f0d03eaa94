//! Push and pull through a real OCI registry: Debian's `docker-registry` (distribution 2.8),
//! started here on 127.0.0.1 with its own storage and stopped by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use reflex_models::PolicyPackage;
use reflex_models::oci::{self, Layout};
use reflex_models::registry;
use reflex_models::store::Store;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A registry process, killed by PID when dropped.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    let bin = Path::new("/usr/bin/docker-registry");
    assert!(
        bin.is_file(),
        "{} missing: `bash scripts/test` installs Debian's docker-registry (apt-get install docker-registry)",
        bin.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let storage = dir.join("registry-storage");
    std::fs::create_dir_all(&storage).unwrap();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["serve", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let registry = Registry {
        child,
        port,
        storage,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return registry;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("docker-registry did not listen on 127.0.0.1:{port} within 5 s");
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reflex-registry-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Packs and signs the demo policy into a layout; returns (layout, trusted keys dir).
fn signed_layout(dir: &Path) -> (Layout, PathBuf) {
    let package = PolicyPackage::open(&repo().join("models/demo/reflex-demo-vla")).unwrap();
    let layout = Layout::open_or_create(&dir.join("build")).unwrap();
    oci::pack(&package, &layout, "0.1.0").unwrap();
    let (secret, public) = oci::keygen().unwrap();
    std::fs::write(dir.join("release.key"), secret).unwrap();
    let trusted = dir.join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::write(trusted.join("release.pub"), public).unwrap();
    oci::sign(&layout, "0.1.0", &dir.join("release.key")).unwrap();
    (layout, trusted)
}

#[test]
fn push_pull_verify_through_a_real_registry() {
    let dir = scratch("roundtrip");
    let registry = start_registry(&dir);
    let (layout, trusted) = signed_layout(&dir);
    let dest = format!("oci://127.0.0.1:{}/reflex/demo-vla:stable", registry.port);
    let pushed = registry::push(&layout, "0.1.0", &dest).unwrap();
    // Pull into a fresh cache layout: same digests, signature found through the tag fallback.
    let cache = Layout::open_or_create(&dir.join("cache")).unwrap();
    let pulled = registry::pull_into_layout(&dest, &cache, "stable").unwrap();
    assert_eq!(pulled, pushed);
    let signed = oci::verify_signed(&cache, "stable", &trusted).unwrap();
    assert_eq!(signed.index_digest, pushed);
    let store = Store::open(&dir.join("store")).unwrap();
    let package = store.pull_layout(&cache, "stable", None).unwrap();
    assert_eq!(package.package.verify_files().unwrap(), 2);
}

#[test]
fn a_tampered_blob_in_the_registry_is_refused() {
    let dir = scratch("tamper");
    let registry = start_registry(&dir);
    let (layout, _) = signed_layout(&dir);
    let dest = format!("oci://127.0.0.1:{}/reflex/demo-vla:stable", registry.port);
    registry::push(&layout, "0.1.0", &dest).unwrap();
    // Corrupt the model blob in the registry's own storage.
    let hex =
        reflex_models::sha256_file(&repo().join("models/demo/reflex-demo-vla/model.onnx")).unwrap();
    let data = registry
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let cache = Layout::open_or_create(&dir.join("cache")).unwrap();
    let err = registry::pull_into_layout(&dest, &cache, "stable")
        .unwrap_err()
        .to_string();
    assert!(err.contains("digest") || err.contains(&hex), "{err}");
    assert!(
        !cache.root.join("blobs/sha256").join(&hex).exists(),
        "the bad blob must not be stored"
    );
}

#[test]
fn registry_references_are_parsed_with_clear_errors() {
    assert!(registry::parse_ref("oci://registry.example.com/reflex/vla:stable").is_ok());
    let err = registry::parse_ref("oci://nohost").unwrap_err().to_string();
    assert!(err.contains("oci://host[:port]/repository:tag"), "{err}");
}
