//! The cloud policy link: a remote policy server speaking the openpi protocol (websocket,
//! msgpack-numpy frames, the server's metadata frame first, `Authorization: Api-Key …`) as a
//! command source. One non-RT thread: it sends the newest observation at `rate_hz`, reads the
//! answers, and hands each action to the loop's arbiter as a [`CloudCommand`] stamped with the
//! observation's time, where it goes through the same arbitration and safety as local ones.
//!
//! Late answers (older than `timeout_ms` since their observation), answers nobody asked for (a
//! flood), malformed frames (not msgpack, no `actions`, wrong shape, NaN/inf) and server errors
//! (text frames) are dropped and counted, never queued: the inbox holds 8 commands and a full
//! one drops the newest. A lost link is retried with backoff while the last cloud command ages
//! out in the arbiter (the local policy, or a stop, takes over).
//!
//! # Guarantees
//! - The cloud is one more command source, never a privileged one: its commands pass the same
//!   arbitration and the same safety layer; a cloud stop request wins and holds until a newer
//!   cloud command lifts it.
//! - Nothing here runs on the RT thread; the only hop into it is the arbiter's SPSC inbox.
//! - TLS with the public roots (plus `ca_file`); plain `ws://` only toward loopback. The API key
//!   comes from the environment, never from the config file.
//!
//! # Config keys
//! `[cloud]` ([`CloudConfig`], absent = off): `url` (`wss://…`), `ca_file` (unset),
//! `api_key_env` (`REFLEX_CLOUD_API_KEY`), `timeout_ms` (300 ms, in [10, 5000]: a later answer
//! is dropped), `rate_hz` (10, in [0.5, 100] requests per second), `max_frame_bytes` (1 MiB; a
//! bigger frame closes the link).
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

use reflex_core::actions::ActionTarget;
use reflex_core::metrics::Telemetry;
use reflex_rt::arbiter::CloudCommand;

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
    1 << 20
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
        Ok(())
    }
}

