//! The hand-over of a new model to the running loop: the model manager puts a [`Candidate`] in
//! the [`SwapPort`]'s wait-free slot (`arc-swap`); the inference worker takes it between two
//! inferences (a chunk boundary, or only while the robot stands still); the RT thread never
//! touches it and only reports which generation it merged (`reflex_core::LoopStatus`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use reflex_core::metrics::Telemetry;
use reflex_core::{LoopStatus, PolicyBackend};
use reflex_policy::PolicyPackage;

/// A model ready to take over: the inference worker takes it between two inferences (a chunk
/// boundary). The RT thread never touches it.
pub struct Candidate {
    pub generation: u32,
    pub backend: std::sync::Mutex<Option<Box<dyn PolicyBackend>>>,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SwapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwapPort")
            .field("swap_when", &self.swap_when)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// When a candidate may be swapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapWhen {
    /// Between any two inferences.
    #[default]
    ChunkBoundary,
    /// Only while the robot stands still (odometry below 1 cm/s and 0.01 rad/s).
    Stationary,
}

/// The model manager's view of a run: what the loop and the worker publish
/// ([`LoopStatus`], atomics written without waiting) and the wait-free candidate slot
/// (`arc-swap`).
#[derive(Default)]
pub struct SwapPort {
    pub slot: arc_swap::ArcSwapOption<Candidate>,
    pub swap_when: SwapWhen,
    /// Written by the RT thread and the inference worker; shared with the ROS diagnostics.
    pub status: Arc<LoopStatus>,
    /// The package of the generation handed over last (the updater sets it with the
    /// candidate), so a restarted worker loads the model that was running, never an older one.
    pub current_package: std::sync::Mutex<Option<(u32, PolicyPackage)>>,
    /// Metrics (model info on hand-over, registry link state from the model manager).
    pub telemetry: Arc<Telemetry>,
}

impl SwapPort {
    pub fn new(swap_when: SwapWhen) -> Self {
        Self {
            swap_when,
            ..Self::default()
        }
    }

    /// The inference worker's side of a hand-over, at a chunk boundary: takes the waiting
    /// candidate model, if any, and records its generation as the one the worker runs.
    pub fn take_candidate(&self) -> Option<(u32, Box<dyn PolicyBackend>)> {
        if self.slot.load().is_none() {
            return None;
        }
        let candidate = self.slot.swap(None)?;
        let next = candidate
            .backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        self.status
            .worker_generation
            .store(candidate.generation, Ordering::Release);
        Some((candidate.generation, next))
    }
}

/// Hands `backend` (generation `generation`, built from `package`) to the inference worker
/// through the port's slot and waits, off the RT thread, until the loop has merged its first
/// chunk. Returns the time from hand-over to that merge, ms. Gives up (taking the candidate
/// back) after 10 s or when `stop` is set.
pub fn hand_over(
    port: &SwapPort,
    generation: u32,
    backend: Box<dyn PolicyBackend>,
    package: &PolicyPackage,
    stop: &AtomicBool,
) -> Result<f64> {
    let t0 = reflex_core::clock::now_ns();
    port.slot.store(Some(Arc::new(Candidate {
        generation,
        backend: std::sync::Mutex::new(Some(backend)),
    })));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while port.status.loop_generation.load(Ordering::Acquire) != generation {
        if stop.load(Ordering::Acquire) || std::time::Instant::now() > deadline {
            port.slot.store(None);
            anyhow::bail!(
                "the new model's first action did not reach the loop within 10 s (swap_when = {:?})",
                port.swap_when
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // From now on a restarted worker loads this model, never an older one.
    *port
        .current_package
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((generation, package.clone()));
    port.telemetry.set_model(package.model_info(generation));
    let since = port.status.generation_since_ns.load(Ordering::Acquire);
    Ok(since.saturating_sub(t0) as f64 / 1e6)
}
