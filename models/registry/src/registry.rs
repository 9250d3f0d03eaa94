//! OCI registries (distribution spec) through `oci-client`: push a policy artifact from an
//! image layout (blobs, per-target manifests, the index under its tag, and its signature
//! referrer under the `sha256-<hex>` tag fallback), and pull one back into a local layout,
//! checking every digest before anything is stored. Plain HTTP only for loopback registries.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::PackageError;
use crate::oci::{Descriptor, ImageIndex, ImageManifest, Layout};
use crate::store::{Pulled, Store, choose_manifest};
use reflex_policy::EngineHost;
use reflex_policy::sha256_bytes;

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A parsed `oci://host[:port]/repository:tag` or `oci://host[:port]/repository@sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    pub registry: String,
    pub repo: String,
    /// The tag (for a digest reference: the empty string).
    pub tag: String,
    pub digest: Option<String>,
}

impl RemoteRef {
    fn reference(&self) -> Reference {
        match &self.digest {
            Some(d) => Reference::with_digest(self.registry.clone(), self.repo.clone(), d.clone()),
            None => Reference::with_tag(self.registry.clone(), self.repo.clone(), self.tag.clone()),
        }
    }
}

/// Parses `oci://host[:port]/repository:tag` or `oci://host[:port]/repository@sha256:<hex>`.
pub fn parse_ref(reference: &str) -> Result<RemoteRef, PackageError> {
    let bad = || {
        PackageError::Registry(format!(
            "{reference:?}: expected oci://host[:port]/repository:tag or oci://host[:port]/repository@sha256:<64 hex>"
        ))
    };
    let rest = reference.strip_prefix("oci://").ok_or_else(bad)?;
    let (registry, path) = rest.split_once('/').ok_or_else(bad)?;
    let (repo, tag, digest) = if let Some((repo, digest)) = path.split_once('@') {
        let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        (repo, "", Some(digest.to_string()))
    } else {
        let (repo, tag) = path.rsplit_once(':').ok_or_else(bad)?;
        if tag.is_empty() || tag.contains('/') {
            return Err(bad());
        }
        (repo, tag, None)
    };
    if registry.is_empty() || repo.is_empty() {
        return Err(bad());
    }
    Ok(RemoteRef {
        registry: registry.into(),
        repo: repo.into(),
        tag: tag.into(),
        digest,
    })
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    host == "localhost" || host == "[::1]" || host.starts_with("127.")
}

/// How to reach a registry: HTTPS (rustls) with an optional extra CA, credentials, and plain
/// HTTP only toward loopback or when configured explicitly.
#[derive(Clone)]
pub struct RegistryOptions {
    /// A PEM file of extra root certificates (a private registry's CA).
    pub ca_file: Option<PathBuf>,
    pub auth: RegistryAuth,
    /// Plain HTTP toward a non-loopback registry (explicit opt-in; never the default).
    pub plain_http: bool,
    /// HTTP User-Agent (`reflex/0.1.0 robot/<id>` from the model manager), so a registry's
    /// access log tells robots apart; None: oci-client's default.
    pub user_agent: Option<String>,
    /// Test hook: pause a blob download for 2 s once this many bytes of it are written (after
    /// writing `<store>/tmp/pull-paused`), so a test can kill the registry mid-pull.
    #[doc(hidden)]
    pub test_pause_after_bytes: Option<u64>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            ca_file: None,
            auth: RegistryAuth::Anonymous,
            plain_http: false,
            user_agent: None,
            test_pause_after_bytes: None,
        }
    }
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("ca_file", &self.ca_file)
            .field("auth", &self.auth) // oci-client's Debug hides secrets
            .field("plain_http", &self.plain_http)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl RegistryOptions {
    /// Credentials from the environment (never from the command line, where `ps` shows them):
    /// `REFLEX_REGISTRY_USERNAME` + `REFLEX_REGISTRY_PASSWORD` (basic) or
    /// `REFLEX_REGISTRY_TOKEN` (bearer).
    pub fn with_env_auth(mut self) -> Result<Self, PackageError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        self.auth = match (
            var("REFLEX_REGISTRY_USERNAME"),
            var("REFLEX_REGISTRY_PASSWORD"),
            var("REFLEX_REGISTRY_TOKEN"),
        ) {
            (Some(_), _, Some(_)) => {
                return Err(PackageError::Registry(
                    "set either REFLEX_REGISTRY_USERNAME/PASSWORD or REFLEX_REGISTRY_TOKEN, not both"
                        .into(),
                ));
            }
            (Some(u), Some(p), None) => RegistryAuth::Basic(u, p),
            (Some(_), None, None) | (None, Some(_), None) => {
                return Err(PackageError::Registry(
                    "REFLEX_REGISTRY_USERNAME and REFLEX_REGISTRY_PASSWORD go together; set both"
                        .into(),
                ));
            }
            (None, _, Some(t)) => RegistryAuth::Bearer(t),
            (None, None, None) => RegistryAuth::Anonymous,
        };
        Ok(self)
    }
}

