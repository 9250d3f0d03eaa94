//! The RT thread's body: every period, on absolute deadlines, read the newest sensors and the
//! E-stop ingress, run the watchdog, tick the control loop (safety last), publish the verdict
//! and wake the actuator gate, record timing and the loop's status. No allocation, lock or
//! blocking call after [`RtThread::run`] starts ticking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use reflex_core::{CommandFrame, EstopIngress, LoopStatus, SensorFrame, is_stationary};
use reflex_safety::{EstopReport, EstopSource, Monotonic};

use crate::control::{ControlLoop, Histogram};
use crate::ticker::{self, RtConfig, RtGrants, Ticker};

/// A fault the HIL tests inject into the RT thread (`reflex run --inject-rt-fault`), to prove
/// the actuator gate and the supervisor (SAF-011) without a debugger. Never set in production.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RtFault {
    /// The RT thread panics at this monotonic time (ns).
    PanicAt(u64),
    /// The RT thread stops ticking at `at_ns` for `for_ns` (a stall, or starvation).
    StallAt { at_ns: u64, for_ns: u64 },
}

/// Everything the RT thread owns; moved into the thread.
#[derive(Debug)]
pub struct RtThread {
    pub control: ControlLoop,
    /// Newest sensors (the robot I/O writes them).
    pub sensors: triple_buffer::Output<SensorFrame>,
    /// Where each verdict goes (the robot I/O applies the newest).
    pub commands: triple_buffer::Input<CommandFrame>,
    /// What the model manager and the diagnostics read.
    pub status: Arc<LoopStatus>,
    /// The inference worker's last sign of life (monotonic ns).
    pub worker_beat_ns: Arc<AtomicU64>,
    /// Set here when the worker went silent past `worker_deadline_ns`: the supervisor replaces
    /// it then. Not an E-stop: the queued actions age out and the loop decays to a protective
    /// stop on its own.
    pub worker_fault: Arc<AtomicBool>,
    /// The inference deadline (ns): `[runtime] inference_deadline_ms`.
    pub worker_deadline_ns: u64,
    /// E-stop presses as they arrive (edge counters, SAF-012); the gate is woken through it.
    pub ingress: Arc<EstopIngress>,
    pub stop: Arc<AtomicBool>,
    pub config: RtConfig,
    /// HIL fault injection; `None` in production.
    pub fault: Option<RtFault>,
}

/// What the RT thread hands back when it stops.
#[derive(Debug)]
pub struct RtOutcome {
    pub control: ControlLoop,
    pub ticker: Ticker,
    /// Wake-up lateness per tick.
    pub lateness: Histogram,
    pub grants: RtGrants,
    pub watchdog_trips: u64,
    /// `[runtime] require_rt` refused to drive: why (no tick ran).
    pub refused: Option<String>,
}

