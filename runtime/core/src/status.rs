//! What the loop and the inference worker publish about themselves.

use std::sync::OnceLock;

use reflex_safety::Reason;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

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
    /// RT thread: ticks whose verdict gave each reason (clamps included), by `Reason as usize`,
    /// so `/diagnostics` can say why the robot stopped while it runs.
    pub reasons: ReasonCounters,
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
    /// RT thread: [`RunState`] of the last verdict, as `u8`.
    pub safety_state: AtomicU8,
    /// The safety config's hash (`sha256:<hex>`), set once at start, for `/diagnostics`.
    pub safety_config_hash: OnceLock<String>,
    /// Actuator gate: verdicts sent, zeros sent because no fresh verdict existed, zeros sent
    /// on an E-stop press.
    pub gate_verdicts: AtomicU64,
    pub gate_stale_zeros: AtomicU64,
    pub gate_press_zeros: AtomicU64,
    /// Actuator gate: every zero it sent (stale or press); the RT thread compares it each tick
    /// and then ramps from standstill (`Safety::assume_stopped`).
    pub gate_zero_events: AtomicU64,
    /// Supervisor: RT-thread stalls longer than two periods (each latched an E-stop).
    pub rt_stalls: AtomicU64,
}

impl LoopStatus {
    /// What the robot is doing, from the last verdict.
    pub fn run_state(&self) -> RunState {
        RunState::from_u8(self.safety_state.load(Ordering::Relaxed))
    }
}

/// One counter per safety [`Reason`], allocated once at start (the RT thread only adds).
#[derive(Debug)]
pub struct ReasonCounters(Box<[AtomicU64]>);

impl Default for ReasonCounters {
    fn default() -> Self {
        Self((0..Reason::COUNT).map(|_| AtomicU64::new(0)).collect())
    }
}

impl ReasonCounters {
    /// Counts one tick for every reason of `reasons` (relaxed adds, no allocation).
    pub fn count(&self, reasons: reflex_safety::Reasons) {
        let mut bits = reasons.bits();
        while bits != 0 {
            self.0[bits.trailing_zeros() as usize].fetch_add(1, Ordering::Relaxed);
            bits &= bits - 1;
        }
    }

    /// Ticks that gave `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason as usize].load(Ordering::Relaxed)
    }
}

/// What the robot is doing, as `/diagnostics` reports it (SAF-013).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum RunState {
    /// E-stop latched and the robot stands (waiting for release + reset).
    #[default]
    Latched = 0,
    /// E-stop latched, still braking (category 1/2).
    Stopping = 1,
    /// Reset done; held at zero until an explicit start (or a new command, per config).
    AwaitingStart = 2,
    /// Not latched, but the safety layer stops the robot (obstacle, stale input, no action).
    ProtectiveStop = 3,
    /// Driving (possibly slowed).
    Running = 4,
}

impl RunState {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Stopping,
            2 => Self::AwaitingStart,
            3 => Self::ProtectiveStop,
            4 => Self::Running,
            _ => Self::Latched,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Latched => "latched",
            Self::Stopping => "stopping",
            Self::AwaitingStart => "awaiting_start",
            Self::ProtectiveStop => "protective_stop",
            Self::Running => "running",
        }
    }
}