fn client(registry: &str, options: &RegistryOptions) -> Result<Client, PackageError> {
    // HTTPS by default; plain HTTP only toward this machine or when asked explicitly. A CA
    // file means TLS, on loopback too.
    let protocol = if (is_loopback(registry) && options.ca_file.is_none()) || options.plain_http {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let mut extra_root_certificates = Vec::new();
    if let Some(ca) = &options.ca_file {
        let data = std::fs::read(ca).map_err(|e| {
            PackageError::Registry(format!(
                "cannot read the registry CA file {}: {e}; give a PEM file of the CA that signed the registry's certificate",
                ca.display()
            ))
        })?;
        if !data.starts_with(b"-----BEGIN") {
            return Err(PackageError::Registry(format!(
                "{} is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                ca.display()
            )));
        }
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let mut config = ClientConfig::default();
    if let Some(agent) = &options.user_agent {
        config.user_agent = interned(agent);
    }
    Ok(Client::new(ClientConfig {
        protocol,
        extra_root_certificates,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(30)),
        ..config
    }))
}

/// oci-client wants a `&'static str` user agent: one leaked copy per distinct string (a
/// process has one robot id, a fleet simulation a few hundred).
fn interned(agent: &str) -> &'static str {
    static AGENTS: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut agents = AGENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = agents.get(agent) {
        return known;
    }
    let leaked: &'static str = Box::leak(agent.to_string().into_boxed_str());
    agents.insert(leaked);
    leaked
}

fn runtime() -> Result<tokio::runtime::Runtime, PackageError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PackageError::Registry(format!("cannot start the I/O runtime: {e}")))
}

