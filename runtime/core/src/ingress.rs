//! E-stop ingress and the actuator seam: how a press reaches the actuator gate without waiting
//! for a tick, and how the gate reaches the robot's command publisher.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use reflex_safety::EstopSource;

use crate::CommandFrame;

/// Where E-stop presses go the moment an adapter (or the supervisor) sees them (SAF-012): one
/// counter per source, bumped on every press edge and never reset, so a press shorter than a
/// period — pressed and released between two ticks — still latches (the RT thread compares the
/// counters with the ones it saw last). Each press also wakes the actuator gate, which sends
/// zero at once, before the RT thread's next verdict. Plain atomics and a thread unpark: no lock,
/// no allocation.
#[derive(Debug, Default)]
pub struct EstopIngress {
    presses: [AtomicU64; EstopSource::COUNT],
    total: AtomicU64,
    gate: OnceLock<std::thread::Thread>,
}

impl EstopIngress {
    /// A press edge from `source` (a device reporting pressed after clear or unknown, a device
    /// gone silent, the supervisor's watchdog).
    pub fn press(&self, source: EstopSource) {
        self.presses[source.index()].fetch_add(1, Ordering::AcqRel);
        self.total.fetch_add(1, Ordering::AcqRel);
        self.wake_gate();
    }

    /// Presses per source so far.
    pub fn presses(&self) -> [u64; EstopSource::COUNT] {
        std::array::from_fn(|i| self.presses[i].load(Ordering::Acquire))
    }

    /// Presses of every source so far (what a verdict must have seen to pass the gate).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }

    /// The actuator gate's thread, woken by presses and new verdicts.
    pub fn set_gate(&self, thread: std::thread::Thread) {
        let _ = self.gate.set(thread);
    }

    /// Wakes the actuator gate (a new verdict or a press): a futex wake, never a wait.
    pub fn wake_gate(&self) {
        if let Some(t) = self.gate.get() {
            t.unpark();
        }
    }
}

/// The robot's command output, owned by the actuator gate's thread (SAF-011): the gate calls
/// `send` with a verdict it let through, or with [`CommandFrame::default`] (zero, drive power
/// off) when the verdict is missing, stale, or an E-stop press arrived.
pub trait Actuator: Send {
    fn send(&mut self, command: &CommandFrame);
}
