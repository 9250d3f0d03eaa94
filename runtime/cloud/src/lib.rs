//! The cloud policy link: a remote policy server speaking the openpi protocol (websocket,
//! msgpack-numpy frames, the server's metadata frame first, `Authorization: Api-Key …`) as a
//! command source. One non-RT thread: it sends the newest observation at `rate_hz`, mapped to
//! the server's keys, sizes and layouts ([`observation`]), reads the answers, and hands each
//! answer's whole action chunk, stamped with the time of the observation it answers, to the
//! loop's cloud chunk queue, where it is executed like a local chunk (interpolated to the loop
//! rate, spliced, aged) and goes through the same action map, arbitration and safety.
//!
//! Late answers (older than `timeout_ms` since their observation), answers nobody asked for (a
//! flood), malformed frames (not msgpack, no `actions`, wrong shape or width, NaN/inf) and
//! server errors (text frames) are dropped and counted, never queued; so is an answer that
//! finds every chunk buffer full. A lost link is retried with backoff while the last cloud
//! chunk ages out in the loop (the local policy, or a stop, takes over).
//!
//! # Guarantees
//! - The cloud is one more command source, never a privileged one: its actions pass the same
//!   action map, arbitration and safety layer as local ones.
//! - Nothing here runs on the RT thread; the only hop into it is the chunk channel's SPSC ring.
//! - An observation that is not whole (a state entry not finite, a camera missing) is not sent.
//! - TLS with the public roots (plus `ca_file`); plain `ws://` only toward loopback. The API key
//!   comes from the environment, never from the config file.
//!
//! # Config keys
//! `[cloud]` ([`CloudConfig`], absent = off): `url` (`wss://…`), `ca_file` (unset),
//! `api_key_env` (`REFLEX_CLOUD_API_KEY`), `timeout_ms` (300 ms, in [10, 5000]: a later answer
//! is dropped), `rate_hz` (10, in [0.5, 100] requests per second), `max_frame_bytes` (4 MiB; a
//! bigger frame closes the link), `action_rate_hz` (the spacing of an answer's actions; unset =
//! the local policy's `control_rate_hz`), `horizon_steps` (50, in 1..=1000: the steps of an
//! answer executed, the rest dropped), `[cloud.observation]` ([`observation::ObservationMap`]).
//!
//! # Example
//! ```
//! let c: reflex_cloud::CloudConfig =
//!     serde_json::from_str(r#"{"url": "ws://10.0.0.5:8000"}"#).unwrap();
//! let err = format!("{:#}", c.validate().unwrap_err());
//! assert!(err.contains("cloud.url"), "plain ws:// is for loopback only: {err}");
//! ```

#![forbid(unsafe_code)]

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rmpv::Value;
use serde::{Deserialize, Serialize};
use tungstenite::Message;

use reflex_core::metrics::Telemetry;
use reflex_rt::control::ChunkSender;

pub mod observation;
pub use observation::{CloudObservation, Mapping, ObservationMap};

/// `[cloud]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// `wss://host:port[/path]`; `ws://` only toward loopback (tests, a local proxy).
    pub url: String,
    /// Extra CA certificate (PEM) for a server with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Environment variable holding the API key (sent as `Authorization: Api-Key <key>`).
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// An answer later than this after its observation is dropped (ms).
    #[serde(default = "default_timeout")]
    pub timeout_ms: f64,
    /// Requests per second.
    #[serde(default = "default_rate")]
    pub rate_hz: f64,
    /// Largest frame accepted (bytes); bigger ones close the link.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// Spacing of an answer's actions (Hz); unset: the local policy's `control_rate_hz`.
    #[serde(default)]
    pub action_rate_hz: Option<f64>,
    /// Steps of an answer executed (the cloud queue's length); later ones are dropped.
    #[serde(default = "default_horizon")]
    pub horizon_steps: usize,
    /// `[cloud.observation]`: the server's keys, sizes and layouts (unset: `observation/state`
    /// and `observation/image`, see [`observation`]).
    #[serde(default)]
    pub observation: Option<ObservationMap>,
}

