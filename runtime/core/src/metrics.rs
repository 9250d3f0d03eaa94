//! Metrics: what the loop, the inference worker, the model manager and the recorder publish as
//! plain atomics (never a lock or an allocation on the RT thread), rendered in the Prometheus
//! text exposition format (0.0.4) by [`Telemetry::render`]. The HTTP endpoint that serves it is
//! `reflex_telemetry::metrics::MetricsServer`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use reflex_safety::Reason;

/// A fixed-bucket histogram of atomics (Prometheus cumulative buckets are computed on render).
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds (ns), ascending; the last bucket is +Inf.
    bounds_ns: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds_ns: &'static [u64]) -> Self {
        Self {
            bounds_ns,
            buckets: (0..=bounds_ns.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Wait-free: a bounded scan and three relaxed adds.
    pub fn record(&self, ns: u64) {
        let i = self
            .bounds_ns
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(self.bounds_ns.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = match self.bounds_ns.get(i) {
                Some(ns) => format!("{}", *ns as f64 * 1e-9),
                None => "+Inf".into(),
            };
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {cumulative}\n",
            self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9
        ));
    }
}

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
/// Tick compute time and wake-up lateness: 5 µs … 10 ms.
static TICK_BOUNDS: [u64; 12] = [
    5 * US,
    10 * US,
    20 * US,
    50 * US,
    100 * US,
    200 * US,
    500 * US,
    MS,
    2 * MS,
    5 * MS,
    10 * MS,
    20 * MS,
];
/// Inference: 1 ms … 1 s.
static INFERENCE_BOUNDS: [u64; 11] = [
    MS,
    2 * MS,
    5 * MS,
    10 * MS,
    20 * MS,
    50 * MS,
    100 * MS,
    200 * MS,
    300 * MS,
    500 * MS,
    1_000 * MS,
];

/// The running model, for `reflex_model_info`.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub generation: u32,
}

/// Link state gauges: -1 not configured, 0 down/unreachable, 1 up.
pub const LINK_NOT_CONFIGURED: i64 = -1;

