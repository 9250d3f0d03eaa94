//! The actuator gate (SAF-011): the one place a verdict becomes a command on the wire. It runs
//! on its own thread (`reflex_runner::run`), independent of the RT thread, and decides from the
//! newest [`CommandFrame`] and the E-stop ingress alone:
//! - a verdict the RT thread published is sent at once (the RT thread wakes the gate), only
//!   while it is at most `2 × period` old and only once (never republished);
//! - no fresh verdict (the RT thread died, stalled or is starved) ⇒ zero, repeated every period
//!   for `zero_periods` periods, then silence, so the drive's own command timeout fires too;
//! - an E-stop press on the ingress ⇒ zero at once, and no verdict made before the RT thread
//!   saw that press is sent afterwards;
//! - shutdown ⇒ zero.
//!
//! Pure logic over plain values (no clock, no I/O): `tests` below and the wire tests
//! (`runtime/tests/dds_interop.rs`) prove it; `reflex_runner::run` drives it.

use reflex_core::CommandFrame;

/// What the gate does now.
// Returned by value once per period on the gate thread; boxing the frame would allocate.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GateOutput {
    /// Send this verdict.
    Verdict(CommandFrame),
    /// Send zero (drive power off).
    Zero,
    /// Send nothing.
    Nothing,
}

/// Why the gate last sent zero (for counters and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroCause {
    /// No verdict yet, or the newest one is older than two periods.
    Stale,
    /// An E-stop press arrived on the ingress.
    Press,
}

/// The gate's state; see the module docs.
#[derive(Debug, Clone)]
pub struct ActuatorGate {
    period_ns: u64,
    max_age_ns: u64,
    zero_periods: u32,
    last_seq: u64,
    /// When the last zero was sent, and how many zeros remain before silence.
    last_zero_ns: Option<u64>,
    zeros_left: u32,
    /// Ingress presses answered with zero; verdicts that saw fewer are never sent.
    presses_answered: u64,
    /// Counters: verdicts sent, zeros sent for staleness and for presses.
    pub verdicts_sent: u64,
    pub stale_zeros: u64,
    pub press_zeros: u64,
}

impl ActuatorGate {
    /// A gate for a loop of `period_ns` that sends zero for `zero_periods` periods before it
    /// falls silent.
    pub fn new(period_ns: u64, zero_periods: u32) -> Self {
        Self {
            period_ns: period_ns.max(1),
            max_age_ns: 2 * period_ns.max(1),
            zero_periods: zero_periods.max(1),
            last_seq: 0,
            last_zero_ns: None,
            zeros_left: zero_periods.max(1),
            presses_answered: 0,
            verdicts_sent: 0,
            stale_zeros: 0,
            press_zeros: 0,
        }
    }

    /// The oldest verdict the gate sends (ns): two periods.
    pub fn max_age_ns(&self) -> u64 {
        self.max_age_ns
    }

