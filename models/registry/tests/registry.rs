//! Push and pull through a real OCI registry: Debian's `docker-registry` (distribution 2.8),
//! started here on 127.0.0.1 with its own storage and stopped by PID.

use std::path::{Path, PathBuf};

use reflex_policy::PolicyPackage;
use reflex_registry::oci::{self, Layout};
use reflex_registry::registry::{self, PullReport, RegistryOptions, Trust};
use reflex_registry::store::Store;
use reflex_registry::testing::TestRegistry;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start_registry(dir: &Path) -> TestRegistry {
    TestRegistry::start(dir)
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reflex-registry-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Packs and signs `package` into a layout under `tag`; returns (layout, trusted keys dir).
fn signed_layout_of(dir: &Path, package: &PolicyPackage, tag: &str) -> (Layout, PathBuf) {
    let layout = Layout::open_or_create(&dir.join("build")).unwrap();
    oci::pack(package, &layout, tag).unwrap();
    let key = dir.join("release.key");
    let trusted = dir.join("trusted");
    if !key.exists() {
        let (secret, public) = oci::keygen().unwrap();
        std::fs::write(&key, secret).unwrap();
        std::fs::create_dir_all(&trusted).unwrap();
        std::fs::write(trusted.join("release.pub"), public).unwrap();
    }
    oci::sign(&layout, tag, &key).unwrap();
    (layout, trusted)
}

fn demo() -> PolicyPackage {
    PolicyPackage::open(&repo().join("models/demo/reflex-demo-vla")).unwrap()
}

/// Packs and signs the demo policy into a layout; returns (layout, trusted keys dir).
fn signed_layout(dir: &Path) -> (Layout, PathBuf) {
    signed_layout_of(dir, &demo(), "0.1.0")
}

fn store_blobs(store: &Store) -> usize {
    std::fs::read_dir(store.root.join("blobs/sha256"))
        .unwrap()
        .count()
}

fn pull(
    dest: &str,
    store: &Store,
    trusted: &Path,
) -> Result<PullReport, reflex_policy::PackageError> {
    registry::pull_to_store(
        dest,
        store,
        None,
        Trust::Keys(trusted),
        &RegistryOptions::default(),
    )
}

#[test]
fn push_pull_verify_through_a_real_registry() {
    let dir = scratch("roundtrip");
    let registry = start_registry(&dir);
    let (layout, trusted) = signed_layout(&dir);
    let dest = format!("oci://127.0.0.1:{}/reflex/demo-vla:stable", registry.port);
    let pushed = registry::push(&layout, "0.1.0", &dest, &RegistryOptions::default()).unwrap();
    assert_eq!(pushed, layout.resolve("0.1.0").unwrap().digest);
    let store = Store::open(&dir.join("store")).unwrap();
    let report = pull(&dest, &store, &trusted).unwrap();
    assert_eq!(report.pulled.index_digest, pushed);
    assert!(report.key_id.is_some());
    // config + policy.json + model + golden
    assert_eq!(report.blobs_fetched, 4, "{report:?}");
    assert_eq!(report.pulled.package.verify_files().unwrap(), 2);
    // Again, by digest: nothing but manifests is fetched.
    let by_digest = format!("oci://127.0.0.1:{}/reflex/demo-vla@{pushed}", registry.port);
    let again = pull(&by_digest, &store, &trusted).unwrap();
    assert_eq!(again.blobs_fetched, 0, "{again:?}");
    assert_eq!(again.pulled.manifest_digest, report.pulled.manifest_digest);
    // A digest reference that does not match what the registry serves is refused.
    let wrong = format!(
        "oci://127.0.0.1:{}/reflex/demo-vla@sha256:{}",
        registry.port,
        "0".repeat(64)
    );
    assert!(pull(&wrong, &store, &trusted).is_err());
}

#[test]
fn a_tampered_blob_in_the_registry_is_refused() {
    let dir = scratch("tamper");
    let registry = start_registry(&dir);
    let (layout, trusted) = signed_layout(&dir);
    let dest = format!("oci://127.0.0.1:{}/reflex/demo-vla:stable", registry.port);
    registry::push(&layout, "0.1.0", &dest, &RegistryOptions::default()).unwrap();
    // Corrupt the model blob in the registry's own storage.
    let hex =
        reflex_policy::sha256_file(&repo().join("models/demo/reflex-demo-vla/model.onnx")).unwrap();
    let data = registry
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let store = Store::open(&dir.join("store")).unwrap();
    let err = pull(&dest, &store, &trusted).unwrap_err().to_string();
    assert!(err.contains(&hex), "{err}");
    assert!(
        !store.blob_path(&format!("sha256:{hex}")).exists(),
        "the bad blob must not be stored"
    );
    assert!(
        !store
            .root
            .join("tmp")
            .join(format!("{hex}.partial"))
            .exists()
    );
    assert_eq!(
        std::fs::read_dir(store.root.join("packages"))
            .unwrap()
            .count(),
        0,
        "no package materialized"
    );
}

#[test]
fn unsigned_and_wrongly_signed_artifacts_are_refused_before_any_blob_is_fetched() {
    let dir = scratch("signature");
    let registry = start_registry(&dir);
    let (layout, trusted) = signed_layout(&dir);
    let store = Store::open(&dir.join("store")).unwrap();
    // Signed, but by a key this robot does not trust.
    let other = dir.join("other-trusted");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("other.pub"), oci::keygen().unwrap().1).unwrap();
    let dest = format!("oci://127.0.0.1:{}/reflex/demo-vla:stable", registry.port);
    registry::push(&layout, "0.1.0", &dest, &RegistryOptions::default()).unwrap();
    let err = pull(&dest, &store, &other).unwrap_err().to_string();
    assert!(
        err.contains("not signed by any of the 1 trusted keys"),
        "{err}"
    );
    assert_eq!(store_blobs(&store), 0);
    // Unsigned: a fresh layout packed without a signature.
    let bare = Layout::open_or_create(&dir.join("bare")).unwrap();
    let package = reflex_policy::derive_package(
        &repo().join("models/demo/reflex-demo-vla"),
        &dir.join("v2"),
        "0.2.0",
        0,
    )
    .unwrap();
    oci::pack(&package, &bare, "0.2.0").unwrap();
    let unsigned = format!("oci://127.0.0.1:{}/reflex/demo-vla:unsigned", registry.port);
    registry::push(&bare, "0.2.0", &unsigned, &RegistryOptions::default()).unwrap();
    let err = pull(&unsigned, &store, &trusted).unwrap_err().to_string();
    assert!(err.contains("is unsigned"), "{err}");
    assert_eq!(store_blobs(&store), 0);
    // The same artifact passes only when the caller explicitly accepts unsigned packages.
    registry::pull_to_store(
        &unsigned,
        &store,
        None,
        Trust::AllowUnsigned,
        &RegistryOptions::default(),
    )
    .unwrap();
}