/// Everything the metrics endpoint shows. Shared as `Arc<Telemetry>`; the RT thread only does
/// relaxed atomic stores and adds.
#[derive(Debug)]
pub struct Telemetry {
    pub ticks: AtomicU64,
    pub tick_duration: AtomicHistogram,
    pub tick_lateness: AtomicHistogram,
    pub deadline_misses: AtomicU64,
    /// Ticks on which the safety layer gave each reason (clamps included), by `Reason as usize`.
    pub reasons: Box<[AtomicU64]>,
    pub estop_latched: AtomicBool,
    pub inference: AtomicHistogram,
    /// Age of the action executed on the last tick (ns); 0 when there was none.
    pub action_age_ns: AtomicU64,
    pub chunks_merged: AtomicU64,
    pub ticks_without_action: AtomicU64,
    pub watchdog_trips: AtomicU64,
    pub worker_restarts: AtomicU64,
    pub model: Mutex<ModelInfo>,
    pub registry_link: AtomicI64,
    pub cloud_link: AtomicI64,
    /// Cloud commands dropped (late, out of order, inbox full).
    pub cloud_dropped: AtomicU64,
    /// Ticks on which the arbiter executed a cloud command or a step of a cloud chunk.
    pub cloud_ticks: AtomicU64,
    /// Flight recorder: frozen recordings waiting for upload (files, bytes), dropped for space.
    pub recorder_queue_files: AtomicU64,
    pub recorder_queue_bytes: AtomicU64,
    pub recordings_written: AtomicU64,
    pub recordings_dropped: AtomicU64,
    pub uploads: AtomicU64,
    pub upload_failures: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            ticks: AtomicU64::new(0),
            tick_duration: AtomicHistogram::new(&TICK_BOUNDS),
            tick_lateness: AtomicHistogram::new(&TICK_BOUNDS),
            deadline_misses: AtomicU64::new(0),
            reasons: (0..Reason::COUNT).map(|_| AtomicU64::new(0)).collect(),
            estop_latched: AtomicBool::new(true),
            inference: AtomicHistogram::new(&INFERENCE_BOUNDS),
            action_age_ns: AtomicU64::new(0),
            chunks_merged: AtomicU64::new(0),
            ticks_without_action: AtomicU64::new(0),
            watchdog_trips: AtomicU64::new(0),
            worker_restarts: AtomicU64::new(0),
            model: Mutex::new(ModelInfo::default()),
            registry_link: AtomicI64::new(LINK_NOT_CONFIGURED),
            cloud_link: AtomicI64::new(LINK_NOT_CONFIGURED),
            cloud_dropped: AtomicU64::new(0),
            cloud_ticks: AtomicU64::new(0),
            recorder_queue_files: AtomicU64::new(0),
            recorder_queue_bytes: AtomicU64::new(0),
            recordings_written: AtomicU64::new(0),
            recordings_dropped: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            upload_failures: AtomicU64::new(0),
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Telemetry {
    /// The model now running (off the RT thread: it takes a lock).
    pub fn set_model(&self, model: ModelInfo) {
        *self.model.lock().unwrap_or_else(|e| e.into_inner()) = model;
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "reflex_ticks_total",
            "Control loop ticks.",
            load(&self.ticks),
        );
        self.tick_duration.render(
            &mut out,
            "reflex_tick_duration_seconds",
            "Compute time of one control tick (merge, arbitration, safety).",
        );
        self.tick_lateness.render(
            &mut out,
            "reflex_tick_lateness_seconds",
            "How late the RT thread woke after its absolute deadline (real-time runs).",
        );
        counter(
            &mut out,
            "reflex_deadline_misses_total",
            "Control periods the RT thread missed.",
            load(&self.deadline_misses),
        );
        out.push_str(
            "# HELP reflex_safety_reasons_total Ticks on which the safety layer gave this reason; action = the least severe action it carries (clamp, slow, stop, estop).\n# TYPE reflex_safety_reasons_total counter\n",
        );
        for r in Reason::ALL {
            out.push_str(&format!(
                "reflex_safety_reasons_total{{reason=\"{}\",action=\"{}\"}} {}\n",
                r.name(),
                r.action().name(),
                load(&self.reasons[*r as usize])
            ));
        }
        gauge(
            &mut out,
            "reflex_estop_latched",
            "1 while the E-stop is latched (the robot cannot move until reset).",
            f64::from(u8::from(self.estop_latched.load(Ordering::Relaxed))),
        );
        self.inference.render(
            &mut out,
            "reflex_inference_duration_seconds",
            "Policy inference time per observation.",
        );
        gauge(
            &mut out,
            "reflex_action_age_seconds",
            "Age of the policy action executed on the last tick (0: none).",
            load(&self.action_age_ns) as f64 * 1e-9,
        );
        counter(
            &mut out,
            "reflex_chunks_merged_total",
            "Action chunks merged into the loop's queue.",
            load(&self.chunks_merged),
        );
        counter(
            &mut out,
            "reflex_ticks_without_action_total",
            "Ticks with no usable policy action (the robot was told to stop).",
            load(&self.ticks_without_action),
        );
        counter(
            &mut out,
            "reflex_watchdog_trips_total",
            "Ticks on which the watchdog latched an internal E-stop.",
            load(&self.watchdog_trips),
        );
        counter(
            &mut out,
            "reflex_worker_restarts_total",
            "Inference workers the supervisor replaced.",
            load(&self.worker_restarts),
        );
        {
            let m = self.model.lock().unwrap_or_else(|e| e.into_inner()).clone();
            out.push_str(&format!(
                "# HELP reflex_model_info The running policy.\n# TYPE reflex_model_info gauge\nreflex_model_info{{name=\"{}\",version=\"{}\",digest=\"{}\",generation=\"{}\"}} 1\n",
                escape(&m.name),
                escape(&m.version),
                escape(&m.digest),
                m.generation
            ));
        }
        gauge(
            &mut out,
            "reflex_registry_link_up",
            "Registry channel: 1 reachable, 0 unreachable, -1 no channel configured.",
            self.registry_link.load(Ordering::Relaxed) as f64,
        );
        gauge(
            &mut out,
            "reflex_cloud_link_up",
            "Cloud policy link: 1 connected, 0 down, -1 not configured.",
            self.cloud_link.load(Ordering::Relaxed) as f64,
        );
        counter(
            &mut out,
            "reflex_cloud_commands_dropped_total",
            "Cloud commands dropped (late, out of order, malformed, inbox full).",
            load(&self.cloud_dropped),
        );
        counter(
            &mut out,
            "reflex_cloud_ticks_total",
            "Ticks that executed a cloud command or a step of a cloud chunk (after arbitration, before safety).",
            load(&self.cloud_ticks),
        );
        gauge(
            &mut out,
            "reflex_recorder_queue_files",
            "Flight recordings on disk waiting for upload.",
            load(&self.recorder_queue_files) as f64,
        );
        gauge(
            &mut out,
            "reflex_recorder_queue_bytes",
            "Bytes of flight recordings waiting for upload.",
            load(&self.recorder_queue_bytes) as f64,
        );
        counter(
            &mut out,
            "reflex_recordings_written_total",
            "Flight recordings (MCAP) written.",
            load(&self.recordings_written),
        );
        counter(
            &mut out,
            "reflex_recordings_dropped_total",
            "Flight recordings dropped (oldest first) to stay within the disk budget.",
            load(&self.recordings_dropped),
        );
        counter(
            &mut out,
            "reflex_uploads_total",
            "Flight recordings uploaded.",
            load(&self.uploads),
        );
        counter(
            &mut out,
            "reflex_upload_failures_total",
            "Upload attempts that failed (retried with backoff).",
            load(&self.upload_failures),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = AtomicHistogram::new(&TICK_BOUNDS);
        h.record(3 * US);
        h.record(7 * US);
        h.record(50 * MS);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.000005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.00001\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