impl RtThread {
    /// Applies the RT grants (`[runtime]`), then ticks until `stop`.
    pub fn run(self) -> RtOutcome {
        let Self {
            mut control,
            mut sensors,
            mut commands,
            status,
            worker_beat_ns: beat,
            worker_fault: fault,
            worker_deadline_ns,
            ingress,
            stop,
            config,
            fault: mut injected,
        } = self;
        let mut presses_seen = ingress.presses();
        let mut gate_zeros_seen = status.gate_zero_events.load(Ordering::Acquire);
        let mut last_tick_ns = 0u64;
        let stall_ns = config.stall_estop_ns();
        let grants = ticker::apply(&config);
        let mut ticker = Ticker::new(config.period_ns(), config.overrun, ticker::now_ns());
        let mut lateness = Histogram::default();
        let mut watchdog_trips = 0u64;
        if let Err(why) = config.check_required(&grants) {
            return RtOutcome {
                control,
                ticker,
                lateness,
                grants,
                watchdog_trips,
                refused: Some(why),
            };
        }
        let clock = ticker::now_ns;
        while !stop.load(Ordering::Acquire) {
            let misses_before = ticker.misses;
            let tick = ticker.wait();
            lateness.record(tick.lateness_ns());
            if ticker.misses != misses_before
                && let Some(tap) = control.recorder.as_mut()
            {
                tap.flags |= crate::tap::FLAG_DEADLINE_MISS;
            }
            control.telemetry.tick_lateness.record(tick.lateness_ns());
            let now = tick.woke_ns;
            match injected {
                Some(RtFault::PanicAt(at)) if now >= at => panic!("injected RT-thread fault"),
                Some(RtFault::StallAt { at_ns, for_ns }) if now >= at_ns => {
                    injected = None;
                    std::thread::sleep(std::time::Duration::from_nanos(for_ns));
                }
                _ => {}
            }
            // The gate sent zero since the last tick: what the robot does now is standstill,
            // and every ramp continues from there (not from the last verdict's speed).
            let gate_zeros = status.gate_zero_events.load(Ordering::Acquire);
            if gate_zeros != gate_zeros_seen {
                gate_zeros_seen = gate_zeros;
                control.safety.assume_stopped();
                if let Some(tap) = control.recorder.as_mut() {
                    tap.flags |= crate::tap::FLAG_ACTUATOR_ZEROED;
                }
            }
            let sensors = sensors.read();
            // The robot's sources as it reported them; the loop's own ones are healthy unless
            // the watchdog says otherwise below.
            let mut estop = sensors.estop;
            estop[EstopSource::Watchdog.index()] = EstopReport::Clear(Monotonic::from_nanos(now));
            estop[EstopSource::Internal.index()] = EstopReport::Clear(Monotonic::from_nanos(now));
            // SAF-012: every press edge since the last tick latches, however short it was and
            // whatever the device reports now (the supervisor's stall presses come this way too).
            let presses = ingress.presses();
            let mut pressed_now = false;
            for source in EstopSource::ALL {
                if presses[source.index()] != presses_seen[source.index()] {
                    estop[source.index()] = EstopReport::Pressed(Monotonic::from_nanos(now));
                    pressed_now = true;
                }
            }
            presses_seen = presses;
            // The gate answers every press with zero (maybe not yet counted in
            // `gate_zero_events`): braking continues from standstill, never from the old speed.
            if pressed_now {
                control.safety.assume_stopped();
            }
            // SAF-011: this thread did not run for longer than `stall_estop_ms` (stopped,
            // starved, stalled; the gate sent zero after two periods) latches `watchdog`; N
            // missed deadlines in a row latch `internal`.
            let resumed_ns = ticker::now_ns();
            let stalled = last_tick_ns > 0 && resumed_ns.saturating_sub(last_tick_ns) > stall_ns;
            last_tick_ns = resumed_ns;
            let missed = ticker.consecutive_misses >= u64::from(config.max_consecutive_misses);
            for (tripped, source) in [
                (stalled, EstopSource::Watchdog),
                (missed, EstopSource::Internal),
            ] {
                if tripped {
                    estop[source.index()] = EstopReport::Pressed(Monotonic::from_nanos(now));
                    watchdog_trips += 1;
                    control
                        .telemetry
                        .watchdog_trips
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            // A silent inference worker is replaced by the supervisor; its actions age out.
            if now.saturating_sub(beat.load(Ordering::Acquire)) > worker_deadline_ns
                && !fault.swap(true, Ordering::AcqRel)
                && let Some(tap) = control.recorder.as_mut()
            {
                tap.flags |= crate::tap::FLAG_INFERENCE_FAULT;
            }
            let inputs = sensors.safety_inputs(estop);
            let verdict = control.tick_with_start(now, &inputs, sensors.start_seq, &clock);
            commands.write(CommandFrame::from_verdict(
                control.stats.ticks,
                now,
                presses_seen.iter().sum(),
                &verdict,
            ));
            // The actuator gate sends it now, not at its next check.
            ingress.wake_gate();
            // For the model manager: plain atomic stores, never a wait.
            let gen_now = control.stats.model_generation;
            if status.loop_generation.load(Ordering::Relaxed) != gen_now {
                status
                    .generation_since_ns
                    .store(control.stats.generation_changed_ns, Ordering::Release);
                status.loop_generation.store(gen_now, Ordering::Release);
            }
            status.ticks.fetch_add(1, Ordering::Relaxed);
            status
                .safety_state
                .store(control.safety_state(&verdict) as u8, Ordering::Relaxed);
            if verdict.action >= reflex_safety::Action::Slow {
                status.vetoed_ticks.fetch_add(1, Ordering::Relaxed);
            }
            status.reasons.count(verdict.reasons);
            status
                .deadline_misses
                .store(ticker.misses, Ordering::Relaxed);
            control
                .telemetry
                .deadline_misses
                .store(ticker.misses, Ordering::Relaxed);
            // Without odometry, the last command stands in for the motion.
            let v = sensors.odom.unwrap_or(verdict.command.base);
            status.stationary.store(is_stationary(v), Ordering::Relaxed);
        }
        RtOutcome {
            control,
            ticker,
            lateness,
            grants,
            watchdog_trips,
            refused: None,
        }
    }
}
