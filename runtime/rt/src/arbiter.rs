//! Arbitration between command sources: local policy, cloud, operator/teleop. Priority and
//! freshness come from config; every choice still goes through the same safety evaluation. A
//! cloud stop request (in the cloud inbox: the HIL operator's; the cloud link sends none) wins
//! over everything and holds until a newer cloud command lifts it. With nothing fresher, the
//! local policy drives (it is always last).

use std::sync::{Arc, Mutex};

use reflex_safety::{Command, CommandSource, Monotonic, Twist};
use serde::{Deserialize, Serialize};

/// A command source, for priority lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    LocalPolicy,
    Cloud,
    Operator,
}

/// `[arbitration]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArbiterConfig {
    /// Highest priority first.
    #[serde(default = "default_priority")]
    pub priority: Vec<Source>,
    /// A cloud command older than this (ms) is ignored here (the safety layer checks its own
    /// `commands.cloud_max_age_ms` too).
    #[serde(default = "default_cloud_age")]
    pub cloud_max_age_ms: f64,
    #[serde(default = "default_operator_age")]
    pub operator_max_age_ms: f64,
}

fn default_priority() -> Vec<Source> {
    vec![Source::Operator, Source::Cloud, Source::LocalPolicy]
}
fn default_cloud_age() -> f64 {
    300.0
}
fn default_operator_age() -> f64 {
    200.0
}

impl ArbiterConfig {
    /// Stage-2 checks; the error names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.priority.is_empty() {
            return Err("arbitration.priority = []: names no source; fix: e.g. [\"operator\", \"cloud\", \"local_policy\"]".into());
        }
        for (i, s) in self.priority.iter().enumerate() {
            if self.priority[..i].contains(s) {
                return Err(format!(
                    "arbitration.priority lists {s:?} twice; fix: name each source once, highest priority first"
                ));
            }
        }
        for (key, ms) in [
            ("cloud_max_age_ms", self.cloud_max_age_ms),
            ("operator_max_age_ms", self.operator_max_age_ms),
        ] {
            if !(ms.is_finite() && ms > 0.0 && ms <= 10_000.0) {
                return Err(format!(
                    "arbitration.{key} = {ms}: must be in (0, 10000] ms; fix: e.g. 300"
                ));
            }
        }
        Ok(())
    }
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        Self {
            priority: default_priority(),
            cloud_max_age_ms: default_cloud_age(),
            operator_max_age_ms: default_operator_age(),
        }
    }
}

/// A command from the cloud link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CloudCommand {
    pub seq: u64,
    /// When it was produced, on this robot's monotonic clock (the link converts).
    pub t_ns: u64,
    pub base: Twist,
    /// Stop now and hold until a newer command with `stop = false`.
    pub stop: bool,
}

/// The operator's (teleop) latest command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatorCommand {
    pub t_ns: u64,
    pub base: Twist,
}

/// One inbox: a wait-free SPSC ring (`rtrb`) into the RT thread. The sending end sits behind a
/// mutex that only non-RT senders take (a reconnected cloud link, a test's scripted operator);
/// the receiving end is taken once, by the arbiter, and read without a lock.
#[derive(Debug)]
pub struct Inbox<T> {
    tx: Mutex<rtrb::Producer<T>>,
    rx: Mutex<Option<rtrb::Consumer<T>>>,
}

