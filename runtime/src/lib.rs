//! The Reflex runtime: the `reflex` binary's library. Today it holds the config file, the
//! built-in simulator and the closed-loop safety demo; the RT loop, ports and model manager
//! join it with their issues.
//!
//! # Guarantees
//! - The config file is validated in two stages (serde, then the safety layer's own checks);
//!   every error names the file, the key and the fix.
//! - The simulator is deterministic for a seed, so a demo or scenario run can be replayed.
//!
//! # Config keys
//! `[safety]` — see `reflex_safety` (its crate docs list every key, type, default and unit).
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
pub mod config;
pub mod control;
pub mod demo;
pub mod inspect;
pub mod realtime;
pub mod report;
pub mod rt;
pub mod sim;
pub mod simrun;