#[test]
fn an_index_with_only_another_platforms_engine_is_a_clear_error() {
    let dir = scratch("platform");
    let registry = start_registry(&dir);
    let (layout, trusted) = signed_layout(&dir);
    // Re-label the only entry as an Orin (sm87) TensorRT engine: nothing for this host.
    let root = layout.resolve("0.1.0").unwrap();
    let mut index: oci::ImageIndex =
        serde_json::from_slice(&layout.read_blob(&root).unwrap()).unwrap();
    for m in &mut index.manifests {
        m.annotations
            .insert("vnd.reflex.target".into(), "tensorrtepcontext".into());
        m.annotations
            .insert("vnd.reflex.gpu.sm".into(), "87".into());
        m.platform = Some(oci::Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
        });
    }
    let mut desc = layout
        .put_blob(&root.media_type, &serde_json::to_vec(&index).unwrap())
        .unwrap();
    desc.artifact_type = root.artifact_type.clone();
    layout.tag("jetson-only", &desc).unwrap();
    oci::sign(&layout, "jetson-only", &dir.join("release.key")).unwrap();
    let dest = format!(
        "oci://127.0.0.1:{}/reflex/demo-vla:jetson-only",
        registry.port
    );
    registry::push(&layout, "jetson-only", &dest, &RegistryOptions::default()).unwrap();
    let store = Store::open(&dir.join("store")).unwrap();
    let err = pull(&dest, &store, &trusted).unwrap_err().to_string();
    assert!(err.contains("no artifact for this host"), "{err}");
    assert!(err.contains("sm87"), "{err}");
    assert_eq!(store_blobs(&store), 0);
}