/// The error with its whole cause chain (a TLS failure's reason sits three levels down).
fn reg_err(what: &str, reference: &Reference, e: impl std::error::Error) -> PackageError {
    let mut text = format!("{what} {reference}: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    PackageError::Registry(text)
}

/// Everything under `root` (an index or manifest): the manifests and blobs it references.
fn closure(
    layout: &Layout,
    root: &Descriptor,
) -> Result<(Vec<Descriptor>, Vec<Descriptor>), PackageError> {
    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    if root.media_type == MEDIA_INDEX {
        let index: ImageIndex = serde_json::from_slice(&layout.read_blob(root)?)
            .map_err(|e| PackageError::Registry(format!("index {}: {e}", root.digest)))?;
        for m in &index.manifests {
            let (mm, bb) = closure(layout, m)?;
            manifests.extend(mm);
            blobs.extend(bb);
        }
    } else {
        let manifest: ImageManifest = serde_json::from_slice(&layout.read_blob(root)?)
            .map_err(|e| PackageError::Registry(format!("manifest {}: {e}", root.digest)))?;
        blobs.push(manifest.config.clone());
        blobs.extend(manifest.layers.iter().cloned());
        manifests.push(root.clone());
    }
    Ok((manifests, blobs))
}

/// Pushes `tag` of `layout` (and its signature referrer, if any) to `dest`
/// (`oci://host[:port]/repo:tag`). Returns the pushed index digest.
pub fn push(
    layout: &Layout,
    tag: &str,
    dest: &str,
    options: &RegistryOptions,
) -> Result<String, PackageError> {
    let RemoteRef {
        registry,
        repo,
        tag: dest_tag,
        digest,
    } = parse_ref(dest)?;
    if digest.is_some() {
        return Err(PackageError::Registry(format!(
            "{dest}: push to a tag (oci://host/repo:tag), not a digest"
        )));
    }
    let root = layout.resolve(tag)?;
    let sig_tag = format!("sha256-{}", root.digest.trim_start_matches("sha256:"));
    let signature = layout.resolve(&sig_tag).ok();
    let client = client(&registry, options)?;
    let auth = options.auth.clone();
    let rt = runtime()?;
    rt.block_on(async {
        client.store_auth_if_needed(&registry, &auth).await;
        // The tag moves last: everything under the version by digest, then its signature, then
        // the tag. A robot polling meanwhile sees the old version or a complete, signed new one
        // (never a tag whose signature is not there yet, which it would refuse).
        push_root(&client, layout, &root, &registry, &repo, None).await?;
        if let Some(sig) = signature {
            push_root(&client, layout, &sig, &registry, &repo, Some(&sig_tag)).await?;
        }
        let tagged = Reference::with_tag(registry.clone(), repo.clone(), dest_tag.clone());
        client
            .push_manifest_raw(
                &tagged,
                layout.read_blob(&root)?,
                root.media_type
                    .parse()
                    .map_err(|e| PackageError::Registry(format!("media type: {e}")))?,
            )
            .await
            .map_err(|e| reg_err("push manifest to", &tagged, e))?;
        Ok(root.digest.clone())
    })
}

/// Pushes `root` (an index or manifest in `layout`) and everything under it, under `tag` (by
/// digest when `tag` is None).
async fn push_root(
    client: &Client,
    layout: &Layout,
    root: &Descriptor,
    registry: &str,
    repo: &str,
    tag: Option<&str>,
) -> Result<(), PackageError> {
    let (manifests, blobs) = closure(layout, root)?;
    let repo_ref = match tag {
        Some(tag) => Reference::with_tag(registry.into(), repo.into(), tag.into()),
        None => Reference::with_digest(registry.into(), repo.into(), root.digest.clone()),
    };
    for blob in &blobs {
        let bytes = layout.read_blob(blob)?;
        client
            .push_blob(&repo_ref, bytes, &blob.digest)
            .await
            .map_err(|e| reg_err("push blob to", &repo_ref, e))?;
    }
    // Child manifests by digest, then the root under its tag.
    for m in manifests.iter().filter(|m| m.digest != root.digest) {
        let r = Reference::with_digest(registry.into(), repo.into(), m.digest.clone());
        let bytes = layout.read_blob(m)?;
        client
            .push_manifest_raw(&r, bytes, MEDIA_MANIFEST.parse().expect("valid header"))
            .await
            .map_err(|e| reg_err("push manifest to", &r, e))?;
    }
    let bytes = layout.read_blob(root)?;
    client
        .push_manifest_raw(
            &repo_ref,
            bytes,
            root.media_type
                .parse()
                .map_err(|e| PackageError::Registry(format!("media type: {e}")))?,
        )
        .await
        .map_err(|e| reg_err("push manifest to", &repo_ref, e))?;
    Ok(())
}

/// Signs the artifact at `src` in place: its index digest (fetched and checked), signed with
/// `key_file`, stored as a referrer under the `sha256-<hex>` tag of the same repository.
/// Returns (index digest, signature manifest digest).
pub fn sign_remote(
    src: &str,
    key_file: &Path,
    options: &RegistryOptions,
) -> Result<(String, String), PackageError> {
    let target = parse_ref(src)?;
    let (digest, bytes) = fetch_index_bytes(src, options)?;
    let scratch = std::env::temp_dir().join(format!(
        "reflex-sign-{}-{}",
        std::process::id(),
        digest.trim_start_matches("sha256:")
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = (|| {
        let layout = Layout::open_or_create(&scratch)?;
        let desc = layout.put_blob(MEDIA_INDEX, &bytes)?;
        layout.tag("subject", &desc)?;
        let sig = crate::oci::sign(&layout, "subject", key_file)?;
        let sig_tag = format!("sha256-{}", digest.trim_start_matches("sha256:"));
        let client = client(&target.registry, options)?;
        runtime()?.block_on(async {
            client
                .store_auth_if_needed(&target.registry, &options.auth)
                .await;
            push_root(
                &client,
                &layout,
                &sig,
                &target.registry,
                &target.repo,
                Some(&sig_tag),
            )
            .await
        })?;
        Ok((digest.clone(), sig.digest))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// How a pull establishes trust.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// A signature from a key in this directory (`*.pub`) is required.
    Keys(&'a Path),
    /// Development only: no signature check (the caller says so loudly).
    AllowUnsigned,
}

/// What a registry pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub pulled: Pulled,
    /// The key that signed the index, when checked.
    pub key_id: Option<String>,
    /// Bytes received from the registry in this call (manifests, signature and blobs).
    pub bytes_downloaded: u64,
    /// Bytes of blobs a previous interrupted pull had already kept (resumed, not re-fetched).
    pub bytes_resumed: u64,
    /// Blobs fetched (not already in the store).
    pub blobs_fetched: usize,
}

/// Pulls `src` (`oci://host[:port]/repo:tag` or `…/repo@sha256:…`) into `store`: the index
/// (digest-checked), its signature (checked before any large blob is fetched), the manifest for
/// this host, and that manifest's blobs, each streamed to `<store>/tmp/<hex>.partial`, resumed
/// with an HTTP Range request after an interruption, digest-checked and only then renamed into
/// place. Then the package is materialized atomically.
pub fn pull_to_store(
    src: &str,
    store: &Store,
    host: Option<&EngineHost<'_>>,
    trust: Trust<'_>,
    options: &RegistryOptions,
) -> Result<PullReport, PackageError> {
    let target = parse_ref(src)?;
    let client = client(&target.registry, options)?;
    let auth = options.auth.clone();
    let rt = runtime()?;
    rt.block_on(async {
        let mut report_bytes = 0u64;
        let root_ref = target.reference();
        let (bytes, digest) = client
            .pull_manifest_raw(&root_ref, &auth, &[MEDIA_INDEX])
            .await
            .map_err(|e| reg_err("pull", &root_ref, e))?;
        report_bytes += bytes.len() as u64;
        let index_digest =
            checked_digest(&bytes, Some(&digest), target.digest.as_deref(), &root_ref)?;
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| PackageError::Registry(format!("{root_ref}: not an image index: {e}")))?;
        if index.artifact_type.as_deref() != Some(crate::oci::ARTIFACT_TYPE) {
            return Err(PackageError::Registry(format!(
                "{root_ref} is not a Reflex policy (artifactType {:?}, expected {})",
                index.artifact_type,
                crate::oci::ARTIFACT_TYPE
            )));
        }
        // Trust first: nothing large is fetched for an unsigned or wrongly signed artifact.
        let key_id = match trust {
            Trust::AllowUnsigned => None,
            Trust::Keys(keys) => {
                let sig_tag = format!("sha256-{}", index_digest.trim_start_matches("sha256:"));
                let sig_ref =
                    Reference::with_tag(target.registry.clone(), target.repo.clone(), sig_tag);
                let (sig_bytes, sig_digest) = client
                    .pull_manifest_raw(&sig_ref, &auth, &[MEDIA_MANIFEST])
                    .await
                    .map_err(|e| match e {
                        // The registry answered: there is no signature under the fallback tag.
                        oci_client::errors::OciDistributionError::ImageManifestNotFoundError(_)
                        | oci_client::errors::OciDistributionError::RegistryError { .. }
                        | oci_client::errors::OciDistributionError::ServerError {
                            code: 404, ..
                        } => crate::oci::unsigned(src, &index_digest),
                        // It did not answer: try again later.
                        other => reg_err("pull signature from", &sig_ref, other),
                    })?;
                report_bytes += sig_bytes.len() as u64;
                checked_digest(&sig_bytes, Some(&sig_digest), None, &sig_ref)?;
                let sig_manifest: ImageManifest =
                    serde_json::from_slice(&sig_bytes).map_err(|e| {
                        PackageError::Signature(format!("{sig_ref}: not a signature manifest: {e}"))
                    })?;
                let layer = crate::oci::signature_layer(src, &index_digest, &sig_manifest)?;
                if layer.size > 1024 {
                    return Err(PackageError::Signature(format!(
                        "{sig_ref}: a {}-byte signature layer is not an ed25519 signature",
                        layer.size
                    )));
                }
                let mut sig = Vec::new();
                client
                    .pull_blob(&sig_ref, &blob_layer(layer), &mut sig)
                    .await
                    .map_err(|e| reg_err("pull signature from", &sig_ref, e))?;
                report_bytes += sig.len() as u64;
                checked_digest(&sig, None, Some(&layer.digest), &sig_ref)?;
                Some(crate::oci::check_signature(src, &index_digest, &sig, keys)?)
            }
        };
        let chosen = choose_manifest(&index, host, Path::new(src), "manifests")?;
        let manifest_ref = Reference::with_digest(
            target.registry.clone(),
            target.repo.clone(),
            chosen.digest.clone(),
        );
        let (manifest_bytes, _) = client
            .pull_manifest_raw(&manifest_ref, &auth, &[MEDIA_MANIFEST])
            .await
            .map_err(|e| reg_err("pull", &manifest_ref, e))?;
        report_bytes += manifest_bytes.len() as u64;
        // Checked against the digest the (signed) index names, not the registry's header.
        checked_digest(&manifest_bytes, None, Some(&chosen.digest), &manifest_ref)?;
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
            PackageError::Registry(format!("{manifest_ref}: not an image manifest: {e}"))
        })?;
        let (mut resumed, mut fetched) = (0u64, 0usize);
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if store.blob_path(&blob.digest).exists() {
                continue;
            }
            let (got, kept) = fetch_blob(
                &client,
                &manifest_ref,
                blob,
                store,
                options.test_pause_after_bytes,
            )
            .await?;
            report_bytes += got;
            resumed += kept;
            fetched += 1;
        }
        store.put_blob(&chosen.digest, &manifest_bytes)?;
        store.put_blob(&index_digest, &bytes)?;
        let package = store.materialize(&chosen.digest, &manifest)?;
        Ok(PullReport {
            pulled: Pulled::new(package, index_digest, chosen),
            key_id,
            bytes_downloaded: report_bytes,
            bytes_resumed: resumed,
            blobs_fetched: fetched,
        })
    })
}

/// The current digest of `src` (one HEAD request when the registry sends
/// `Docker-Content-Digest`, as distribution does): what a robot polling a channel compares.
pub fn head_digest(src: &str, options: &RegistryOptions) -> Result<String, PackageError> {
    let target = parse_ref(src)?;
    let client = client(&target.registry, options)?;
    let r = target.reference();
    runtime()?.block_on(async {
        client
            .fetch_manifest_digest(&r, &options.auth)
            .await
            .map_err(|e| reg_err("look up", &r, e))
    })
}

/// The image index behind `src` (digest-checked) and its digest.
pub fn fetch_index(
    src: &str,
    options: &RegistryOptions,
) -> Result<(String, ImageIndex), PackageError> {
    let (digest, bytes) = fetch_index_bytes(src, options)?;
    let index = serde_json::from_slice(&bytes)
        .map_err(|e| PackageError::Registry(format!("{src}: not an image index: {e}")))?;
    Ok((digest, index))
}

fn fetch_index_bytes(
    src: &str,
    options: &RegistryOptions,
) -> Result<(String, Vec<u8>), PackageError> {
    let target = parse_ref(src)?;
    let client = client(&target.registry, options)?;
    let r = target.reference();
    runtime()?.block_on(async {
        let (bytes, digest) = client
            .pull_manifest_raw(&r, &options.auth, &[MEDIA_INDEX])
            .await
            .map_err(|e| reg_err("pull", &r, e))?;
        let digest = checked_digest(&bytes, Some(&digest), target.digest.as_deref(), &r)?;
        Ok((digest, bytes.to_vec()))
    })
}

pub use crate::oci::ROLLOUT_ANNOTATION;

/// Whether `robot_id` is inside the rollout percentage annotated on `index` (no annotation:
/// 100%). The cohort is a hash of the robot id, so the same robots go first every time and
/// raising the percentage only adds robots.
pub fn in_rollout(robot_id: &str, index: &ImageIndex) -> bool {
    let percent: f64 = index
        .annotations
        .get(ROLLOUT_ANNOTATION)
        .and_then(|p| p.parse().ok())
        .unwrap_or(100.0);
    robot_bucket(robot_id) < percent
}

/// A robot's place in [0, 100) for rollouts.
pub fn robot_bucket(robot_id: &str) -> f64 {
    let h = sha256_bytes(robot_id.as_bytes());
    let n = u64::from_str_radix(&h[..12], 16).unwrap_or(0);
    (n % 10_000) as f64 / 100.0
}

/// Whether an error is the registry being unreachable or failing (retry later), rather than
/// the artifact being bad (refuse it).
pub fn is_transient(e: &PackageError) -> bool {
    match e {
        PackageError::Registry(m) => {
            !m.contains("not a Reflex policy")
                && !m.contains("is longer than")
                && !m.contains("not a sha256")
        }
        PackageError::Io { .. } => true,
        _ => false,
    }
}

/// The digest of `bytes`, which must equal `header` (the registry's answer) and `expected`
/// (what a parent or the reference names), when given.
fn checked_digest(
    bytes: &[u8],
    header: Option<&str>,
    expected: Option<&str>,
    r: &Reference,
) -> Result<String, PackageError> {
    let actual = format!("sha256:{}", sha256_bytes(bytes));
    for want in [header, expected].into_iter().flatten() {
        if want != actual {
            return Err(PackageError::Digest {
                file: PathBuf::from(r.to_string()),
                expected: want.trim_start_matches("sha256:").into(),
                actual: actual.trim_start_matches("sha256:").into(),
            });
        }
    }
    Ok(actual)
}

/// Streams one blob into `<store>/tmp/<hex>.partial`, resuming from what an earlier attempt
/// kept (HTTP Range), hashing as it writes; renames it into the store only when the sha256
/// matches. Returns (bytes received now, bytes kept from before).
async fn fetch_blob(
    client: &Client,
    r: &Reference,
    blob: &Descriptor,
    store: &Store,
    pause_after: Option<u64>,
) -> Result<(u64, u64), PackageError> {
    use sha2::Digest as _;
    use std::io::{Read, Seek, Write};
    let hex = blob.digest.trim_start_matches("sha256:");
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PackageError::Registry(format!(
            "{r}: `{}` is not a sha256 digest",
            blob.digest
        )));
    }
    let partial = store.root.join("tmp").join(format!("{hex}.partial"));
    let io = |e: std::io::Error| PackageError::Io {
        file: partial.clone(),
        source: e,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial)
        .map_err(io)?;
    let mut kept = file.metadata().map_err(io)?.len();
    if kept > blob.size {
        kept = 0;
    }
    file.set_len(kept).map_err(io)?;
    // Hash what an earlier attempt kept, then continue from there.
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
    let mut left = kept;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let pause_after = pause_after.filter(|&n| n > kept && n < blob.size);
    let mut received = 0u64;
    let mut written = kept;
    if written < blob.size {
        let response = client
            .pull_blob_stream_partial(r, &blob_layer(blob), kept, None)
            .await
            .map_err(|e| reg_err("pull blob from", r, e))?;
        let mut stream = match response {
            oci_client::client::BlobResponse::Partial(s) => s,
            oci_client::client::BlobResponse::Full(s) => {
                // The server ignored the range: start over.
                written = 0;
                hasher = sha2::Sha256::new();
                file.set_len(0).map_err(io)?;
                s
            }
        };
        file.seek(std::io::SeekFrom::Start(written)).map_err(io)?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                PackageError::Registry(format!(
                    "pulling {} from {r} was interrupted after {written} of {} bytes ({e}); the partial download is kept and the next pull resumes it",
                    blob.digest, blob.size
                ))
            })?;
            if written + chunk.len() as u64 > blob.size {
                return Err(PackageError::Registry(format!(
                    "{r}: blob {} is longer than the {} bytes its manifest names",
                    blob.digest, blob.size
                )));
            }
            writer.write_all(&chunk).map_err(io)?;
            hasher.update(&chunk);
            written += chunk.len() as u64;
            received += chunk.len() as u64;
            if let Some(n) = pause_after
                && written >= n
                && written - (chunk.len() as u64) < n
            {
                // Test hook: say where we are and pause, so a test can kill the registry here.
                writer.flush().map_err(io)?;
                let _ = std::fs::write(store.root.join("tmp/pull-paused"), written.to_string());
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
        writer.flush().map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if written != blob.size || actual != hex {
        let _ = std::fs::remove_file(&partial);
        return Err(PackageError::Digest {
            file: PathBuf::from(format!("{r} blob {}", blob.digest)),
            expected: hex.into(),
            actual: format!("{actual} ({written} of {} bytes)", blob.size),
        });
    }
    let dest = store.blob_path(&blob.digest);
    std::fs::rename(&partial, &dest).map_err(|e| PackageError::Io {
        file: dest.clone(),
        source: e,
    })?;
    crate::store::sync_dir(&store.root.join("blobs/sha256"))?;
    Ok((received, kept))
}