    /// Decides at `now_ns`, given the newest verdict `frame` and the ingress' press total.
    pub fn decide(&mut self, now_ns: u64, frame: &CommandFrame, presses: u64) -> GateOutput {
        if presses > self.presses_answered {
            self.presses_answered = presses;
            return self.zero(now_ns, ZeroCause::Press);
        }
        let fresh = frame.seq > 0
            && frame.stamp_ns <= now_ns
            && now_ns - frame.stamp_ns <= self.max_age_ns
            && frame.presses_seen >= self.presses_answered;
        if fresh {
            if frame.seq == self.last_seq {
                return GateOutput::Nothing;
            }
            self.last_seq = frame.seq;
            self.verdicts_sent += 1;
            // A fresh verdict re-arms the zeros for the next outage.
            self.zeros_left = self.zero_periods;
            self.last_zero_ns = None;
            return GateOutput::Verdict(*frame);
        }
        // Stale or missing: zero once per period for `zero_periods` periods, then silence.
        let due = self
            .last_zero_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= self.period_ns);
        if self.zeros_left > 0 && due {
            self.zeros_left -= 1;
            return self.zero(now_ns, ZeroCause::Stale);
        }
        GateOutput::Nothing
    }

    fn zero(&mut self, now_ns: u64, cause: ZeroCause) -> GateOutput {
        self.last_zero_ns = Some(now_ns);
        match cause {
            ZeroCause::Stale => self.stale_zeros += 1,
            ZeroCause::Press => self.press_zeros += 1,
        }
        GateOutput::Zero
    }

    /// When the gate must look again if nothing wakes it (ns): when the newest verdict turns
    /// stale, or the next zero of an outage is due.
    pub fn next_check_ns(&self, now_ns: u64, frame: &CommandFrame) -> u64 {
        if frame.seq > 0 && frame.seq == self.last_seq {
            let stale_at = frame.stamp_ns + self.max_age_ns + 1;
            if stale_at > now_ns {
                return stale_at;
            }
        }
        now_ns + self.period_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 10_000_000;

    fn verdict(seq: u64, stamp_ns: u64, vx: f64) -> CommandFrame {
        let mut f = CommandFrame {
            seq,
            stamp_ns,
            drive_enabled: true,
            ..CommandFrame::default()
        };
        f.base.vx_mps = vx;
        f
    }

    #[test]
    fn saf_011_a_fresh_verdict_is_sent_once_and_a_stale_one_never() {
        let mut g = ActuatorGate::new(P, 3);
        let v = verdict(1, 100 * P, 0.5);
        assert_eq!(g.decide(100 * P, &v, 0), GateOutput::Verdict(v));
        assert_eq!(
            g.decide(100 * P + 1, &v, 0),
            GateOutput::Nothing,
            "never republished"
        );
        // The RT thread stopped publishing: two periods after the verdict it is stale ⇒ zero.
        assert_eq!(
            g.decide(102 * P, &v, 0),
            GateOutput::Nothing,
            "still ≤ 2 periods old"
        );
        assert_eq!(g.decide(102 * P + 1, &v, 0), GateOutput::Zero);
        assert_eq!(
            g.decide(102 * P + 2, &v, 0),
            GateOutput::Nothing,
            "one zero per period"
        );
        assert_eq!(g.decide(103 * P + 1, &v, 0), GateOutput::Zero);
        assert_eq!(g.decide(104 * P + 1, &v, 0), GateOutput::Zero);
        // Then silence: the drive's own timeout fires too.
        for k in 5..50 {
            assert_eq!(g.decide((100 + k) * P + 1, &v, 0), GateOutput::Nothing);
        }
        // A verdict that arrives late (made long ago) is never sent.
        let old = verdict(2, 101 * P, 0.5);
        assert_eq!(g.decide(150 * P, &old, 0), GateOutput::Nothing);
        // Fresh verdicts again: sent, and the zeros re-arm for the next outage.
        let new = verdict(3, 150 * P, 0.2);
        assert_eq!(g.decide(150 * P, &new, 0), GateOutput::Verdict(new));
        assert_eq!(g.decide(152 * P + 1, &new, 0), GateOutput::Zero);
        assert_eq!((g.verdicts_sent, g.stale_zeros), (2, 4));
    }

    #[test]
    fn saf_011_no_verdict_yet_is_zero() {
        let mut g = ActuatorGate::new(P, 2);
        let none = CommandFrame::default();
        assert_eq!(g.decide(5 * P, &none, 0), GateOutput::Zero);
        assert_eq!(g.decide(6 * P, &none, 0), GateOutput::Zero);
        assert_eq!(g.decide(7 * P, &none, 0), GateOutput::Nothing);
    }

    #[test]
    fn saf_012_a_press_is_answered_with_zero_at_once_and_older_verdicts_never_pass() {
        let mut g = ActuatorGate::new(P, 3);
        let v = verdict(1, 10 * P, 0.5);
        assert_eq!(g.decide(10 * P, &v, 0), GateOutput::Verdict(v));
        // Press between two ticks: zero immediately, not at the next verdict.
        assert_eq!(g.decide(10 * P + 300_000, &v, 1), GateOutput::Zero);
        // The RT thread's next verdict was made before it saw the press: never sent.
        let before = CommandFrame {
            presses_seen: 0,
            ..verdict(2, 11 * P, 0.5)
        };
        assert_ne!(g.decide(11 * P, &before, 1), GateOutput::Verdict(before));
        // One that saw the press (the safety layer's stop) is.
        let after = CommandFrame {
            presses_seen: 1,
            ..verdict(3, 12 * P, 0.0)
        };
        assert_eq!(g.decide(12 * P, &after, 1), GateOutput::Verdict(after));
        assert_eq!(g.press_zeros, 1);
    }

    #[test]
    fn the_gate_wakes_when_the_verdict_turns_stale() {
        let mut g = ActuatorGate::new(P, 3);
        let v = verdict(1, 10 * P, 0.5);
        g.decide(10 * P, &v, 0);
        assert_eq!(g.next_check_ns(10 * P + 5, &v), 12 * P + 1);
        assert_eq!(g.next_check_ns(13 * P, &v), 14 * P);
    }
}
