//! What Reflex tells about a run, all off the RT thread:
//! - [`metrics`]: the Prometheus endpoint over the loop's atomics (`reflex_core::metrics`).
//! - [`recorder`]: the flight recorder — the RT loop's tap (`reflex_rt::tap`) feeds a ring of
//!   the last `window_s` seconds, frozen into an MCAP file (Foxglove-viewable) when an edge case
//!   fires.
//! - [`upload`]: finished recordings to S3-compatible storage, retried, never twice, the queue
//!   kept until confirmed.
//! - [`replay`]: a recording's inputs through the safety layer (and the policy) again, compared
//!   bit for bit.
//!
//! # Guarantees
//! - The RT thread only ever does relaxed atomic stores and wait-free ring pushes for telemetry;
//!   a full ring drops and counts (`reflex_recordings_dropped_total` and friends).
//! - A recording is written to `tmp/`, fsynced and renamed into `queue/`: the uploader only sees
//!   finished files; the disk budget drops the oldest (counted).
//! - Upload credentials come only from the environment, never from the config file.
//!
//! # Config keys
//! - `[telemetry]` ([`metrics::TelemetryConfig`]): `metrics_bind` (unset = off),
//!   `metrics_allow_remote` (false: loopback only; the endpoint has no auth).
//! - `[recorder]` ([`recorder::RecorderConfig`], absent = off): `dir`, `window_s` (10 s),
//!   `post_s` (2 s), `triggers`, `max_disk_mb`, `robot_id`; `[recorder.upload]`
//!   ([`upload::UploadConfig`]): `bucket`, `endpoint`, `region`, `prefix`, `allow_http`.
//!
//! # Example
//! ```
//! let telemetry = reflex_core::metrics::Telemetry::default();
//! telemetry.ticks.fetch_add(3, std::sync::atomic::Ordering::Relaxed);
//! assert!(telemetry.render().contains("reflex_ticks_total 3\n"));
//! let cfg = reflex_telemetry::metrics::TelemetryConfig {
//!     metrics_bind: Some("0.0.0.0:9464".into()),
//!     metrics_allow_remote: false,
//! };
//! assert!(cfg.bind_addr().is_err(), "a non-loopback endpoint needs consent");
//! ```

#![forbid(unsafe_code)]

pub mod metrics;
pub mod recorder;
pub mod replay;
pub mod scans;
pub mod upload;
