//! The RT thread's body: every period, on absolute deadlines, read the newest sensors, run the
//! watchdog, tick the control loop (safety last), publish the verdict, record timing and the
//! loop's status. No allocation, lock or blocking call after [`RtThread::run`] starts ticking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use reflex_core::{CommandFrame, LoopStatus, SensorFrame, is_stationary};
use reflex_safety::{EstopReport, EstopSource, Monotonic, Odometry, SafetyInputs};

use crate::control::{ControlLoop, Histogram};
use crate::ticker::{self, RtConfig, RtGrants, Ticker};

/// An inference worker silent for longer than this (ns, 500 ms) trips the watchdog: an internal
/// E-stop latches and the supervisor replaces the worker.
pub const WORKER_DEADLINE_NS: u64 = 500_000_000;

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
    /// Set here when the worker went silent: the supervisor replaces it only then, so the
    /// watchdog is the single judge of silence.
    pub worker_fault: Arc<AtomicBool>,
    pub stop: Arc<AtomicBool>,
    pub config: RtConfig,
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
            stop,
            config,
        } = self;
        let grants = ticker::apply(&config);
        let mut ticker = Ticker::new(config.period_ns(), config.overrun, ticker::now_ns());
        let mut lateness = Histogram::default();
        let mut watchdog_trips = 0u64;
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
            let sensors = sensors.read();
            // The robot's sources as it reported them; the loop's own ones are healthy unless
            // the watchdog says otherwise below.
            let mut estop = sensors.estop;
            estop[EstopSource::Watchdog.index()] = EstopReport::Clear(Monotonic::from_nanos(now));
            estop[EstopSource::Internal.index()] = EstopReport::Clear(Monotonic::from_nanos(now));
            // Watchdog: N missed deadlines in a row, or a silent inference worker.
            let worker_silent =
                now.saturating_sub(beat.load(Ordering::Acquire)) > WORKER_DEADLINE_NS;
            if ticker.consecutive_misses >= u64::from(config.max_consecutive_misses)
                || worker_silent
            {
                estop[EstopSource::Internal.index()] =
                    EstopReport::Pressed(Monotonic::from_nanos(now));
                watchdog_trips += 1;
                control
                    .telemetry
                    .watchdog_trips
                    .fetch_add(1, Ordering::Relaxed);
                if worker_silent {
                    fault.store(true, Ordering::Release);
                    if let Some(tap) = control.recorder.as_mut() {
                        tap.flags |= crate::tap::FLAG_INFERENCE_FAULT;
                    }
                }
            }
            let inputs = SafetyInputs {
                estop,
                reset_request_seq: sensors.reset_seq,
                scan: (sensors.scan_stamp_ns > 0).then_some(reflex_safety::Scan {
                    stamp: Monotonic::from_nanos(sensors.scan_stamp_ns),
                    angle_min_rad: sensors.angle_min_rad,
                    angle_increment_rad: sensors.angle_increment_rad,
                    range_min_m: sensors.range_min_m,
                    range_max_m: sensors.range_max_m,
                    ranges_m: &sensors.ranges,
                }),
                odometry: sensors.odom.map(|twist| Odometry {
                    stamp: Monotonic::from_nanos(sensors.odom_stamp_ns),
                    twist,
                }),
                joint_state: (sensors.joint_stamp_ns > 0 && !sensors.joint_positions.is_empty())
                    .then_some(reflex_safety::JointState {
                        stamp: Monotonic::from_nanos(sensors.joint_stamp_ns),
                        positions: &sensors.joint_positions,
                        velocities: &sensors.joint_velocities,
                    }),
            };
            let verdict = control.tick(now, &inputs, &clock);
            commands.write(CommandFrame::from_verdict(
                control.stats.ticks,
                now,
                &verdict,
            ));
            // For the model manager: plain atomic stores, never a wait.
            let gen_now = control.stats.model_generation;
            if status.loop_generation.load(Ordering::Relaxed) != gen_now {
                status
                    .generation_since_ns
                    .store(control.stats.generation_changed_ns, Ordering::Release);
                status.loop_generation.store(gen_now, Ordering::Release);
            }
            status.ticks.fetch_add(1, Ordering::Relaxed);
            if verdict.action >= reflex_safety::Action::Slow {
                status.vetoed_ticks.fetch_add(1, Ordering::Relaxed);
            }
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
        }
    }
}
