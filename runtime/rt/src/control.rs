//! The control loop's tick: merge arrived chunks → action for now → arbitrate → safety (always
//! last) → recorder tap → timing and heartbeat (the watchdog and the command out are the RT
//! thread's, `crate::rt_thread`). Everything is preallocated in `new`; `tick` does not
//! allocate, lock or block (proven by `runtime/tests/control_tick.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reflex_core::actions::{ActionTarget, apply_action};
use reflex_safety::{Command, CommandSource, Monotonic, Safety, SafetyInputs, Verdict};

use crate::arbiter::{Arbiter, ArbiterConfig, Inboxes};
use crate::chunks::{ChunkQueue, NoAction, QueueConfig};

/// A chunk handed from the inference worker to the loop. The buffer is recycled through the
/// free ring, so neither side allocates after start-up.
#[derive(Debug)]
pub struct ChunkMsg {
    pub t_obs_ns: u64,
    /// The buffer; the chunk is its first `len` values (a cloud answer may be shorter).
    pub actions: Vec<f32>,
    pub len: usize,
    /// Which loaded model produced it (0 = the one the run started with; +1 per hot swap).
    pub generation: u32,
}

/// The worker side of the chunk hop: takes an empty buffer from the free ring, fills it, pushes
/// it into the ready ring. Cloneable for worker restarts: the mutex is only ever taken by
/// inference workers (one at a time), never by the RT thread.
#[derive(Debug, Clone)]
pub struct ChunkSender {
    rings: Arc<std::sync::Mutex<(rtrb::Consumer<ChunkMsg>, rtrb::Producer<ChunkMsg>)>>,
    capacity: usize,
}

impl ChunkSender {
    /// Copies `actions` into a recycled buffer and sends it. Returns false, dropping the chunk,
    /// when no buffer is free (the loop has not merged the earlier ones yet) or `actions` is
    /// longer than a buffer: never waits.
    pub fn try_send(&self, t_obs_ns: u64, actions: &[f32], generation: u32) -> bool {
        if actions.len() > self.capacity {
            return false;
        }
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let (free, ready) = &mut *rings;
        let Ok(mut msg) = free.pop() else {
            return false;
        };
        msg.t_obs_ns = t_obs_ns;
        msg.actions[..actions.len()].copy_from_slice(actions);
        msg.len = actions.len();
        msg.generation = generation;
        // `ready` holds every buffer there is: a popped buffer always fits.
        ready.push(msg).is_ok()
    }
}

/// The RT side of the chunk hop (one owner, no lock): arrived chunks out, empty buffers back.
#[derive(Debug)]
pub struct ChunkReceiver {
    ready: rtrb::Consumer<ChunkMsg>,
    free: rtrb::Producer<ChunkMsg>,
}

/// The hop between the inference worker and the loop: two wait-free SPSC rings (`rtrb`), full
/// chunks one way and `buffers` preallocated buffers of `len` actions back. Bounded; with no
/// free buffer the worker drops its chunk (never blocks), and the loop never waits.
pub fn chunk_channel(buffers: usize, len: usize) -> (ChunkSender, ChunkReceiver) {
    let (mut free_tx, free_rx) = rtrb::RingBuffer::new(buffers);
    let (ready_tx, ready_rx) = rtrb::RingBuffer::new(buffers);
    for _ in 0..buffers {
        let _ = free_tx.push(ChunkMsg {
            t_obs_ns: 0,
            actions: vec![0.0; len],
            len,
            generation: 0,
        });
    }
    (
        ChunkSender {
            rings: Arc::new(std::sync::Mutex::new((free_rx, ready_tx))),
            capacity: len,
        },
        ChunkReceiver {
            ready: ready_rx,
            free: free_tx,
        },
    )
}

/// Per-tick cost histogram: 1 µs buckets up to 20 ms, plus the maximum. Fixed size.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u32>,
    pub count: u64,
    pub max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; 20_000],
            count: 0,
            max_ns: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        let i = ((ns / 1_000) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// This histogram without the samples of `other` (recorded into a histogram of the same
    /// shape from a subset of these samples).
    pub fn without(&self, other: &Histogram) -> Histogram {
        let mut out = self.clone();
        for (b, &n) in out.buckets.iter_mut().zip(&other.buckets) {
            *b = b.saturating_sub(n);
        }
        out.count = out.count.saturating_sub(other.count);
        out
    }

    /// Upper edge (µs) of the bucket holding quantile `q`.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= target {
                return (i + 1) as f64;
            }
        }
        self.max_ns as f64 / 1_000.0
    }
}

