//! How a run is put together: the threads around any robot ([`reflex_core::RobotIo`]) and any
//! policy engine ([`reflex_core::PolicyBackend`]), the model manager that swaps policies into
//! the running loop, and the one config file that says how.
//!
//! - [`run`]: RT thread (`reflex_rt::rt_thread`), inference worker (anytime: newest observation
//!   in, chunk out, never waited for), supervisor (replaces a dead or silent worker with the
//!   model that was running), the robot I/O loop, the cloud link when `[cloud]` is set.
//! - [`swap`]: the wait-free hand-over of a new model at a chunk boundary.
//! - [`updates`]: the model manager (`[updates]`): poll, pull, verify, warm up, golden, swap,
//!   health window, commit or roll back — a transaction persisted across power loss.
//! - [`config`]: `ReflexConfig`, every section, validated in two stages.
//!
//! # Guarantees
//! - Production code only: nothing here imports the simulator (`reflex-sim` depends on this
//!   crate, never the reverse; `runtime/tests/architecture.rs` checks it).
//! - Every knob a run uses comes from [`config::ReflexConfig`]; an invalid value is refused at
//!   start with an error naming the key and the fix.
//! - A worker stuck inside `infer` is abandoned at shutdown, never joined forever.
//!
//! # Config keys
//! [`config::ReflexConfig`]: `[safety]` (`reflex_safety`), `[runtime]`, `[chunks]`,
//! `[arbitration]` (`reflex_rt`), `[models]` (`reflex_policy::BackendConfig`), `[updates]`
//! ([`updates::UpdatesConfig`]), `[ros]` (`reflex_ros::RosConfig`), `[telemetry]`,
//! `[recorder]` (`reflex_telemetry`), `[cloud]` (`reflex_cloud::CloudConfig`), `[robot] io`
//! ([`config::RobotConfig`]: `dds`, `ros2` or `sim`; `reflex run` refuses to start without
//! it or `--io`).
//!
//! # Example
//! ```
//! let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../launch/reflex.example.toml");
//! let config = reflex_runner::config::ReflexConfig::load(&path).unwrap();
//! assert_eq!(config.chunks.max_action_age_ms, 200.0);
//! assert!(config.robot.is_none(), "the example names no robot I/O: `reflex run` needs --io");
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod run;
pub mod swap;
pub mod updates;