fn blob_layer(d: &Descriptor) -> oci_client::manifest::OciDescriptor {
    oci_client::manifest::OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_cohorts_are_stable_and_grow_with_the_percentage() {
        let index = |percent: Option<&str>| ImageIndex {
            schema_version: 2,
            media_type: MEDIA_INDEX.into(),
            artifact_type: None,
            manifests: Vec::new(),
            annotations: percent
                .map(|p| [(ROLLOUT_ANNOTATION.to_string(), p.to_string())].into())
                .unwrap_or_default(),
        };
        let robots: Vec<String> = (0..1000).map(|i| format!("robot-{i:04}")).collect();
        let share = |p: Option<&str>| robots.iter().filter(|r| in_rollout(r, &index(p))).count();
        assert_eq!(share(None), 1000);
        assert_eq!(share(Some("0")), 0);
        let ten = share(Some("10"));
        assert!((60..=140).contains(&ten), "{ten} of 1000 at 10%");
        // Raising the share only adds robots.
        for r in &robots {
            if in_rollout(r, &index(Some("10"))) {
                assert!(in_rollout(r, &index(Some("50"))), "{r}");
            }
        }
        assert_eq!(robot_bucket("robot-0001"), robot_bucket("robot-0001"));
    }

    #[test]
    fn plain_http_only_toward_loopback() {
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "registry.example.com",
            "10.0.0.5:5000",
            "192.168.1.2",
            "ghcr.io",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