/// What the loop reports.
#[derive(Debug, Clone, Default)]
pub struct LoopStats {
    pub ticks: u64,
    pub tick_cost: Histogram,
    /// Ticks without a usable policy action (queue dry or action too old): the robot was told
    /// to stop, never given a stale action.
    pub ticks_without_action: u64,
    pub chunks_merged: u64,
    /// Generation of the model whose chunk was merged last, and when its first chunk was.
    pub model_generation: u32,
    pub generation_changed_ns: u64,
    /// Ticks on which the arbiter chose a cloud command.
    pub cloud_ticks: u64,
    /// Cost of the ticks that merged a new model's first chunk (one per hot swap the loop saw):
    /// the pause a swap puts into the loop. Also counted in `tick_cost`.
    pub swap_tick_cost: Histogram,
}

/// The loop state owned by the RT thread.
#[derive(Debug)]
pub struct ControlLoop {
    pub safety: Safety,
    pub queue: ChunkQueue,
    pub arbiter: Arbiter,
    /// What each action dimension drives (resolved against the robot's config at load).
    targets: Vec<ActionTarget>,
    channel: ChunkReceiver,
    /// The cloud policy's chunks (`with_cloud_chunks`): their own queue, the same action map.
    cloud: Option<(ChunkQueue, ChunkReceiver)>,
    pub stats: LoopStats,
    /// Last tick time (ns), read by the watchdog.
    pub heartbeat_ns: Arc<AtomicU64>,
    pub last_no_action: Option<NoAction>,
    /// What the metrics endpoint shows (relaxed atomic stores only).
    pub telemetry: Arc<reflex_core::metrics::Telemetry>,
    action_age_ns: u64,
    /// The flight recorder's RT end, when recording.
    pub recorder: Option<crate::tap::RecorderTap>,
    /// SAF-013: held at zero after a reset until a start (or a new command, per
    /// `[safety.estop] restart`); the start count and the reset time it compares with.
    awaiting_start: bool,
    last_start_seq: u64,
    reset_at_ns: u64,
}

impl ControlLoop {
    pub fn new(
        safety: Safety,
        queue: QueueConfig,
        targets: &[ActionTarget],
        channel: ChunkReceiver,
    ) -> Self {
        Self {
            safety,
            queue: ChunkQueue::new(queue),
            arbiter: Arbiter::without_inboxes(&ArbiterConfig::default()),
            targets: targets.to_vec(),
            channel,
            cloud: None,
            stats: LoopStats::default(),
            heartbeat_ns: Arc::new(AtomicU64::new(0)),
            last_no_action: None,
            telemetry: Arc::default(),
            action_age_ns: 0,
            recorder: None,
            awaiting_start: true,
            last_start_seq: 0,
            reset_at_ns: 0,
        }
    }

    /// True after a reset until the start rule lets the robot move (SAF-013).
    pub fn awaiting_start(&self) -> bool {
        self.awaiting_start
    }

    /// What the robot is doing after this tick's `verdict` (for `/diagnostics`).
    pub fn safety_state(&self, verdict: &Verdict) -> reflex_core::RunState {
        use reflex_core::RunState;
        let moving = !verdict.command.is_motionless();
        if self.safety.is_latched() {
            if moving {
                RunState::Stopping
            } else {
                RunState::Latched
            }
        } else if self.awaiting_start {
            RunState::AwaitingStart
        } else if verdict.action >= reflex_safety::Action::Stop {
            RunState::ProtectiveStop
        } else {
            RunState::Running
        }
    }

