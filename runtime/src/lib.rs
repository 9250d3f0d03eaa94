//! The Reflex runtime: the `reflex` binary's library — the real-time control loop, anytime
//! inference with action chunks, arbitration, the built-in simulator, `reflex sim`.
//!
//! # Guarantees
//! - The control tick (`control::ControlLoop::tick`) merges arrived chunks, picks the action for
//!   now, arbitrates, and calls `Safety::evaluate` last; it does not allocate, lock or block
//!   (tests/control_tick.rs counts allocations over 10,000 ticks).
//! - The RT thread ticks on absolute CLOCK_MONOTONIC deadlines; an overrun skips to the next
//!   period (counted), never catches up; N misses in a row or a silent inference worker latch an
//!   internal E-stop (watchdog) and the worker is replaced.
//! - No action older than `max_action_age_ms` is ever executed: a dry or stale queue proposes a
//!   stop, which the safety layer ramps down.
//! - The config file is validated in two stages; every error names the file, the key and the fix.
//!
//! # Config keys
//! `[safety]` — see `reflex_safety`. `[models]` — see `reflex_models::BackendConfig`.
//! `[runtime]` (all optional):
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `period_ms` | f64, ms | 10 | control period (0.1–1000; 1 ms works) |
//! | `fifo_priority` | 1..=99 | unset | SCHED_FIFO priority of the RT thread |
//! | `lock_memory` | bool | false | `mlockall(MCL_CURRENT \| MCL_FUTURE)` |
//! | `cpu` | usize | unset | pin the RT thread to this CPU |
//! | `cpu_dma_latency_us` | u32 | unset | hold `/dev/cpu_dma_latency` while running |
//! | `overrun` | `skip`/`restart` | `skip` | what an overrun does to the deadline grid |
//! | `max_consecutive_misses` | u32 | 3 | deadline misses in a row that trip the watchdog |
//!
//! # Example
//! ```
//! let text = std::fs::read_to_string(
//!     std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/reflex.example.toml"),
//! ).unwrap();
//! let config = reflex_runtime::config::ReflexConfig::parse(&text).unwrap();
//! let mut out = Vec::new();
//! let summary = reflex_runtime::demo::run(&config.safety, 3.0, 500, 1, &mut out).unwrap();
//! assert_eq!(summary.collisions, 0);
//! ```

// `unsafe` only in rt.rs (libc calls for the RT thread), each with a SAFETY note.
#![deny(unsafe_code)]

pub mod arbiter;
pub mod chunks;
pub mod cloud;
pub mod config;
pub mod control;
#[cfg(feature = "dds")]
pub mod dds;
pub mod demo;
pub mod inspect;
pub mod jetson;
pub mod port;
pub mod realtime;
pub mod recorder;
pub mod replay;
pub mod report;
#[cfg(feature = "ros2")]
pub mod ros2;
pub mod rt;
pub mod sim;
pub mod simrun;
pub mod telemetry;
pub mod updates;
pub mod upload;
