//! OCI registries (distribution spec) through `oci-client`: push a policy artifact from an
//! image layout (blobs, per-target manifests, the index under its tag, and its signature
//! referrer under the `sha256-<hex>` tag fallback), and pull one back into a local layout,
//! checking every digest before anything is stored. Plain HTTP only for loopback registries.

use std::path::PathBuf;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::PackageError;
use crate::manifest::sha256_bytes;
use crate::oci::{Descriptor, ImageIndex, ImageManifest, Layout};

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// `oci://host[:port]/repo:tag` → (registry, repository, tag).
pub fn parse_ref(reference: &str) -> Result<(String, String, String), PackageError> {
    let bad = || {
        PackageError::Registry(format!(
            "{reference:?}: expected oci://host[:port]/repository:tag"
        ))
    };
    let rest = reference.strip_prefix("oci://").ok_or_else(bad)?;
    let (registry, path) = rest.split_once('/').ok_or_else(bad)?;
    let (repo, tag) = path.rsplit_once(':').ok_or_else(bad)?;
    if registry.is_empty() || repo.is_empty() || tag.is_empty() {
        return Err(bad());
    }
    Ok((registry.into(), repo.into(), tag.into()))
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    host == "localhost" || host == "[::1]" || host.starts_with("127.")
}

fn client(registry: &str) -> Client {
    // HTTPS by default; plain HTTP only toward this machine.
    let protocol = if is_loopback(registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        ..ClientConfig::default()
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, PackageError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PackageError::Registry(format!("cannot start the I/O runtime: {e}")))
}

fn reg_err(what: &str, reference: &Reference, e: impl std::fmt::Display) -> PackageError {
    PackageError::Registry(format!("{what} {reference}: {e}"))
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
pub fn push(layout: &Layout, tag: &str, dest: &str) -> Result<String, PackageError> {
    let (registry, repo, dest_tag) = parse_ref(dest)?;
    let root = layout.resolve(tag)?;
    let sig_tag = format!("sha256-{}", root.digest.trim_start_matches("sha256:"));
    let signature = layout.resolve(&sig_tag).ok();
    let client = client(&registry);
    let rt = runtime()?;
    rt.block_on(async {
        let mut roots = vec![(root.clone(), dest_tag.clone())];
        if let Some(sig) = signature {
            roots.push((sig, sig_tag.clone()));
        }
        for (root, tag) in roots {
            let (manifests, blobs) = closure(layout, &root)?;
            let repo_ref = Reference::with_tag(registry.clone(), repo.clone(), tag.clone());
            for blob in &blobs {
                let bytes = layout.read_blob(blob)?;
                client
                    .push_blob(&repo_ref, bytes, &blob.digest)
                    .await
                    .map_err(|e| reg_err("push blob to", &repo_ref, e))?;
            }
            // Child manifests by digest, then the root under its tag.
            for m in manifests.iter().filter(|m| m.digest != root.digest) {
                let r = Reference::with_digest(registry.clone(), repo.clone(), m.digest.clone());
                let bytes = layout.read_blob(m)?;
                client
                    .push_manifest_raw(&r, bytes, MEDIA_MANIFEST.parse().expect("valid header"))
                    .await
                    .map_err(|e| reg_err("push manifest to", &r, e))?;
            }
            let bytes = layout.read_blob(&root)?;
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
        }
        Ok(root.digest.clone())
    })
}

/// Pulls `src` (`oci://host[:port]/repo:tag`) and its signature referrer into `layout` under
/// `local_tag`; every manifest and blob is digest-checked before it is stored. Returns the
/// index digest.
pub fn pull_into_layout(
    src: &str,
    layout: &Layout,
    local_tag: &str,
) -> Result<String, PackageError> {
    let (registry, repo, tag) = parse_ref(src)?;
    let client = client(&registry);
    let rt = runtime()?;
    rt.block_on(async {
        let tagged = Reference::with_tag(registry.clone(), repo.clone(), tag.clone());
        let (bytes, digest) = client
            .pull_manifest_raw(
                &tagged,
                &RegistryAuth::Anonymous,
                &[MEDIA_INDEX, MEDIA_MANIFEST],
            )
            .await
            .map_err(|e| reg_err("pull", &tagged, e))?;
        let root = store_checked(layout, MEDIA_INDEX, &bytes, &digest, &tagged)?;
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| PackageError::Registry(format!("{tagged}: not an image index: {e}")))?;
        fetch_manifests(&client, layout, &registry, &repo, &index.manifests).await?;
        // The signature, through the referrers tag fallback (docker-registry 2.8 has no
        // referrers API).
        let sig_tag = format!("sha256-{}", root.digest.trim_start_matches("sha256:"));
        let sig_ref = Reference::with_tag(registry.clone(), repo.clone(), sig_tag.clone());
        if let Ok((bytes, digest)) = client
            .pull_manifest_raw(&sig_ref, &RegistryAuth::Anonymous, &[MEDIA_MANIFEST])
            .await
        {
            let desc = store_checked(layout, MEDIA_MANIFEST, &bytes, &digest, &sig_ref)?;
            fetch_manifests(
                &client,
                layout,
                &registry,
                &repo,
                std::slice::from_ref(&desc),
            )
            .await?;
            let mut tagged_desc = desc;
            tagged_desc.artifact_type = Some(crate::oci::SIGNATURE_ARTIFACT_TYPE.into());
            layout.tag(&sig_tag, &tagged_desc)?;
        }
        let mut tagged_root = root.clone();
        tagged_root.artifact_type = index.artifact_type.clone();
        layout.tag(local_tag, &tagged_root)?;
        Ok(root.digest)
    })
}

/// Stores manifest bytes after checking them against `digest` (the registry's answer).
fn store_checked(
    layout: &Layout,
    media: &str,
    bytes: &[u8],
    digest: &str,
    r: &Reference,
) -> Result<Descriptor, PackageError> {
    let actual = format!("sha256:{}", sha256_bytes(bytes));
    if actual != digest {
        return Err(PackageError::Digest {
            file: PathBuf::from(r.to_string()),
            expected: digest.trim_start_matches("sha256:").into(),
            actual: actual.trim_start_matches("sha256:").into(),
        });
    }
    layout.put_blob(media, bytes)
}

async fn fetch_manifests(
    client: &Client,
    layout: &Layout,
    registry: &str,
    repo: &str,
    entries: &[Descriptor],
) -> Result<(), PackageError> {
    for entry in entries {
        let r = Reference::with_digest(registry.into(), repo.into(), entry.digest.clone());
        let bytes = if layout.read_blob(entry).is_ok() {
            layout.read_blob(entry)?
        } else {
            let (bytes, _) = client
                .pull_manifest_raw(&r, &RegistryAuth::Anonymous, &[MEDIA_MANIFEST])
                .await
                .map_err(|e| reg_err("pull", &r, e))?;
            // Checked against the digest the parent names, not the registry's header.
            store_checked(layout, MEDIA_MANIFEST, &bytes, &entry.digest, &r)?;
            bytes.to_vec()
        };
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| PackageError::Registry(format!("{r}: not an image manifest: {e}")))?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if layout.read_blob(blob).is_ok() {
                continue;
            }
            let mut data = Vec::with_capacity(blob.size as usize);
            let layer = blob_layer(blob);
            client
                .pull_blob(&r, &layer, &mut data)
                .await
                .map_err(|e| reg_err("pull blob from", &r, e))?;
            let desc = store_checked(layout, &blob.media_type, &data, &blob.digest, &r)?;
            debug_assert_eq!(desc.digest, blob.digest);
        }
    }
    Ok(())
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