fn default_key_env() -> String {
    "REFLEX_CLOUD_API_KEY".into()
}
fn default_timeout() -> f64 {
    300.0
}
fn default_rate() -> f64 {
    10.0
}
fn default_max_frame() -> usize {
    4 << 20
}
fn default_horizon() -> usize {
    50
}

impl CloudConfig {
    pub fn validate(&self) -> Result<()> {
        let loopback = ["ws://127.", "ws://localhost", "ws://[::1]"]
            .iter()
            .any(|p| self.url.starts_with(p));
        anyhow::ensure!(
            self.url.starts_with("wss://") || loopback,
            "cloud.url = {:?}: use wss:// (TLS); plain ws:// only toward loopback",
            self.url
        );
        anyhow::ensure!(
            self.timeout_ms.is_finite() && (10.0..=5000.0).contains(&self.timeout_ms),
            "cloud.timeout_ms = {}: must be in [10, 5000]",
            self.timeout_ms
        );
        anyhow::ensure!(
            self.rate_hz.is_finite() && (0.5..=100.0).contains(&self.rate_hz),
            "cloud.rate_hz = {}: must be in [0.5, 100]",
            self.rate_hz
        );
        if let Some(r) = self.action_rate_hz {
            anyhow::ensure!(
                r.is_finite() && r > 0.0 && r <= 1000.0,
                "cloud.action_rate_hz = {r}: must be in (0, 1000]; fix: the rate the server's policy was trained at (DROID: 15)"
            );
        }
        anyhow::ensure!(
            (1..=1000).contains(&self.horizon_steps),
            "cloud.horizon_steps = {}: must be in 1..=1000",
            self.horizon_steps
        );
        Ok(())
    }

    /// The spacing of an answer's actions (ns) for a local policy running at `local_rate_hz`.
    pub fn action_step_ns(&self, local_rate_hz: f64) -> u64 {
        (1e9 / self.action_rate_hz.unwrap_or(local_rate_hz)).round() as u64
    }
}

/// What the link did.
#[derive(Debug, Default, Serialize)]
pub struct CloudStats {
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub requests: AtomicU64,
    pub commands: AtomicU64,
    pub dropped_late: AtomicU64,
    pub dropped_unsolicited: AtomicU64,
    pub dropped_malformed: AtomicU64,
    /// Answers that found every chunk buffer full (the loop had not merged the last ones).
    pub dropped_queue_full: AtomicU64,
    /// Observations not sent: not whole (a state entry not finite, a camera missing).
    pub observations_not_sent: AtomicU64,
    pub server_errors: AtomicU64,
}

