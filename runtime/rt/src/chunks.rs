//! The action-chunk queue of anytime inference: merges each new chunk with the executing one
//! using the measured inference delay (the real-time-chunking idea), picks the action for *now*,
//! and refuses actions older than `max_action_age_ms`. Fixed capacity, no allocation after `new`.

use serde::{Deserialize, Serialize};

/// How a new chunk joins the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeStrategy {
    /// The new chunk replaces every future action.
    Latest,
    /// The executing action is kept; the next `crossfade_steps` actions blend linearly from the
    /// old chunk to the new one; the rest come from the new chunk. Smooth and never older than
    /// the newest chunk beyond the blend: the default.
    #[default]
    Crossfade,
    /// Temporal ensembling (ACT): every future action is the running mean of all chunks that
    /// predicted it, older predictions weighted by `ensemble_decay` per merge.
    Ensemble,
}

/// How the loop gets from one policy step to the next (the policy runs at its own rate, e.g.
/// 30 Hz; the loop at 100 Hz).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Each action holds for its whole step (zero-order hold): the default, right for
    /// velocity commands.
    #[default]
    Hold,
    /// Linear between consecutive queued actions (across a merge too, so a splice has no
    /// jump): right for position targets, which would otherwise move in steps at the policy
    /// rate. The last queued action holds.
    Linear,
}

/// Why there is no action for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAction {
    /// No chunk covers this instant (never received, or run past its end).
    QueueDry,
    /// The covering action comes from an observation older than `max_action_age_ms`.
    Stale,
}

/// Counters, read by telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub merges: u64,
    /// Actions of incoming chunks that were already in the past when they arrived.
    pub actions_late_on_arrival: u64,
    /// Ticks on which the covering action was too old and was not executed.
    pub actions_dropped_stale: u64,
    pub ticks_dry: u64,
    /// Inference delay of the last merged chunk, in policy steps.
    pub last_delay_steps: u64,
}

/// `[chunks]`: how the loop executes a policy's action chunks. Every key is optional.
///
/// | key | type | default | meaning |
/// |---|---|---|---|
/// | `strategy` | `latest`/`crossfade`/`ensemble` | `crossfade` | how a new chunk joins the queue |
/// | `crossfade_steps` | usize, policy steps | 5 | blend length of `crossfade` (1..=1000) |
/// | `ensemble_decay` | f32 | 0.5 | weight of older predictions per merge, `ensemble` (0, 1] |
/// | `max_action_age_ms` | f64, ms | 200 | an action whose observation is older is not executed: the loop proposes a stop (0, 10000] |
/// | `interpolation` | `hold`/`linear` | `hold` | between policy steps: hold each action, or interpolate linearly (position targets) |
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunksConfig {
    pub strategy: MergeStrategy,
    pub crossfade_steps: usize,
    pub ensemble_decay: f32,
    pub max_action_age_ms: f64,
    pub interpolation: Interpolation,
}

impl Default for ChunksConfig {
    fn default() -> Self {
        Self {
            strategy: MergeStrategy::Crossfade,
            crossfade_steps: 5,
            ensemble_decay: 0.5,
            max_action_age_ms: 200.0,
            interpolation: Interpolation::Hold,
        }
    }
}

impl ChunksConfig {
    /// Stage-2 checks; the error names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let age = self.max_action_age_ms;
        if !(age.is_finite() && age > 0.0 && age <= 10_000.0) {
            return Err(format!(
                "chunks.max_action_age_ms = {age}: must be in (0, 10000] ms; fix: the oldest observation an executed action may come from, e.g. 200"
            ));
        }
        if !(1..=1000).contains(&self.crossfade_steps) {
            return Err(format!(
                "chunks.crossfade_steps = {}: must be in 1..=1000 policy steps; fix: e.g. 5",
                self.crossfade_steps
            ));
        }
        let d = self.ensemble_decay;
        if !(d.is_finite() && d > 0.0 && d <= 1.0) {
            return Err(format!(
                "chunks.ensemble_decay = {d}: must be in (0, 1]; fix: e.g. 0.5"
            ));
        }
        Ok(())
    }

    /// The queue for a policy of `dims` action dimensions, `horizon` steps `step_ns` apart.
    pub fn queue(&self, dims: usize, horizon: usize, step_ns: u64) -> QueueConfig {
        QueueConfig {
            dims,
            horizon,
            step_ns,
            strategy: self.strategy,
            crossfade_steps: self.crossfade_steps,
            ensemble_decay: self.ensemble_decay,
            max_action_age_ns: (self.max_action_age_ms * 1e6).round() as u64,
            interpolation: self.interpolation,
        }
    }
}