    /// Publishes metrics into `telemetry` (shared with the metrics endpoint).
    pub fn with_telemetry(mut self, telemetry: Arc<reflex_core::metrics::Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Arbitrates under `config` (`[arbitration]`), with commands from `inboxes` (cloud,
    /// operator) when given. Fails when another loop already reads those inboxes.
    pub fn with_arbiter(
        mut self,
        config: &ArbiterConfig,
        inboxes: Option<&Inboxes>,
    ) -> Result<Self, &'static str> {
        self.arbiter = match inboxes {
            Some(inboxes) => Arbiter::new(config, inboxes)?,
            None => Arbiter::without_inboxes(config),
        };
        Ok(self)
    }

    /// Executes the cloud policy's chunks (sent into `channel` by the cloud link) from their own
    /// queue, `queue` (its step is the cloud's action rate, its age limit the arbitration's
    /// `cloud_max_age_ms`), through the same action map, arbitration and safety as local ones.
    pub fn with_cloud_chunks(mut self, queue: QueueConfig, channel: ChunkReceiver) -> Self {
        self.cloud = Some((ChunkQueue::new(queue), channel));
        self
    }

    /// The cloud queue, when the loop has one (tests, telemetry).
    pub fn cloud_queue(&self) -> Option<&ChunkQueue> {
        self.cloud.as_ref().map(|(q, _)| q)
    }

    /// The cloud's proposal for `now`: its queued action for now mapped like a local one and
    /// stamped with the observation it answers, or None (no cloud chunk covers now, or the
    /// covering action is older than its age limit).
    fn cloud_command(&mut self, now_ns: u64) -> Option<Command> {
        let (queue, channel) = self.cloud.as_mut()?;
        while let Ok(msg) = channel.ready.pop() {
            queue.merge(msg.t_obs_ns, &msg.actions[..msg.len], now_ns);
            let _ = channel.free.push(msg);
        }
        let obs_ns = queue.obs_time_at(now_ns)?;
        let action = queue.action_at(now_ns).ok()?;
        let mut command = Command {
            source: CommandSource::Cloud,
            stamp: Monotonic::from_nanos(obs_ns),
            ..Command::default()
        };
        apply_action(&self.targets, action, &mut command);
        Some(command)
    }

    /// The policy's proposal for `now`: the queued action mapped onto what it drives (base
    /// axes, joint targets, gripper), stamped with its observation time; or a stop proposal
    /// (zero velocity, the arm held where the last verdict put it) when there is no usable action.
    fn policy_command(&mut self, now_ns: u64) -> Command {
        let obs_ns = self.queue.obs_time_at(now_ns);
        match self.queue.action_at(now_ns) {
            Ok(action) => {
                let mut command = Command {
                    source: CommandSource::LocalPolicy,
                    stamp: Monotonic::from_nanos(obs_ns.unwrap_or(now_ns)),
                    ..Command::default()
                };
                apply_action(&self.targets, action, &mut command);
                self.last_no_action = None;
                self.action_age_ns = obs_ns.map_or(0, |o| now_ns.saturating_sub(o));
                command
            }
            Err(why) => {
                // Decay to a controlled stop: propose zero; the safety layer ramps it down.
                self.stats.ticks_without_action += 1;
                self.last_no_action = Some(why);
                self.action_age_ns = 0;
                let mut command = Command::base(
                    CommandSource::LocalPolicy,
                    Monotonic::from_nanos(now_ns),
                    0.0,
                    0.0,
                    0.0,
                );
                command.joints = self.safety.hold_targets();
                command
            }
        }
    }

    /// One control tick at `now_ns` with this tick's sensor inputs, for loops without start
    /// requests (simulation, benchmarks): every reset is followed by a start at once.
    pub fn tick(
        &mut self,
        now_ns: u64,
        inputs: &SafetyInputs<'_>,
        clock: &dyn Fn() -> u64,
    ) -> Verdict {
        let start_seq = if self.awaiting_start && !self.safety.is_latched() {
            self.last_start_seq.wrapping_add(1)
        } else {
            self.last_start_seq
        };
        self.tick_with_start(now_ns, inputs, start_seq, clock)
    }

    /// One control tick at `now_ns` with this tick's sensor inputs and the count of explicit
    /// start requests so far (SAF-013). `clock` times the tick's own cost (a monotonic ns
    /// source; lockstep tests pass a fake).
    pub fn tick_with_start(
        &mut self,
        now_ns: u64,
        inputs: &SafetyInputs<'_>,
        start_seq: u64,
        clock: &dyn Fn() -> u64,
    ) -> Verdict {
        let start = clock();
        let mut swapped = false;
        // 1. Chunks that arrived since the last tick, oldest first; buffers go back.
        while let Ok(msg) = self.channel.ready.pop() {
            self.queue
                .merge(msg.t_obs_ns, &msg.actions[..msg.len], now_ns);
            self.stats.chunks_merged += 1;
            if msg.generation != self.stats.model_generation {
                self.stats.model_generation = msg.generation;
                self.stats.generation_changed_ns = now_ns;
                swapped = true;
            }
            // The free ring has room for every buffer: this cannot fail.
            let _ = self.channel.free.push(msg);
        }
        // 2-3. The action for now, then arbitration with cloud and operator commands.
        let local = self.policy_command(now_ns);
        let cloud = self.cloud_command(now_ns);
        let mut proposed = self.arbiter.arbitrate_with(now_ns, local, cloud);
        if proposed.source == reflex_safety::CommandSource::Cloud {
            self.stats.cloud_ticks += 1;
        }
        // SAF-013: a reset never restarts motion by itself. While latched (and after a reset,
        // until the start rule holds) the layer is offered a stop, so the reset tick and the
        // ones after it stay at zero. Start requests made while latched do not count.
        if self.safety.is_latched() {
            self.awaiting_start = true;
            self.last_start_seq = start_seq;
            self.reset_at_ns = now_ns;
        } else if self.awaiting_start {
            let started = match self.safety.config().estop.restart {
                reflex_safety::Restart::StartRequest => start_seq != self.last_start_seq,
                reflex_safety::Restart::NewCommand => {
                    // A command made after the reset that asks for motion: velocity, or (for
                    // an arm) a policy action with joint position targets.
                    let arm_action = self.last_no_action.is_none()
                        && proposed.joints.iter().any(|j| j.position.is_some());
                    proposed.stamp.as_nanos() > self.reset_at_ns
                        && (!proposed.is_motionless() || arm_action)
                }
            };
            self.last_start_seq = start_seq;
            self.awaiting_start = !started;
        }
        if self.awaiting_start {
            proposed = Command {
                source: proposed.source,
                stamp: Monotonic::from_nanos(now_ns),
                ..Command::default()
            };
            proposed.joints = self.safety.hold_targets();
        }
        // 4. Safety, always last.
        let state_before = self.recorder.as_ref().map(|_| self.safety.state());
        let verdict = self
            .safety
            .evaluate(inputs, &proposed, Monotonic::from_nanos(now_ns));
        // 5. The flight recorder copies what the layer saw and said (preallocated, wait-free).
        if let (Some(tap), Some(state)) = (self.recorder.as_mut(), state_before) {
            tap.record(now_ns, inputs, &proposed, &state, &verdict);
        }
        // 6-7. Timing and watchdog heartbeat.
        self.stats.ticks += 1;
        let cost = clock().saturating_sub(start);
        self.stats.tick_cost.record(cost);
        if swapped {
            self.stats.swap_tick_cost.record(cost);
        }
        self.heartbeat_ns.store(now_ns, Ordering::Release);
        // Metrics: relaxed stores and adds, no allocation.
        let t = &*self.telemetry;
        t.ticks.fetch_add(1, Ordering::Relaxed);
        t.tick_duration.record(cost);
        for reason in verdict.reasons.iter() {
            t.reasons[reason as usize].fetch_add(1, Ordering::Relaxed);
        }
        t.estop_latched
            .store(self.safety.is_latched(), Ordering::Relaxed);
        t.action_age_ns.store(self.action_age_ns, Ordering::Relaxed);
        t.chunks_merged
            .store(self.stats.chunks_merged, Ordering::Relaxed);
        t.ticks_without_action
            .store(self.stats.ticks_without_action, Ordering::Relaxed);
        t.cloud_ticks
            .store(self.stats.cloud_ticks, Ordering::Relaxed);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_without_removes_exactly_the_subset() {
        let (mut all, mut swaps) = (Histogram::default(), Histogram::default());
        for us in 1..=999u64 {
            all.record(us * 1_000 - 1);
        }
        // Three slow ticks were swap ticks: without them the p99.9 is an ordinary tick.
        for ns in [50_000_000u64, 40_000_000, 30_000_000] {
            all.record(ns);
            swaps.record(ns);
        }
        assert_eq!(all.quantile_us(0.999), 20_000.0);
        let rest = all.without(&swaps);
        assert_eq!(rest.count, 999);
        assert_eq!(rest.quantile_us(0.999), 999.0);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for us in 1..=100u64 {
            h.record(us * 1_000 - 1);
        }
        assert_eq!(h.quantile_us(0.5), 50.0);
        assert_eq!(h.quantile_us(0.99), 99.0);
        assert_eq!(h.max_ns, 99_999);
    }
}