impl<T> Inbox<T> {
    /// An inbox of `capacity` commands.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = rtrb::RingBuffer::new(capacity);
        Self {
            tx: Mutex::new(tx),
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Sends `command` (non-RT threads only). Returns false when the inbox is full: the command
    /// is dropped (the sender counts it); never blocks on the loop.
    pub fn try_send(&self, command: T) -> bool {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(command)
            .is_ok()
    }

    fn take_receiver(&self) -> Option<rtrb::Consumer<T>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Bounded inboxes filled by non-RT threads; a full inbox drops the new command (counted by
/// the sender), it never blocks the loop. Clones share the same inboxes; one arbiter reads them.
#[derive(Debug, Clone)]
pub struct Inboxes {
    pub cloud: Arc<Inbox<CloudCommand>>,
    pub operator: Arc<Inbox<OperatorCommand>>,
}

/// Commands each inbox holds (8 ticks' worth at one command per tick).
pub const INBOX_CAPACITY: usize = 8;

impl Default for Inboxes {
    fn default() -> Self {
        Self {
            cloud: Arc::new(Inbox::new(INBOX_CAPACITY)),
            operator: Arc::new(Inbox::new(INBOX_CAPACITY)),
        }
    }
}

/// The arbiter state (RT thread).
#[derive(Debug)]
pub struct Arbiter {
    priority: [Source; 3],
    count: usize,
    cloud_max_age_ns: u64,
    operator_max_age_ns: u64,
    cloud_rx: Option<rtrb::Consumer<CloudCommand>>,
    operator_rx: Option<rtrb::Consumer<OperatorCommand>>,
    cloud: Option<CloudCommand>,
    operator: Option<OperatorCommand>,
    pub cloud_out_of_order: u64,
}

impl Arbiter {
    /// The arbiter reading `inboxes`. Fails when another arbiter already reads them.
    pub fn new(config: &ArbiterConfig, inboxes: &Inboxes) -> Result<Self, &'static str> {
        let mut arbiter = Self::without_inboxes(config);
        arbiter.cloud_rx = inboxes.cloud.take_receiver();
        arbiter.operator_rx = inboxes.operator.take_receiver();
        if arbiter.cloud_rx.is_none() || arbiter.operator_rx.is_none() {
            return Err("arbiter: these inboxes are read by another control loop already");
        }
        Ok(arbiter)
    }

    /// An arbiter with no cloud or operator source: the local policy only.
    pub fn without_inboxes(config: &ArbiterConfig) -> Self {
        let mut priority = [Source::LocalPolicy; 3];
        let mut count = 0;
        for s in &config.priority {
            if !priority[..count].contains(s) && count < 3 {
                priority[count] = *s;
                count += 1;
            }
        }
        Self {
            priority,
            count,
            cloud_max_age_ns: (config.cloud_max_age_ms * 1e6) as u64,
            operator_max_age_ns: (config.operator_max_age_ms * 1e6) as u64,
            cloud_rx: None,
            operator_rx: None,
            cloud: None,
            operator: None,
            cloud_out_of_order: 0,
        }
    }

    /// Picks this tick's proposal from `local` and the inboxes.
    pub fn arbitrate(&mut self, now_ns: u64, local: Command) -> Command {
        self.arbitrate_with(now_ns, local, None)
    }

    /// Picks this tick's proposal from `local`, the cloud policy's action for now (`cloud`,
    /// from the loop's cloud chunk queue, fresh by that queue's age limit) and the inboxes. At
    /// the cloud's priority, its chunk action comes before a single cloud command.
    pub fn arbitrate_with(
        &mut self,
        now_ns: u64,
        local: Command,
        cloud: Option<Command>,
    ) -> Command {
        while let Some(c) = self.cloud_rx.as_mut().and_then(|rx| rx.pop().ok()) {
            if self.cloud.is_some_and(|old| c.seq <= old.seq) {
                self.cloud_out_of_order += 1;
            } else {
                self.cloud = Some(c);
            }
        }
        while let Some(o) = self.operator_rx.as_mut().and_then(|rx| rx.pop().ok()) {
            self.operator = Some(o);
        }
        if let Some(c) = self.cloud
            && c.stop
        {
            return Command::base(
                CommandSource::Cloud,
                Monotonic::from_nanos(now_ns),
                0.0,
                0.0,
                0.0,
            );
        }
        for source in &self.priority[..self.count] {
            match source {
                Source::Operator => {
                    if let Some(o) = self.operator
                        && now_ns.saturating_sub(o.t_ns) <= self.operator_max_age_ns
                    {
                        return Command::base(
                            CommandSource::Operator,
                            Monotonic::from_nanos(o.t_ns),
                            o.base.vx_mps,
                            o.base.vy_mps,
                            o.base.wz_radps,
                        );
                    }
                }
                Source::Cloud => {
                    if let Some(c) = cloud {
                        return c;
                    }
                    if let Some(c) = self.cloud
                        && now_ns.saturating_sub(c.t_ns) <= self.cloud_max_age_ns
                    {
                        return Command::base(
                            CommandSource::Cloud,
                            Monotonic::from_nanos(c.t_ns),
                            c.base.vx_mps,
                            c.base.vy_mps,
                            c.base.wz_radps,
                        );
                    }
                }
                Source::LocalPolicy => return local,
            }
        }
        local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn twist(vx: f64) -> Twist {
        Twist {
            vx_mps: vx,
            ..Twist::default()
        }
    }

    #[test]
    fn priority_and_freshness() {
        let inboxes = Inboxes::default();
        let mut a = Arbiter::new(&ArbiterConfig::default(), &inboxes).unwrap();
        let local = Command::base(
            CommandSource::LocalPolicy,
            Monotonic::from_nanos(0),
            0.1,
            0.0,
            0.0,
        );
        assert_eq!(
            a.arbitrate(1_000 * MS, local).source,
            CommandSource::LocalPolicy
        );
        inboxes
            .cloud
            .try_send(CloudCommand {
                seq: 1,
                t_ns: 1_000 * MS,
                base: twist(0.3),
                stop: false,
            })
            .then_some(())
            .unwrap();
        let c = a.arbitrate(1_010 * MS, local);
        assert_eq!((c.source, c.base.vx_mps), (CommandSource::Cloud, 0.3));
        inboxes
            .operator
            .try_send(OperatorCommand {
                t_ns: 1_020 * MS,
                base: twist(0.2),
            })
            .then_some(())
            .unwrap();
        assert_eq!(
            a.arbitrate(1_030 * MS, local).source,
            CommandSource::Operator
        );
        // The operator goes quiet: cloud again while fresh, then the local policy.
        assert_eq!(a.arbitrate(1_250 * MS, local).source, CommandSource::Cloud);
        assert_eq!(
            a.arbitrate(1_400 * MS, local).source,
            CommandSource::LocalPolicy
        );
    }

    #[test]
    fn a_cloud_stop_wins_and_holds_until_lifted_by_a_newer_command() {
        let inboxes = Inboxes::default();
        let mut a = Arbiter::new(&ArbiterConfig::default(), &inboxes).unwrap();
        let local = Command::base(
            CommandSource::LocalPolicy,
            Monotonic::from_nanos(0),
            0.5,
            0.0,
            0.0,
        );
        inboxes
            .operator
            .try_send(OperatorCommand {
                t_ns: 0,
                base: twist(0.4),
            })
            .then_some(())
            .unwrap();
        inboxes
            .cloud
            .try_send(CloudCommand {
                seq: 5,
                t_ns: 0,
                base: twist(0.0),
                stop: true,
            })
            .then_some(())
            .unwrap();
        let c = a.arbitrate(10 * MS, local);
        assert_eq!((c.source, c.base.vx_mps), (CommandSource::Cloud, 0.0));
        // Long after, still stopped; an older (reordered) message cannot lift it.
        inboxes
            .cloud
            .try_send(CloudCommand {
                seq: 4,
                t_ns: 5_000 * MS,
                base: twist(0.3),
                stop: false,
            })
            .then_some(())
            .unwrap();
        assert_eq!(a.arbitrate(5_000 * MS, local).base.vx_mps, 0.0);
        assert_eq!(a.cloud_out_of_order, 1);
        inboxes
            .cloud
            .try_send(CloudCommand {
                seq: 6,
                t_ns: 5_000 * MS,
                base: twist(0.3),
                stop: false,
            })
            .then_some(())
            .unwrap();
        assert_eq!(a.arbitrate(5_010 * MS, local).base.vx_mps, 0.3);
    }

    #[test]
    fn one_arbiter_per_inboxes_and_a_full_inbox_drops() {
        let inboxes = Inboxes::default();
        let _a = Arbiter::new(&ArbiterConfig::default(), &inboxes).unwrap();
        assert!(Arbiter::new(&ArbiterConfig::default(), &inboxes.clone()).is_err());
        let op = OperatorCommand {
            t_ns: 0,
            base: twist(0.1),
        };
        for _ in 0..INBOX_CAPACITY {
            assert!(inboxes.operator.try_send(op));
        }
        assert!(
            !inboxes.operator.try_send(op),
            "a full inbox drops, never grows"
        );
    }
}
