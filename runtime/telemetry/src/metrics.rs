//! The metrics endpoint: `[telemetry] metrics_bind = "127.0.0.1:9464"` (or `--metrics-bind`)
//! serves [`Telemetry::render`] at `GET /metrics` from a non-RT thread; unset = off. A
//! non-loopback address needs `metrics_allow_remote = true` (the endpoint has no auth).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
pub use reflex_core::metrics::Telemetry;
use serde::Deserialize;

/// `[telemetry]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `host:port` of the metrics endpoint; unset = no endpoint.
    pub metrics_bind: Option<String>,
    /// Allow a non-loopback `metrics_bind` (the endpoint has no authentication).
    pub metrics_allow_remote: bool,
}

impl TelemetryConfig {
    /// The address to bind, checked: a parseable `host:port`, loopback unless allowed.
    pub fn bind_addr(&self) -> Result<Option<SocketAddr>> {
        let Some(bind) = self.metrics_bind.as_deref().filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let addr: SocketAddr = bind.parse().with_context(|| {
            format!(
                "telemetry.metrics_bind = {bind:?}: expected IP:PORT; fix: e.g. \"127.0.0.1:9464\""
            )
        })?;
        anyhow::ensure!(
            addr.ip().is_loopback() || self.metrics_allow_remote,
            "telemetry.metrics_bind = {bind:?} is not a loopback address and the endpoint has no \
             authentication; fix: bind 127.0.0.1 (scrape through an SSH tunnel or a local agent) \
             or set telemetry.metrics_allow_remote = true"
        );
        Ok(Some(addr))
    }
}

/// The metrics endpoint: a thread answering `GET /metrics` (anything else: 404) until `stop`.
#[derive(Debug)]
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, telemetry: Arc<Telemetry>) -> Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| {
            format!(
                "telemetry.metrics_bind = \"{addr}\": cannot listen there (in use?); fix: choose \
                 a free port, or port 0 for any"
            )
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("reflex-metrics".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let _ = serve(stream, &telemetry);
                            }
                            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                        }
                    }
                })
                .context("cannot start the metrics thread")?
        };
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, telemetry: &Telemetry) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(std::time::Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut stream = stream;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    if request.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
        let body = telemetry.render();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = "only GET /metrics is served here\n";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_bind_needs_consent() {
        let c = TelemetryConfig {
            metrics_bind: Some("0.0.0.0:9464".into()),
            metrics_allow_remote: false,
        };
        assert!(format!("{:#}", c.bind_addr().unwrap_err()).contains("metrics_allow_remote"),);
        let c = TelemetryConfig {
            metrics_bind: Some("localhost:9464".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", c.bind_addr().unwrap_err()).contains("IP:PORT"));
    }
}
