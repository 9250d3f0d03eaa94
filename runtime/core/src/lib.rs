//! Reflex's vocabulary: what crosses a crate boundary. Frames between the robot I/O and the RT
//! thread ([`SensorFrame`], [`CommandFrame`]), the policy's tensors ([`Observation`],
//! [`ActionChunk`]), the two seams a deployment plugs into ([`RobotIo`]: a middleware adapter or
//! the simulator; [`PolicyBackend`]: ONNX Runtime or another engine), the monotonic clock, and
//! the atomics the loop publishes ([`LoopStatus`], [`metrics::Telemetry`]).
//!
//! # Guarantees
//! - No I/O, no threads, no allocation after construction: every type here is preallocated by
//!   its owner at start-up and refilled in place.
//! - Everything the RT thread writes here is a relaxed or release atomic store; nothing blocks.
//! - Depends on `reflex-safety` and `libc` only (the clock), so every other crate can use it —
//!   the RT crate included, which must build without ONNX Runtime, ROS or tokio.
//!
//! # Config keys
//! None: the config sections belong to the crates that own them (`reflex_runner::config`).
//!
//! # Example
//! ```
//! use reflex_core::{CommandFrame, SensorFrame, clock};
//! let sensors = SensorFrame::new(720, 0);
//! assert_eq!(sensors.ranges.len(), 720);
//! // The loop starts with drive power off and no command sent yet.
//! let command = CommandFrame::default();
//! assert!(!command.drive_enabled && command.seq == 0);
//! assert!(clock::now_ns() > 0);
//! ```

// One `unsafe` block (clock_gettime in clock.rs), with its SAFETY note.
#![deny(unsafe_code)]

pub mod actions;
pub mod clock;
mod frames;
mod ingress;
pub mod metrics;
mod policy;
mod robot;
mod status;

pub use frames::{CommandFrame, SensorFrame, is_stationary};
pub use ingress::{Actuator, EstopIngress};
pub use policy::{ActionChunk, BackendError, BackendInfo, ImageData, Observation, PolicyBackend};
pub use robot::RobotIo;
pub use status::{LoopStatus, ReasonCounters, RunState};