#[test]
fn a_pull_cut_by_a_registry_kill_resumes_where_it_stopped() {
    let dir = scratch("resume");
    let mut registry = start_registry(&dir);
    // A 48 MiB model: the pull is cut at ~60% while the registry is killed.
    const PAD: u64 = 48 << 20;
    let package = reflex_policy::derive_package(
        &repo().join("models/demo/reflex-demo-vla"),
        &dir.join("big"),
        "0.3.0",
        PAD,
    )
    .unwrap();
    let (layout, trusted) = signed_layout_of(&dir, &package, "0.3.0");
    let dest = format!("oci://127.0.0.1:{}/reflex/big:stable", registry.port);
    registry::push(&layout, "0.3.0", &dest, &RegistryOptions::default()).unwrap();
    let store = Store::open(&dir.join("store")).unwrap();
    let cut = PAD * 6 / 10;
    let options = RegistryOptions {
        test_pause_after_bytes: Some(cut),
        ..RegistryOptions::default()
    };
    let paused = store.root.join("tmp/pull-paused");
    let first = std::thread::scope(|s| {
        let puller = s.spawn(|| {
            registry::pull_to_store(&dest, &store, None, Trust::Keys(&trusted), &options)
        });
        for _ in 0..600 {
            if paused.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(paused.exists(), "the pull never reached the cut");
        registry.kill();
        puller.join().unwrap()
    });
    let err = first.unwrap_err().to_string();
    assert!(
        err.contains("interrupted") && err.contains("resumes"),
        "{err}"
    );
    // Restart the registry on the same port and storage; pull again.
    let registry = registry.restart();
    let _ = registry.port;
    let second = pull(&dest, &store, &trusted).unwrap();
    assert!(
        second.bytes_resumed >= cut,
        "resumed {} of a cut at {cut}: {second:?}",
        second.bytes_resumed
    );
    assert!(
        second.bytes_downloaded < PAD - cut + (1 << 20),
        "fetched {} bytes again: it restarted instead of resuming",
        second.bytes_downloaded
    );
    assert_eq!(second.pulled.package.verify_files().unwrap(), 2);
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Interop: what Reflex pushes, skopeo copies to an image layout and back with the same
/// digests, and Reflex pulls the copy (signature included) as if it were the original.
#[test]
fn skopeo_copies_a_reflex_artifact_with_the_same_digests() {
    let skopeo = Path::new("/usr/bin/skopeo");
    assert!(
        skopeo.is_file(),
        "/usr/bin/skopeo missing: `bash scripts/test` installs it (apt-get install skopeo)"
    );
    let dir = scratch("skopeo");
    let registry = start_registry(&dir);
    let (layout, trusted) = signed_layout(&dir);
    let pushed = registry::push(
        &layout,
        "0.1.0",
        &registry.url("reflex/demo:stable"),
        &RegistryOptions::default(),
    )
    .unwrap();
    let sig_tag = format!("sha256-{}", pushed.trim_start_matches("sha256:"));
    let copied = dir.join("skopeo-layout");
    let copy = |from: String, to: String| {
        let out = std::process::Command::new(skopeo)
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "-q",
            ])
            .arg(&from)
            .arg(&to)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {from} {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let docker = |repo_tag: &str| format!("docker://127.0.0.1:{}/{repo_tag}", registry.port);
    for tag in ["stable", sig_tag.as_str()] {
        copy(
            docker(&format!("reflex/demo:{tag}")),
            format!("oci:{}:{tag}", copied.display()),
        );
    }
    // Same digest in skopeo's layout, and Reflex's own layout code reads it.
    let out_layout = Layout::open(&copied).unwrap();
    assert_eq!(out_layout.resolve("stable").unwrap().digest, pushed);
    oci::verify_signed(&out_layout, "stable", &trusted).unwrap();
    // And back to another repository: same digest, pulled and verified by Reflex.
    for tag in ["stable", sig_tag.as_str()] {
        copy(
            format!("oci:{}:{tag}", copied.display()),
            docker(&format!("reflex/copy:{tag}")),
        );
    }
    let back = registry.url("reflex/copy:stable");
    assert_eq!(
        registry::head_digest(&back, &RegistryOptions::default()).unwrap(),
        pushed
    );
    let store = Store::open(&dir.join("store")).unwrap();
    let report = pull(&back, &store, &trusted).unwrap();
    assert_eq!(report.pulled.index_digest, pushed);
}

/// HTTPS with a private CA and basic auth (htpasswd): what a robot uses against a private
/// registry. Without the CA, with a wrong password, or without credentials: clear errors.
#[test]
fn https_with_a_private_ca_and_basic_auth() {
    use oci_client::secrets::RegistryAuth;
    let dir = scratch("tls");
    let registry = TestRegistry::start_tls(&dir, "robot", "s3cret-pw");
    let (layout, trusted) = signed_layout(&dir);
    let url = registry.url("reflex/demo:stable");
    let good = RegistryOptions {
        ca_file: registry.ca_file(),
        auth: RegistryAuth::Basic("robot".into(), "s3cret-pw".into()),
        ..RegistryOptions::default()
    };
    let pushed = registry::push(&layout, "0.1.0", &url, &good).unwrap();
    let store = Store::open(&dir.join("store")).unwrap();
    let report = registry::pull_to_store(&url, &store, None, Trust::Keys(&trusted), &good).unwrap();
    assert_eq!(report.pulled.index_digest, pushed);
    // A CA that did not sign the registry's certificate (here: the server's own leaf
    // certificate): refused by TLS, nothing trusted by accident.
    let wrong_ca = RegistryOptions {
        ca_file: Some(dir.join("tls/server.pem")),
        ..good.clone()
    };
    let err = format!("{:?}", registry::head_digest(&url, &wrong_ca).unwrap_err());
    println!("wrong CA: {err}");
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
    let no_pull = registry::pull_to_store(&url, &store, None, Trust::Keys(&trusted), &wrong_ca);
    assert!(no_pull.is_err());
    // Wrong password, and no credentials: unauthorized.
    for auth in [
        RegistryAuth::Basic("robot".into(), "wrong".into()),
        RegistryAuth::Anonymous,
    ] {
        let bad = RegistryOptions {
            auth,
            ..good.clone()
        };
        let err = registry::pull_to_store(&url, &store, None, Trust::Keys(&trusted), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.to_lowercase().contains("not authorized") || err.contains("401"),
            "{err}"
        );
    }
    // A CA file that is not PEM: a clear error naming the file.
    std::fs::write(dir.join("bad.pem"), "not a certificate").unwrap();
    let err = registry::head_digest(
        &url,
        &RegistryOptions {
            ca_file: Some(dir.join("bad.pem")),
            ..good.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.pem") && err.contains("PEM"), "{err}");
}

/// A bearer token (what a token service or a CI system hands a robot), against distribution's
/// token auth; a forged token and none at all are refused.
#[test]
fn bearer_token_auth() {
    use oci_client::secrets::RegistryAuth;
    let dir = scratch("bearer");
    let (registry, token) = TestRegistry::start_token(&dir, "reflex/demo");
    let (layout, trusted) = signed_layout(&dir);
    let url = registry.url("reflex/demo:stable");
    let good = RegistryOptions {
        auth: RegistryAuth::Bearer(token.clone()),
        ..RegistryOptions::default()
    };
    let pushed = registry::push(&layout, "0.1.0", &url, &good).unwrap();
    let store = Store::open(&dir.join("store")).unwrap();
    let report = registry::pull_to_store(&url, &store, None, Trust::Keys(&trusted), &good).unwrap();
    assert_eq!(report.pulled.index_digest, pushed);
    // One signature character changed (not the last: its low bits are padding).
    let mut forged: Vec<char> = token.chars().collect();
    let i = forged.len() - 20;
    forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    for auth in [RegistryAuth::Bearer(forged), RegistryAuth::Anonymous] {
        let bad = RegistryOptions {
            auth,
            ..RegistryOptions::default()
        };
        let err = registry::head_digest(&url, &bad).unwrap_err().to_string();
        assert!(
            err.to_lowercase().contains("not authorized") || err.contains("401"),
            "{err}"
        );
    }
}

#[test]
fn registry_references_are_parsed_with_clear_errors() {
    let r = registry::parse_ref("oci://registry.example.com/reflex/vla:stable").unwrap();
    assert_eq!((r.repo.as_str(), r.tag.as_str()), ("reflex/vla", "stable"));
    let d = format!("oci://127.0.0.1:5000/reflex/vla@sha256:{}", "a".repeat(64));
    assert!(registry::parse_ref(&d).unwrap().digest.is_some());
    for bad in [
        "oci://nohost",
        "registry.example.com/reflex/vla:stable",
        "oci://h/reflex/vla@sha256:abc",
    ] {
        let err = registry::parse_ref(bad).unwrap_err().to_string();
        assert!(err.contains("oci://host[:port]/repository:tag"), "{err}");
    }
}

/// The tag moves last: a robot polling during a push sees the old version or a complete,
/// signed new one — never the new tag before its signature (which it would refuse for good).
/// Read from the registry's own request log: the PUT of the destination tag comes after the
/// PUT of the signature's `sha256-<hex>` tag and of every blob.
#[test]
fn push_moves_the_tag_only_after_the_signature_and_blobs() {
    let dir = scratch("tag-last");
    let registry = TestRegistry::start_logged(&dir.join("registry"));
    let (layout, _trusted) = signed_layout(&dir);
    let digest = registry::push(
        &layout,
        "0.1.0",
        &registry.url("reflex/demo:stable"),
        &RegistryOptions::default(),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = std::fs::read_to_string(registry.log_file()).unwrap();
    let puts: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["http.request.method"] == "PUT"
                && v["msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("response completed"))
        })
        .map(|v| v["http.request.uri"].as_str().unwrap_or("").to_string())
        .collect();
    let at = |suffix: &str| {
        puts.iter()
            .position(|u| u.ends_with(suffix))
            .unwrap_or_else(|| panic!("no PUT …{suffix} in {puts:#?}"))
    };
    let tag = at("/manifests/stable");
    let signature = at(&format!(
        "/manifests/sha256-{}",
        digest.trim_start_matches("sha256:")
    ));
    let last_blob = puts
        .iter()
        .rposition(|u| u.contains("/blobs/uploads/"))
        .unwrap();
    assert!(signature < tag && last_blob < tag, "{puts:#?}");
    assert_eq!(tag, puts.len() - 1, "the tag is the last write: {puts:#?}");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}
