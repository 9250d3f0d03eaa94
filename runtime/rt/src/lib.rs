//! Reflex's real-time core: what runs on, or hands data to, the RT thread.
//!
//! - [`ticker`]: absolute CLOCK_MONOTONIC deadlines (`clock_nanosleep(TIMER_ABSTIME)`), the RT
//!   grants (SCHED_FIFO, mlockall, affinity, `/dev/cpu_dma_latency`) and `[runtime]`.
//! - [`control`]: one tick — merge arrived chunks → action for now ([`chunks`]) → arbitrate
//!   ([`arbiter`]) → `Safety::evaluate`, always last → recorder tap → timing.
//! - [`rt_thread`]: the RT thread's body around the tick: sensors in, watchdog, verdict out as a
//!   [`reflex_core::CommandFrame`], loop status for the model manager.
//! - [`gate`]: the actuator gate (SAF-011) — a verdict reaches the wire only while it is at most
//!   two periods old; otherwise zero, then silence; zero at once on an E-stop press.
//! - [`tap`]: the flight recorder's RT end.
//!
//! # Guarantees
//! - After start-up the RT thread does not allocate, lock or block: every hop into or out of it
//!   is a preallocated wait-free SPSC ring (`rtrb`: chunks and their buffers, cloud and operator
//!   inboxes, recorder tap) or a triple buffer (sensors, commands), with an explicit full policy
//!   (drop and count, never grow or wait). `runtime/tests/control_tick.rs` counts
//!   allocations over 10,000 ticks.
//! - An overrun skips to the next period (counted), never catches up; N misses in a row or an
//!   inference worker silent past [`rt_thread::WORKER_DEADLINE_NS`] latch an internal E-stop.
//! - No action older than `[chunks] max_action_age_ms` is executed: a dry or stale queue
//!   proposes a stop, which the safety layer ramps down.
//! - Dependencies: `reflex-safety`, `reflex-core`, `libc`, `rtrb`, `triple_buffer`, `serde`
//!   (config structs). No ONNX Runtime, ROS, tokio or simulator: `runtime/tests/architecture.rs`
//!   fails if `cargo tree` ever shows one.
//!
//! # Config keys
//! `[runtime]` ([`ticker::RtConfig`]):
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `period_ms` | f64, ms | 10 | control period (0.1–1000; 1 ms works) |
//! | `fifo_priority` | 1..=99 | unset | SCHED_FIFO priority of the RT thread |
//! | `lock_memory` | bool | false | `mlockall(MCL_CURRENT \| MCL_FUTURE)` |
//! | `cpu` | usize | unset | pin the RT thread to this CPU; every other thread keeps off it |
//! | `cpu_dma_latency_us` | u32 | unset | hold `/dev/cpu_dma_latency` while running |
//! | `overrun` | `skip`/`restart` | `skip` | what an overrun does to the deadline grid |
//! | `max_consecutive_misses` | u32 | 3 | deadline misses in a row that trip the watchdog |
//!
//! `[chunks]` ([`chunks::ChunksConfig`]): `strategy` (`latest`/`crossfade`/`ensemble`,
//! `crossfade`), `crossfade_steps` (5), `ensemble_decay` (0.5), `max_action_age_ms` (200 ms).
//!
//! `[arbitration]` ([`arbiter::ArbiterConfig`]): `priority` (`["operator", "cloud",
//! "local_policy"]`), `cloud_max_age_ms` (300 ms), `operator_max_age_ms` (200 ms).
//!
//! # Example
//! ```
//! use reflex_rt::chunks::ChunksConfig;
//! use reflex_core::actions::ActionTarget;
//! use reflex_rt::control::{ControlLoop, chunk_channel};
//! use reflex_safety::{EstopReport, EstopSource, Monotonic, Safety, SafetyConfig, SafetyInputs};
//! let config: SafetyConfig = toml::from_str(r#"
//!     [estop]
//!     stop_category = 1
//!     sources = [{ name = "watchdog" }, { name = "internal" }]
//!     [commands]
//!     local_policy_max_age_ms = 200.0
//!     cloud_max_age_ms = 300.0
//!     operator_max_age_ms = 200.0
//!     [base]
//!     kind = "differential"
//!     max_vx_mps = 1.0
//!     max_wz_radps = 1.5
//!     max_accel_x_mps2 = 100.0
//!     max_accel_wz_radps2 = 100.0
//!     brake_decel_mps2 = 1.5
//!     brake_decel_wz_radps2 = 3.0
//!     footprint_radius_m = 0.3
//!     [lidar]
//!     base_from_lidar = { x_m = 0.0, y_m = 0.0, yaw_rad = 0.0 }
//!     max_beams = 360
//!     max_age_ms = 100.0
//!     reaction_time_ms = 50.0
//!     margin_m = 0.05
//!     slowdown_depth_m = 0.5
//!     min_points = 2
//!     hysteresis_m = 0.05
//!     release_delay_ms = 200.0
//!     max_invalid_fraction = 0.2
//!     intrusion_speed_mps = 1.6
//! "#).unwrap();
//! let (chunks, rx) = chunk_channel(4, 20 * 3);
//! let mut control = ControlLoop::new(
//!     Safety::new(config).unwrap(),
//!     ChunksConfig::default().queue(3, 20, 20_000_000),
//!     &[ActionTarget::BaseVx, ActionTarget::BaseVy, ActionTarget::BaseWz],
//!     rx,
//! );
//! let now = 1_000_000_000;
//! assert!(chunks.try_send(now, &[0.3; 60], 0));
//! let inputs = SafetyInputs {
//!     estop: [EstopReport::Clear(Monotonic::from_nanos(now)); EstopSource::COUNT],
//!     reset_request_seq: 0, // never reset: the loop starts latched (SAF-002)
//!     scan: None,
//!     odometry: None,
//!     joint_state: None,
//! };
//! let verdict = control.tick(now, &inputs, &|| 0);
//! assert_eq!(verdict.command.base.vx_mps, 0.0, "latched until an explicit reset");
//! ```

// `unsafe` only in ticker.rs (libc calls for the RT thread) and shutdown.rs (sigaction), each
// with a SAFETY note.
#![deny(unsafe_code)]

pub mod arbiter;
pub mod chunks;
pub mod control;
pub mod gate;
pub mod rt_thread;
pub mod shutdown;
pub mod tap;
pub mod ticker;

pub use ticker::now_ns;