impl CloudStats {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The running link.
#[derive(Debug)]
pub struct CloudLink {
    pub stats: Arc<CloudStats>,
    pub observation: Arc<Mutex<Option<CloudObservation>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CloudLink {
    /// Starts the link thread for the local policy `manifest` (the observation mapping is
    /// resolved against its cameras and state sources; answers must have its action width):
    /// answers go into `chunks` (the loop's cloud chunk channel, `config.horizon_steps` ×
    /// action width values per buffer), `prompt` is the task instruction.
    pub fn start(
        config: CloudConfig,
        manifest: &reflex_policy::PolicyManifest,
        prompt: String,
        chunks: ChunkSender,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self> {
        config.validate()?;
        let mapping = Mapping::resolve(config.observation.as_ref(), manifest)?;
        let dims = manifest.action_space.len();
        let tls = tls_config(&config)?;
        let api_key = std::env::var(&config.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let stats = Arc::new(CloudStats::default());
        let observation = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            config,
            tls,
            api_key,
            mapping,
            dims,
            prompt,
            chunks,
            telemetry,
            stats: stats.clone(),
            observation: observation.clone(),
            stop: stop.clone(),
            reported_width: false,
        };
        let thread = std::thread::Builder::new()
            .name("reflex-cloud".into())
            .spawn(move || worker.run())
            .context("cannot start the cloud link thread")?;
        Ok(Self {
            stats,
            observation,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for CloudLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tls_config(config: &CloudConfig) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots_anchors());
    if let Some(path) = &config.ca_file {
        use rustls_pki_types::pem::PemObject;
        let mut n = 0;
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(path).with_context(|| {
            format!(
                "cloud.ca_file = {}: cannot read it; fix: a PEM CA certificate",
                path.display()
            )
        })? {
            roots.add(cert.with_context(|| {
                format!("cloud.ca_file = {}: not a PEM certificate", path.display())
            })?)?;
            n += 1;
        }
        anyhow::ensure!(
            n > 0,
            "cloud.ca_file = {}: no certificate in it",
            path.display()
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn webpki_roots_anchors() -> Vec<rustls_pki_types::TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS.to_vec()
}

struct Worker {
    config: CloudConfig,
    tls: Arc<rustls::ClientConfig>,
    api_key: Option<String>,
    mapping: Mapping,
    /// The local policy's action width: an answer of another width is malformed.
    dims: usize,
    prompt: String,
    chunks: ChunkSender,
    telemetry: Arc<Telemetry>,
    stats: Arc<CloudStats>,
    observation: Arc<Mutex<Option<CloudObservation>>>,
    stop: Arc<AtomicBool>,
    /// Whether a wrong-width answer was reported (once per link).
    reported_width: bool,
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

impl Worker {
    fn run(mut self) {
        let mut backoff = 0.2f64;
        let mut reported = false;
        while !self.stop.load(Ordering::Acquire) {
            match self.connect() {
                Ok(ws) => {
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    self.telemetry.cloud_link.store(1, Ordering::Relaxed);
                    eprintln!("reflex: cloud link: connected to {}", self.config.url);
                    reported = false;
                    backoff = 0.2;
                    if let Err(e) = self.session(ws) {
                        eprintln!("reflex: cloud link: lost: {e:#}");
                    }
                    self.telemetry.cloud_link.store(0, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    self.telemetry.cloud_link.store(0, Ordering::Relaxed);
                    if !reported {
                        eprintln!(
                            "reflex: cloud link: cannot connect to {}: {e:#}; retrying (the local policy or a stop takes over)",
                            self.config.url
                        );
                        reported = true;
                    }
                }
            }
            let until = Instant::now() + Duration::from_secs_f64(backoff);
            while Instant::now() < until && !self.stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2.0).min(5.0);
        }
    }

    fn connect(&self) -> Result<Socket> {
        use tungstenite::client::IntoClientRequest;
        let mut request = self
            .config
            .url
            .as_str()
            .into_client_request()
            .with_context(|| format!("cloud.url = {:?} is not a websocket URL", self.config.url))?;
        if let Some(key) = &self.api_key {
            request.headers_mut().insert(
                "Authorization",
                format!("Api-Key {key}")
                    .parse()
                    .context("the API key is not a valid header value")?,
            );
        }
        let uri = request.uri().clone();
        let host = uri.host().context("cloud.url has no host")?;
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("wss") {
                443
            } else {
                80
            });
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()?
            .next()
            .with_context(|| format!("cannot resolve {host}"))?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut ws_config = tungstenite::protocol::WebSocketConfig::default();
        ws_config.max_message_size = Some(self.config.max_frame_bytes);
        ws_config.max_frame_size = Some(self.config.max_frame_bytes);
        let (mut ws, _) = tungstenite::client_tls_with_config(
            request,
            tcp,
            Some(ws_config),
            Some(tungstenite::Connector::Rustls(self.tls.clone())),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        // openpi: the server's metadata frame comes first.
        let meta = ws
            .read()
            .context("no metadata frame from the policy server")?;
        match meta {
            Message::Binary(b) => {
                let v = rmpv::decode::read_value(&mut &b[..])
                    .context("the metadata frame is not msgpack")?;
                anyhow::ensure!(v.is_map(), "the metadata frame is not a map");
            }
            other => anyhow::bail!("expected the metadata frame, got {other:?}"),
        }
        set_read_timeout(&ws, Duration::from_millis(5))?;
        Ok(ws)
    }

    fn session(&mut self, mut ws: Socket) -> Result<()> {
        let period = Duration::from_secs_f64(1.0 / self.config.rate_hz);
        let mut next_send = Instant::now();
        // Observation times of the requests sent and not yet answered, oldest first. openpi
        // answers in order and carries no request id, so answers are matched by order; one
        // later than `timeout_ms` is dropped when it comes.
        let mut pending: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
        let mut obs = CloudObservation::default();
        let mut sent_obs_ns = 0;
        while !self.stop.load(Ordering::Acquire) {
            if pending.len() < 2 && Instant::now() >= next_send {
                next_send = Instant::now() + period;
                let have = {
                    let slot = self.observation.lock().unwrap_or_else(|e| e.into_inner());
                    match &*slot {
                        Some(o) if o.t_obs_ns != sent_obs_ns => {
                            obs.clone_from(o);
                            true
                        }
                        _ => false,
                    }
                };
                if have {
                    sent_obs_ns = obs.t_obs_ns;
                    match self.mapping.encode(&obs, &self.prompt)? {
                        Some(frame) => {
                            ws.send(Message::Binary(frame.into()))
                                .context("cannot send the observation")?;
                            self.stats.requests.fetch_add(1, Ordering::Relaxed);
                            pending.push_back(obs.t_obs_ns);
                        }
                        None => {
                            self.stats
                                .observations_not_sent
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            // Read what arrived, a bounded number of frames per turn.
            for _ in 0..64 {
                let msg = match ws.read() {
                    Ok(m) => m,
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        break;
                    }
                    Err(e) => return Err(anyhow::anyhow!("{e}")),
                };
                match msg {
                    Message::Binary(b) => {
                        let Some(t_obs) = pending.pop_front() else {
                            self.stats
                                .dropped_unsolicited
                                .fetch_add(1, Ordering::Relaxed);
                            self.telemetry.cloud_dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        self.on_answer(&b, t_obs);
                    }
                    Message::Text(t) => {
                        // openpi servers report errors as text frames (in place of an answer).
                        self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
                        self.telemetry.cloud_dropped.fetch_add(1, Ordering::Relaxed);
                        if pending.pop_front().is_some() {
                            eprintln!(
                                "reflex: cloud link: server error: {}",
                                t.chars().take(200).collect::<String>()
                            );
                        }
                    }
                    Message::Close(_) => anyhow::bail!("the server closed the link"),
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = ws.close(None);
        Ok(())
    }

    fn on_answer(&mut self, frame: &[u8], t_obs: u64) {
        let now = reflex_rt::ticker::now_ns();
        if now.saturating_sub(t_obs) > (self.config.timeout_ms * 1e6) as u64 {
            self.stats.dropped_late.fetch_add(1, Ordering::Relaxed);
            self.telemetry.cloud_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let actions = match decode_actions(frame, self.dims, self.config.horizon_steps) {
            Ok(a) => a,
            Err(why) => {
                if let Malformed::Width(got) = why
                    && !self.reported_width
                {
                    self.reported_width = true;
                    eprintln!(
                        "reflex: cloud link: answers have {got} action dimensions, the policy's action map has {}; dropped (fix the server's output transform or the package)",
                        self.dims
                    );
                }
                self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                self.telemetry.cloud_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if self.chunks.try_send(t_obs, &actions, 0) {
            self.stats.commands.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            self.telemetry.cloud_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn set_read_timeout(ws: &Socket, d: Duration) -> Result<()> {
    use tungstenite::stream::MaybeTlsStream;
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.set_read_timeout(Some(d))?,
        MaybeTlsStream::Rustls(s) => s.sock.set_read_timeout(Some(d))?,
        _ => {}
    }
    Ok(())
}

fn get<'a>(map: &'a [(Value, Value)], key: &[u8]) -> Option<&'a Value> {
    map.iter().find_map(|(k, v)| {
        let matches = match k {
            Value::Binary(b) => b.as_slice() == key,
            Value::String(s) => s.as_bytes() == key,
            _ => false,
        };
        matches.then_some(v)
    })
}

/// Why an answer was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not a msgpack map with an `actions` ndarray of float32/float64 of rank 1 or 2.
    Frame,
    /// `actions` has this many columns, not the policy's action width.
    Width(usize),
    /// No steps, or a value not finite.
    Values,
}

/// An answer's `actions` (`(H, A)` or `(A,)`, float32/float64, every value finite, `A` =
/// `dims`) as row-major f32, at most `max_steps` rows (later ones dropped).
pub fn decode_actions(frame: &[u8], dims: usize, max_steps: usize) -> Result<Vec<f32>, Malformed> {
    let v = rmpv::decode::read_value(&mut &frame[..]).map_err(|_| Malformed::Frame)?;
    let Value::Map(map) = v else {
        return Err(Malformed::Frame);
    };
    let Some(Value::Map(arr)) = get(&map, b"actions") else {
        return Err(Malformed::Frame);
    };
    if get(arr, b"__ndarray__").and_then(Value::as_bool) != Some(true) {
        return Err(Malformed::Frame);
    }
    let Some(Value::Binary(data)) = get(arr, b"data") else {
        return Err(Malformed::Frame);
    };
    let dtype = get(arr, b"dtype")
        .and_then(Value::as_str)
        .ok_or(Malformed::Frame)?;
    let shape: Vec<usize> = get(arr, b"shape")
        .and_then(Value::as_array)
        .ok_or(Malformed::Frame)?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or(Malformed::Frame)?;
    let (rows, cols) = match shape.as_slice() {
        [a] => (1, *a),
        [h, a] => (*h, *a),
        _ => return Err(Malformed::Frame),
    };
    if cols != dims {
        return Err(Malformed::Width(cols));
    }
    let size = match dtype {
        "<f4" => 4,
        "<f8" => 8,
        _ => return Err(Malformed::Frame),
    };
    if rows.checked_mul(cols).and_then(|n| n.checked_mul(size)) != Some(data.len()) {
        return Err(Malformed::Frame);
    }
    if rows == 0 {
        return Err(Malformed::Values);
    }
    let keep = rows.min(max_steps) * cols;
    let values: Vec<f32> = if size == 4 {
        data.chunks_exact(4)
            .take(keep)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .take(keep)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect()
    };
    if values.iter().all(|v| v.is_finite()) {
        Ok(values)
    } else {
        Err(Malformed::Values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::observation::ndarray;

    fn answer(values: &[f32], shape: &[i64]) -> Vec<u8> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        rmpv::encode::write_value(
            &mut out,
            &Value::Map(vec![(Value::from("actions"), ndarray(data, "<f4", shape))]),
        )
        .unwrap();
        out
    }

    #[test]
    fn whole_chunks_decode_and_garbage_does_not() {
        let a = decode_actions(&answer(&[0.5, 0.0, 0.1, 0.4, 0.0, 0.2], &[2, 3]), 3, 50).unwrap();
        assert_eq!(a, vec![0.5, 0.0, 0.1, 0.4, 0.0, 0.2]);
        // Longer than the queue: the first steps are kept.
        let a = decode_actions(&answer(&[0.5, 0.0, 0.1, 0.4, 0.0, 0.2], &[2, 3]), 3, 1).unwrap();
        assert_eq!(a, vec![0.5, 0.0, 0.1]);
        assert_eq!(decode_actions(b"not msgpack", 3, 50), Err(Malformed::Frame));
        assert_eq!(
            decode_actions(&answer(&[f32::NAN], &[1]), 1, 50),
            Err(Malformed::Values)
        );
        // Another width than the action map's: named, not cut or padded.
        assert_eq!(
            decode_actions(&answer(&[0.0; 8], &[1, 8]), 3, 50),
            Err(Malformed::Width(8))
        );
        // A shape that does not describe the data.
        assert_eq!(
            decode_actions(&answer(&[0.0; 5], &[2, 3]), 3, 50),
            Err(Malformed::Frame)
        );
    }
}
