//! Uploads finished flight recordings (`<recorder.dir>/queue/*.mcap`, oldest first) to
//! S3-compatible storage with `object_store`: multipart, SHA-256 checksums, retried with
//! exponential backoff; a file leaves the queue only after the object is confirmed. Before each
//! upload the key is looked up, so a restart after an upload that was not yet removed locally
//! never uploads it twice; the queue itself survives restarts (it is the directory).
//!
//! `[recorder.upload]`: `bucket`, `endpoint` (unset = AWS), `region`, `prefix`, `allow_http`.
//! Credentials come only from the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
//! (and `AWS_SESSION_TOKEN`), never from the config file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use serde::Deserialize;

use reflex_core::metrics::Telemetry;

/// `[recorder.upload]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    pub bucket: String,
    /// `https://…` of an S3-compatible service; unset = AWS S3.
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Key prefix; default `recordings/<robot_id>/`.
    pub prefix: Option<String>,
    /// Plain HTTP toward a non-loopback endpoint (loopback is always allowed).
    #[serde(default)]
    pub allow_http: bool,
    /// Longest wait between retries (s).
    #[serde(default = "default_retry_max")]
    pub retry_max_s: f64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_retry_max() -> f64 {
    60.0
}

impl UploadConfig {
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            !self.bucket.is_empty(),
            "recorder.upload.bucket is empty; fix: the bucket name"
        );
        if let Some(e) = &self.endpoint {
            let loopback = e.starts_with("http://127.")
                || e.starts_with("http://localhost")
                || e.starts_with("http://[::1]");
            anyhow::ensure!(
                e.starts_with("https://")
                    || (e.starts_with("http://") && (loopback || self.allow_http)),
                "recorder.upload.endpoint = {e:?}: use https://, or http:// toward loopback (or set recorder.upload.allow_http = true)"
            );
        }
        anyhow::ensure!(
            self.retry_max_s.is_finite() && self.retry_max_s >= 1.0,
            "recorder.upload.retry_max_s = {}: must be ≥ 1",
            self.retry_max_s
        );
        Ok(())
    }
}

/// Drains the recorder's queue into a bucket.
#[derive(Debug)]
pub struct Uploader {
    store: Arc<dyn ObjectStore>,
    queue_dir: PathBuf,
    prefix: String,
    retry_max_s: f64,
    telemetry: Arc<Telemetry>,
}

/// What one drain did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DrainReport {
    pub uploaded: Vec<String>,
    /// Already in the bucket (an earlier run uploaded them, then stopped before removing them).
    pub already_uploaded: Vec<String>,
    pub remaining: usize,
}

impl Uploader {
    pub fn new(
        config: &UploadConfig,
        robot_id: &str,
        queue_dir: &Path,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self> {
        config.validate()?;
        let key = std::env::var("AWS_ACCESS_KEY_ID")
            .ok()
            .filter(|k| !k.is_empty());
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        let (Some(key), Some(secret)) = (key, secret) else {
            anyhow::bail!(
                "recorder.upload: no credentials; fix: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones) in the \
                 environment of reflex (never in the config file)"
            );
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_checksum_algorithm(Checksum::SHA256)
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(30),
                ..Default::default()
            });
        if let Ok(token) = std::env::var("AWS_SESSION_TOKEN")
            && !token.is_empty()
        {
            b = b.with_token(token);
        }
        if let Some(endpoint) = &config.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = b.build().with_context(|| {
            format!(
                "recorder.upload: cannot configure the S3 client for bucket {:?}",
                config.bucket
            )
        })?;
        Ok(Self {
            store: Arc::new(store),
            queue_dir: queue_dir.to_path_buf(),
            prefix: config
                .prefix
                .clone()
                .unwrap_or_else(|| format!("recordings/{robot_id}/")),
            retry_max_s: config.retry_max_s,
            telemetry,
        })
    }

    fn key(&self, file: &Path) -> ObjectPath {
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        ObjectPath::from(format!("{}{name}", self.prefix))
    }

    /// Uploads `file` unless the bucket already has it; then removes it from the queue.
    /// Returns whether it was already there.
    async fn upload_one(&self, file: &Path) -> Result<bool> {
        let key = self.key(file);
        let data = match std::fs::read(file) {
            Ok(d) => d,
            // The disk budget dropped it meanwhile (counted there).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        let already = match self.store.head(&key).await {
            Ok(meta) => meta.size == data.len() as u64,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(
                e @ (object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }),
            ) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the storage refused the credentials for s3 key {key}; fix: check \
                     AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the key's rights on the bucket"
                )));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot look up s3 key {key}")));
            }
        };
        if !already {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .with_context(|| format!("cannot start the multipart upload of {key}"))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
            w.write(&data);
            w.finish()
                .await
                .with_context(|| format!("upload of {key} failed"))?;
            let meta = self
                .store
                .head(&key)
                .await
                .with_context(|| format!("cannot confirm the upload of {key}"))?;
            anyhow::ensure!(
                meta.size == data.len() as u64,
                "{key}: the bucket holds {} bytes, the file has {}",
                meta.size,
                data.len()
            );
            self.telemetry.uploads.fetch_add(1, Ordering::Relaxed);
        }
        match std::fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
        if let Ok(d) = std::fs::File::open(&self.queue_dir) {
            let _ = d.sync_all();
        }
        Ok(already)
    }

    /// Uploads every queued recording, oldest first; stops at the first failure.
    pub async fn drain(&self) -> Result<DrainReport> {
        let mut report = DrainReport::default();
        let files = queued(&self.queue_dir)?;
        for (i, (file, _)) in files.iter().enumerate() {
            let name = file.display().to_string();
            match self.upload_one(file).await {
                Ok(true) => report.already_uploaded.push(name),
                Ok(false) => report.uploaded.push(name),
                Err(e) => {
                    self.telemetry
                        .upload_failures
                        .fetch_add(1, Ordering::Relaxed);
                    report.remaining = files.len() - i;
                    return Err(e.context(format!(
                        "{} recordings stay queued in {}",
                        report.remaining,
                        self.queue_dir.display()
                    )));
                }
            }
        }
        Ok(report)
    }

    /// Drains now and every few seconds until `stop`, backing off exponentially on failures
    /// (the recordings stay queued on disk meanwhile).
    pub fn spawn(self, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("reflex-upload".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("reflex: uploader: cannot start its runtime: {e}");
                        return;
                    }
                };
                let mut backoff = 1.0f64;
                let mut failing = false;
                while !stop.load(Ordering::Acquire) {
                    let wait = match rt.block_on(self.drain()) {
                        Ok(_) => {
                            if failing {
                                eprintln!("reflex: uploader: uploads work again");
                            }
                            failing = false;
                            backoff = 1.0;
                            2.0
                        }
                        Err(e) => {
                            if !failing {
                                eprintln!("reflex: uploader: {e:#}; retrying with backoff");
                            }
                            failing = true;
                            backoff = (backoff * 2.0).min(self.retry_max_s);
                            backoff
                        }
                    };
                    let until =
                        std::time::Instant::now() + std::time::Duration::from_secs_f64(wait);
                    while std::time::Instant::now() < until && !stop.load(Ordering::Acquire) {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            })
            .context("cannot start the upload thread")
    }
}

/// Finished recordings in `dir` (name-sorted = oldest first) with their sizes.
pub fn queued(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "mcap") {
            out.push((p, e.metadata()?.len()));
        }
    }
    out.sort();
    Ok(out)
}
