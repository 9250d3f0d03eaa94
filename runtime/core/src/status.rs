//! What the loop and the inference worker publish about themselves.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

/// Plain atomics the RT thread and the inference worker store into without waiting, read by the
/// model manager (swap and health window) and the ROS diagnostics. One per run, shared as `Arc`.
#[derive(Debug, Default)]
pub struct LoopStatus {
    /// RT thread: generation of the last merged chunk, and when its first chunk was merged.
    pub loop_generation: AtomicU32,
    pub generation_since_ns: AtomicU64,
    pub ticks: AtomicU64,
    /// RT thread: ticks whose verdict stopped or slowed the robot.
    pub vetoed_ticks: AtomicU64,
    pub deadline_misses: AtomicU64,
    /// RT thread: the robot stands still (odometry, else the last command).
    pub stationary: AtomicBool,
    /// Worker: inferences run, chunks dropped for non-finite values, slowest inference since
    /// the model manager last reset it.
    pub inferences: AtomicU64,
    pub nonfinite_chunks: AtomicU64,
    pub inference_max_ns: AtomicU64,
    /// The generation the worker runs now.
    pub worker_generation: AtomicU32,
}