/// The newest observation for the cloud (written by the robot-I/O thread, never the RT thread).
#[derive(Debug, Clone, Default)]
pub struct CloudObservation {
    pub t_obs_ns: u64,
    pub state: Vec<f32>,
    /// The policy's image tensor as the local policy gets it (u8), with its shape.
    pub image: Option<(Vec<u8>, Vec<i64>)>,
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
    pub dropped_inbox_full: AtomicU64,
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
    /// Starts the link thread; `axes` maps action dimensions onto the base (joint and gripper
    /// dimensions are not sent by the cloud link yet) (the local policy's
    /// action space), `prompt` is the task instruction.
    pub fn start(
        config: CloudConfig,
        axes: Vec<ActionTarget>,
        prompt: String,
        inbox: Arc<reflex_rt::arbiter::Inbox<CloudCommand>>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self> {
        config.validate()?;
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
            axes,
            prompt,
            inbox,
            telemetry,
            stats: stats.clone(),
            observation: observation.clone(),
            stop: stop.clone(),
            seq: 0,
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
    axes: Vec<ActionTarget>,
    prompt: String,
    inbox: Arc<reflex_rt::arbiter::Inbox<CloudCommand>>,
    telemetry: Arc<Telemetry>,
    stats: Arc<CloudStats>,
    observation: Arc<Mutex<Option<CloudObservation>>>,
    stop: Arc<AtomicBool>,
    seq: u64,
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
        while !self.stop.load(Ordering::Acquire) {
            if pending.len() < 2 && Instant::now() >= next_send {
                next_send = Instant::now() + period;
                let obs = self
                    .observation
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(obs) = obs {
                    let frame = encode_observation(&obs, &self.prompt)?;
                    ws.send(Message::Binary(frame.into()))
                        .context("cannot send the observation")?;
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    pending.push_back(obs.t_obs_ns);
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
        let Some(action) = decode_first_action(frame) else {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            self.telemetry.cloud_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut base = reflex_safety::Twist::default();
        for (v, axis) in action.iter().zip(&self.axes) {
            match axis {
                ActionTarget::BaseVx => base.vx_mps = *v,
                ActionTarget::BaseVy => base.vy_mps = *v,
                ActionTarget::BaseWz => base.wz_radps = *v,
                // The cloud link carries base commands only (joint chunks: not yet).
                _ => {}
            }
        }
        self.seq += 1;
        let c = CloudCommand {
            seq: self.seq,
            t_ns: t_obs,
            base,
            stop: false,
        };
        if !self.inbox.try_send(c) {
            self.stats
                .dropped_inbox_full
                .fetch_add(1, Ordering::Relaxed);
            self.telemetry.cloud_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.commands.fetch_add(1, Ordering::Relaxed);
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

fn ndarray(data: Vec<u8>, dtype: &str, shape: &[i64]) -> Value {
    Value::Map(vec![
        (Value::Binary(b"__ndarray__".to_vec()), Value::Boolean(true)),
        (Value::Binary(b"data".to_vec()), Value::Binary(data)),
        (Value::Binary(b"dtype".to_vec()), Value::from(dtype)),
        (
            Value::Binary(b"shape".to_vec()),
            Value::Array(shape.iter().map(|&d| Value::from(d)).collect()),
        ),
    ])
}

/// An openpi observation: `observation/state` (f32), `observation/image` (u8, the local
/// policy's layout), `prompt`, and the robot's observation time.
pub fn encode_observation(obs: &CloudObservation, prompt: &str) -> Result<Vec<u8>> {
    let state: Vec<u8> = obs.state.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut map = vec![
        (
            Value::from("observation/state"),
            ndarray(state, "<f4", &[obs.state.len() as i64]),
        ),
        (Value::from("prompt"), Value::from(prompt)),
        (Value::from("reflex/t_obs_ns"), Value::from(obs.t_obs_ns)),
    ];
    if let Some((data, shape)) = &obs.image {
        map.push((
            Value::from("observation/image"),
            ndarray(data.clone(), "|u1", shape),
        ));
    }
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &Value::Map(map))?;
    Ok(out)
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

/// The first action of an answer's `actions` (`(H, A)` or `(A,)`, float32/float64, finite), or
/// None when the frame is not that.
pub fn decode_first_action(frame: &[u8]) -> Option<Vec<f64>> {
    let v = rmpv::decode::read_value(&mut &frame[..]).ok()?;
    let Value::Map(map) = v else { return None };
    let Value::Map(arr) = get(&map, b"actions")? else {
        return None;
    };
    if get(arr, b"__ndarray__")?.as_bool() != Some(true) {
        return None;
    }
    let data = match get(arr, b"data")? {
        Value::Binary(b) => b,
        _ => return None,
    };
    let dtype = get(arr, b"dtype")?.as_str()?;
    let shape: Vec<usize> = get(arr, b"shape")?
        .as_array()?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()?;
    let (rows, cols) = match shape.as_slice() {
        [a] => (1, *a),
        [h, a] => (*h, *a),
        _ => return None,
    };
    if rows == 0 || cols == 0 || cols > 64 {
        return None;
    }
    let values: Vec<f64> = match dtype {
        "<f4" => {
            if data.len() != rows * cols * 4 {
                return None;
            }
            data.chunks_exact(4)
                .take(cols)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        "<f8" => {
            if data.len() != rows * cols * 8 {
                return None;
            }
            data.chunks_exact(8)
                .take(cols)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        }
        _ => return None,
    };
    values.iter().all(|v| v.is_finite()).then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_decode_and_garbage_does_not() {
        let mut out = Vec::new();
        let data: Vec<u8> = [0.5f32, 0.0, 0.1, 0.4, 0.0, 0.2]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        rmpv::encode::write_value(
            &mut out,
            &Value::Map(vec![(
                Value::from("actions"),
                ndarray(data, "<f4", &[2, 3]),
            )]),
        )
        .unwrap();
        let a = decode_first_action(&out).unwrap();
        assert_eq!(a.len(), 3);
        assert!((a[0] - 0.5).abs() < 1e-6 && (a[2] - 0.1).abs() < 1e-6);
        assert!(decode_first_action(b"not msgpack").is_none());
        let mut nan = Vec::new();
        rmpv::encode::write_value(
            &mut nan,
            &Value::Map(vec![(
                Value::from("actions"),
                ndarray(f32::NAN.to_le_bytes().to_vec(), "<f4", &[1]),
            )]),
        )
        .unwrap();
        assert!(decode_first_action(&nan).is_none());
    }
}