/// Queue configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    pub dims: usize,
    pub horizon: usize,
    /// Spacing of a chunk's actions (1 / policy control rate), ns.
    pub step_ns: u64,
    pub strategy: MergeStrategy,
    pub crossfade_steps: usize,
    pub ensemble_decay: f32,
    pub max_action_age_ns: u64,
    pub interpolation: Interpolation,
}

/// Future actions sorted by time, as struct-of-arrays with a scratch twin for merging.
#[derive(Debug, Clone)]
pub struct ChunkQueue {
    cfg: QueueConfig,
    len: usize,
    time_ns: Vec<u64>,
    obs_ns: Vec<u64>,
    weight: Vec<f32>,
    actions: Vec<f32>,
    scratch_time: Vec<u64>,
    scratch_obs: Vec<u64>,
    scratch_weight: Vec<f32>,
    scratch_actions: Vec<f32>,
    /// The interpolated action (`Interpolation::Linear`).
    between: Vec<f32>,
    pub stats: QueueStats,
}

impl ChunkQueue {
    pub fn new(cfg: QueueConfig) -> Self {
        // The newest chunk spans `horizon` steps; one more slot keeps the executing action.
        let cap = cfg.horizon + 1;
        Self {
            cfg,
            len: 0,
            time_ns: vec![0; cap],
            obs_ns: vec![0; cap],
            weight: vec![0.0; cap],
            actions: vec![0.0; cap * cfg.dims],
            scratch_time: vec![0; cap],
            scratch_obs: vec![0; cap],
            scratch_weight: vec![0.0; cap],
            scratch_actions: vec![0.0; cap * cfg.dims],
            between: vec![0.0; cfg.dims],
            stats: QueueStats::default(),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Index of the action covering `now_ns`: each action holds from its time until the next
    /// one starts; the last one for one step.
    fn covering(&self, now_ns: u64) -> Option<usize> {
        let i = (0..self.len).rev().find(|&i| self.time_ns[i] <= now_ns)?;
        if i + 1 == self.len && now_ns >= self.time_ns[i] + self.cfg.step_ns {
            return None;
        }
        Some(i)
    }

    /// Merges a chunk predicted from an observation at `t_obs_ns` (`actions`: horizon × dims,
    /// row-major) arriving at `now_ns`. Actions already in the past are dropped (counted); the
    /// action executing now is kept (it is committed); the rest follow the strategy.
    pub fn merge(&mut self, t_obs_ns: u64, actions: &[f32], now_ns: u64) {
        let (dims, step) = (self.cfg.dims, self.cfg.step_ns.max(1));
        let horizon = (actions.len() / dims.max(1)).min(self.cfg.horizon);
        let delay_steps = now_ns.saturating_sub(t_obs_ns) / step;
        self.stats.merges += 1;
        self.stats.last_delay_steps = delay_steps;
        // An old action too old to run is neither committed nor blended in (after a link drop
        // or a slow inference, the new chunk starts clean).
        let max_age = self.cfg.max_action_age_ns;
        let usable = |obs_ns: u64| now_ns.saturating_sub(obs_ns) <= max_age;
        let executing = self.covering(now_ns).filter(|&i| usable(self.obs_ns[i]));
        let mut n = 0;
        if let Some(i) = executing {
            self.copy_to_scratch(i, n);
            n += 1;
        }
        let mut fade = 0usize;
        // The old action covering each new action's time: the new times increase, so a cursor
        // that only moves forward finds them all in O(H) (the merge is O(H · A) in all).
        let mut cursor = 0usize;
        for k in 0..horizon {
            let t = t_obs_ns + k as u64 * step;
            if t + step <= now_ns {
                self.stats.actions_late_on_arrival += 1;
                continue;
            }
            if executing.is_some_and(|i| t < self.time_ns[i] + step) {
                // The executing action is committed: it runs its full step.
                continue;
            }
            let new = &actions[k * dims..(k + 1) * dims];
            while cursor + 1 < self.len && self.time_ns[cursor + 1] <= t {
                cursor += 1;
            }
            let old = (cursor < self.len
                && self.time_ns[cursor] <= t
                && (cursor + 1 < self.len || t < self.time_ns[cursor] + step))
                .then_some(cursor)
                .filter(|&j| usable(self.obs_ns[j]));
            let out = &mut self.scratch_actions[n * dims..(n + 1) * dims];
            let mut weight = 1.0;
            match (self.cfg.strategy, old) {
                (MergeStrategy::Crossfade, Some(j)) if fade < self.cfg.crossfade_steps => {
                    fade += 1;
                    let w = fade as f32 / (self.cfg.crossfade_steps + 1) as f32;
                    for d in 0..dims {
                        out[d] = (1.0 - w) * self.actions[j * dims + d] + w * new[d];
                    }
                }
                (MergeStrategy::Ensemble, Some(j)) => {
                    let w_old = self.weight[j] * self.cfg.ensemble_decay;
                    weight = w_old + 1.0;
                    for d in 0..dims {
                        out[d] = (w_old * self.actions[j * dims + d] + new[d]) / weight;
                    }
                }
                _ => out.copy_from_slice(new),
            }
            self.scratch_time[n] = t;
            // An action is as old as the newest observation that shaped it.
            self.scratch_obs[n] = t_obs_ns;
            self.scratch_weight[n] = weight;
            n += 1;
            if n == self.time_ns.len() {
                break;
            }
        }
        std::mem::swap(&mut self.time_ns, &mut self.scratch_time);
        std::mem::swap(&mut self.obs_ns, &mut self.scratch_obs);
        std::mem::swap(&mut self.weight, &mut self.scratch_weight);
        std::mem::swap(&mut self.actions, &mut self.scratch_actions);
        self.len = n;
    }

    fn copy_to_scratch(&mut self, from: usize, to: usize) {
        let dims = self.cfg.dims;
        self.scratch_time[to] = self.time_ns[from];
        self.scratch_obs[to] = self.obs_ns[from];
        self.scratch_weight[to] = self.weight[from];
        self.scratch_actions[to * dims..(to + 1) * dims]
            .copy_from_slice(&self.actions[from * dims..(from + 1) * dims]);
    }

    /// The action for `now_ns` (held or interpolated between policy steps, per
    /// `interpolation`), or why there is none. Never returns an action from an observation
    /// older than `max_action_age_ms` (the covering action's; an interpolated one also blends
    /// in only a newer or equally new next action, which the queue's order guarantees).
    pub fn action_at(&mut self, now_ns: u64) -> Result<&[f32], NoAction> {
        let Some(i) = self.covering(now_ns) else {
            self.stats.ticks_dry += 1;
            return Err(NoAction::QueueDry);
        };
        if now_ns.saturating_sub(self.obs_ns[i]) > self.cfg.max_action_age_ns {
            self.stats.actions_dropped_stale += 1;
            return Err(NoAction::Stale);
        }
        let dims = self.cfg.dims;
        if self.cfg.interpolation == Interpolation::Linear && i + 1 < self.len {
            let (t0, t1) = (self.time_ns[i], self.time_ns[i + 1]);
            let w = if t1 > t0 {
                (now_ns - t0) as f32 / (t1 - t0) as f32
            } else {
                0.0
            };
            for d in 0..dims {
                let (a, b) = (self.actions[i * dims + d], self.actions[(i + 1) * dims + d]);
                self.between[d] = a + (b - a) * w;
            }
            return Ok(&self.between);
        }
        Ok(&self.actions[i * dims..(i + 1) * dims])
    }

    /// Observation time of the action covering `now_ns`.
    pub fn obs_time_at(&self, now_ns: u64) -> Option<u64> {
        self.covering(now_ns).map(|i| self.obs_ns[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn queue(strategy: MergeStrategy) -> ChunkQueue {
        ChunkQueue::new(QueueConfig {
            dims: 1,
            horizon: 10,
            step_ns: 20 * MS,
            strategy,
            crossfade_steps: 4,
            ensemble_decay: 0.5,
            max_action_age_ns: 150 * MS,
            interpolation: Interpolation::Hold,
        })
    }

    fn chunk(value: f32) -> Vec<f32> {
        (0..10).map(|k| value + k as f32).collect()
    }

    #[test]
    fn holds_each_action_for_its_step_and_drops_late_ones() {
        let mut q = queue(MergeStrategy::Latest);
        // Observation at 0, arriving at 50 ms: steps 0 and 1 (0-40 ms) are already past.
        q.merge(0, &chunk(0.0), 50 * MS);
        assert_eq!(q.stats.actions_late_on_arrival, 2);
        assert_eq!(q.stats.last_delay_steps, 2);
        assert_eq!(q.action_at(50 * MS).unwrap(), [2.0]);
        assert_eq!(q.action_at(59 * MS).unwrap(), [2.0]);
        assert_eq!(q.action_at(60 * MS).unwrap(), [3.0]);
    }

    #[test]
    fn never_executes_an_action_older_than_the_limit() {
        let mut q = queue(MergeStrategy::Latest);
        q.merge(0, &chunk(0.0), 10 * MS);
        assert!(q.action_at(150 * MS).is_ok());
        assert_eq!(q.action_at(151 * MS), Err(NoAction::Stale));
        assert_eq!(q.stats.actions_dropped_stale, 1);
        // Past the chunk's end: dry.
        assert_eq!(q.action_at(201 * MS), Err(NoAction::QueueDry));
    }

    #[test]
    fn crossfade_keeps_the_executing_action_and_blends_the_next() {
        let mut q = queue(MergeStrategy::Crossfade);
        q.merge(0, &[0.0; 10], 0);
        // New chunk (value 10) from an observation at 30 ms, arriving at 45 ms.
        q.merge(30 * MS, &[10.0; 10], 45 * MS);
        // 40-60 ms: the committed old action.
        assert_eq!(q.action_at(45 * MS).unwrap(), [0.0]);
        // Next four steps blend 1/5 … 4/5 of the way; then the new chunk.
        let blend: Vec<f32> = (0..6)
            .map(|k| q.action_at((70 + 20 * k) * MS).unwrap()[0])
            .collect();
        assert_eq!(blend, [2.0, 4.0, 6.0, 8.0, 10.0, 10.0]);
        // The merged actions carry the new observation's time: 175 ms is 145 ms old (fine),
        // 185 ms would be 155 ms old (refused).
        assert_eq!(q.action_at(175 * MS).unwrap(), [10.0]);
        assert_eq!(q.action_at(185 * MS), Err(NoAction::Stale));
    }

    #[test]
    fn a_chunk_after_a_gap_is_not_blended_with_actions_too_old_to_run() {
        let mut q = queue(MergeStrategy::Crossfade);
        q.merge(0, &[0.0; 10], 0);
        // No chunk for a while (a dropped link, a slow inference): the old actions at 160-200
        // ms are over 150 ms old by then. The next chunk, from an observation at 160 ms, runs
        // as it is: not committed to the old step, not faded in from it.
        q.merge(160 * MS, &[10.0; 10], 165 * MS);
        for ms in [165, 185, 205, 245] {
            assert_eq!(q.action_at(ms * MS).unwrap(), [10.0], "{ms} ms");
        }
        // While the old actions are young enough the fade still runs (the crossfade test).
        let mut q = queue(MergeStrategy::Crossfade);
        q.merge(0, &[0.0; 10], 0);
        q.merge(100 * MS, &[10.0; 10], 105 * MS);
        assert_eq!(q.action_at(105 * MS).unwrap(), [0.0]);
        assert_eq!(q.action_at(125 * MS).unwrap(), [2.0]);
    }

    #[test]
    fn linear_interpolation_moves_between_steps_and_splices_without_a_jump() {
        let mut q = queue(MergeStrategy::Latest);
        q.cfg.interpolation = Interpolation::Linear;
        q.cfg.max_action_age_ns = 1_000 * MS;
        q.merge(0, &chunk(0.0), 0);
        // 20 ms steps: 0, 1, 2, … ⇒ at 10 ms halfway, at 35 ms three quarters into step 1.
        assert_eq!(q.action_at(10 * MS).unwrap(), [0.5]);
        assert_eq!(q.action_at(35 * MS).unwrap(), [1.75]);
        // A new chunk (10, 11, …) from an observation at 40 ms, arriving at 50 ms: the
        // executing action (2 at 40-60 ms) is committed and the new chunk's next step (11 at
        // 60 ms) follows: 50 ms is halfway from 2 to 11, not a jump to 10.
        q.merge(40 * MS, &chunk(10.0), 50 * MS);
        assert_eq!(q.action_at(50 * MS).unwrap(), [6.5]);
        assert_eq!(q.action_at(60 * MS).unwrap(), [11.0]);
        // The last action holds for its step.
        assert_eq!(q.action_at(230 * MS).unwrap(), [19.0]);
        assert_eq!(q.action_at(240 * MS), Err(NoAction::QueueDry));
    }

    #[test]
    fn the_splice_point_is_the_actions_consumed_while_inference_ran_never_an_estimate() {
        // Known failure elsewhere: the number of actions to skip comes from a latency estimate
        // (a running mean, or one warped by the slow first warm-up inference), so a slow or fast
        // inference splices ahead of (skipping actions the robot never executed) or behind
        // where the robot is. Here each chunk's actions are stamped from its own observation
        // time, so the action executed when it arrives is the one for that instant.
        let mut q = queue(MergeStrategy::Latest);
        q.cfg.max_action_age_ns = 1_000 * MS;
        // A fast inference (observation at 0, 25 ms later): step 1 of 20 ms steps is due.
        q.merge(0, &chunk(0.0), 25 * MS);
        assert_eq!(
            (q.stats.last_delay_steps, q.action_at(25 * MS).unwrap()[0]),
            (1, 1.0)
        );
        // A slow one (observation at 100 ms, 85 ms later: 4 steps consumed): step 4, exactly,
        // not the 2.5 a mean of the two latencies would give, nor the fast one's 1.
        q.merge(100 * MS, &chunk(100.0), 185 * MS);
        assert_eq!(q.stats.last_delay_steps, 4);
        // The executing action (old chunk's step 9, 180–200 ms) is committed; then new step 5.
        assert_eq!(q.action_at(185 * MS).unwrap(), [9.0]);
        assert_eq!(q.action_at(200 * MS).unwrap(), [105.0]);
        // And a fast one again: its own delay, nothing carried over.
        q.merge(200 * MS, &chunk(200.0), 205 * MS);
        assert_eq!(q.stats.last_delay_steps, 0);
        assert_eq!(q.action_at(220 * MS).unwrap(), [201.0]);
    }

    #[test]
    fn a_missing_prefix_is_never_padded_with_zeros() {
        // Known failure elsewhere: blending a new chunk with a padded (zero) prefix when there
        // is no previous chunk; zero in normalized space decodes to the dataset's mean pose,
        // zero here (physical units) would be 0 rad. With nothing executing, every strategy
        // takes the new chunk as it is.
        for strategy in [MergeStrategy::Crossfade, MergeStrategy::Ensemble] {
            let mut q = queue(strategy);
            q.merge(0, &[10.0; 10], 0);
            assert_eq!(q.action_at(0).unwrap(), [10.0], "{strategy:?}: first chunk");
            assert_eq!(q.action_at(20 * MS).unwrap(), [10.0], "{strategy:?}");
            // Run dry (past its end), then a new chunk: not blended with the old one's ghost.
            assert_eq!(q.action_at(250 * MS), Err(NoAction::QueueDry));
            q.merge(250 * MS, &[-4.0; 10], 250 * MS);
            assert_eq!(
                q.action_at(250 * MS).unwrap(),
                [-4.0],
                "{strategy:?}: after dry"
            );
            assert_eq!(q.action_at(270 * MS).unwrap(), [-4.0], "{strategy:?}");
        }
    }

    #[test]
    fn a_merge_finds_the_old_action_under_every_new_one() {
        // The O(H) cursor of `merge` agrees with `covering` for every new action's time,
        // including an old chunk that ends before the new one (no old action past its end).
        let mut q = queue(MergeStrategy::Crossfade);
        q.cfg.crossfade_steps = 1000;
        q.cfg.max_action_age_ns = 1_000 * MS;
        q.merge(0, &chunk(0.0), 0);
        // Old actions 0..9 at 0..180 ms; the new chunk (100 …) from an observation at 30 ms,
        // arriving at 45 ms: the executing old action (40–60 ms) is committed, so new step 1
        // (50 ms) is skipped; step k ≥ 2 at 30 + 20k ms blends with the old action covering it
        // (weight (k − 1)/1001), and new steps at 210 ms and later have no old action.
        q.merge(30 * MS, &[100.0; 10], 45 * MS);
        assert_eq!(q.action_at(50 * MS).unwrap(), [2.0]);
        for k in 2..10u64 {
            let t = 30 + 20 * k;
            let old = if t < 200 { (t / 20) as f32 } else { f32::NAN };
            let got = q.action_at(t * MS).unwrap()[0];
            if old.is_nan() {
                assert_eq!(got, 100.0, "{t} ms: no old action");
            } else {
                let w = (k - 1) as f32 / 1001.0;
                assert!(
                    ((1.0 - w) * old + w * 100.0 - got).abs() < 1e-4,
                    "{t} ms: {got}"
                );
            }
        }
    }

    #[test]
    fn ensemble_averages_overlapping_predictions() {
        let mut q = queue(MergeStrategy::Ensemble);
        q.merge(0, &[0.0; 10], 0);
        q.merge(20 * MS, &[3.0; 10], 20 * MS);
        // Weights: old 1 × 0.5, new 1 ⇒ (0.5·0 + 3) / 1.5 = 2.
        assert_eq!(q.action_at(45 * MS).unwrap(), [2.0]);
    }
}
