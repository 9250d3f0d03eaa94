//! Flight recorder: the RT loop copies every tick's safety inputs, proposal and verdict (and
//! each new scan) into preallocated buffers handed over through wait-free queues (full = drop
//! and count, never block); a recorder thread keeps the last `window_s` seconds in a ring and,
//! when an edge case fires (a configured safety reason, a deadline miss, an inference fault, an
//! operator mark), freezes `[t - window_s, t + post_s]` into an MCAP file (zstd, small chunks):
//!
//! - `/scan`: `sensor_msgs/msg/LaserScan`, ROS 2 CDR (`ros2msg` schema) — Foxglove shows it;
//! - `/reflex/ticks`: JSON (`jsonschema`) per tick — proposal, command, action, reasons;
//! - `/reflex/safety_io`: the exact inputs, proposal, safety state and verdict in a fixed binary
//!   form (`reflex_safety::wire`), so `reflex replay` re-runs the safety layer bit for bit;
//! - attachment `safety_config.json` (the config the layer ran with) and metadata `reflex`
//!   (robot id, model digest, config hash, reason, trigger time).
//!
//! A file is written to `tmp/`, fsynced, then renamed into `queue/` (the upload queue only ever
//! sees finished files); the queue is kept under `max_disk_mb` by dropping the oldest (counted).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result};
use crossbeam_queue::ArrayQueue;
use reflex_safety::wire::Writer;
use reflex_safety::{Odometry, Reason};
use serde::Deserialize;

use reflex_core::metrics::Telemetry;
use reflex_rt::tap::{
    FLAG_DEADLINE_MISS, FLAG_INFERENCE_FAULT, RecorderTap, ScanRecord, TapReceiver, TickRecord,
};

/// `[recorder]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderConfig {
    /// Where recordings go: `<dir>/queue/*.mcap` (finished) and `<dir>/tmp/` (being written).
    pub dir: PathBuf,
    /// Seconds kept before the trigger.
    #[serde(default = "default_window")]
    pub window_s: f64,
    /// Seconds recorded after the trigger.
    #[serde(default = "default_post")]
    pub post_s: f64,
    /// What freezes a window: safety reason names (`protective_zone`, `estop_hardware`, …),
    /// `deadline_miss`, `inference_fault`, `operator_mark`.
    #[serde(default = "default_triggers")]
    pub triggers: Vec<String>,
    /// Disk budget of the queue (MB); the oldest recordings are dropped first (counted).
    #[serde(default = "default_max_disk_mb")]
    pub max_disk_mb: f64,
    /// This robot's name in recordings and object keys.
    #[serde(default = "default_robot_id")]
    pub robot_id: String,
    /// `[recorder.upload]`: where finished recordings go (see `crate::upload`); unset = kept.
    #[serde(default)]
    pub upload: Option<crate::upload::UploadConfig>,
}

fn default_window() -> f64 {
    10.0
}
fn default_post() -> f64 {
    2.0
}
fn default_max_disk_mb() -> f64 {
    1024.0
}
fn default_robot_id() -> String {
    "robot".into()
}
fn default_triggers() -> Vec<String> {
    [
        "estop_hardware",
        "estop_ros_topic",
        "estop_cloud",
        "estop_watchdog",
        "estop_internal",
        "footprint_intrusion",
        "protective_zone",
        "deadline_miss",
        "inference_fault",
        "operator_mark",
    ]
    .map(String::from)
    .to_vec()
}

impl RecorderConfig {
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.window_s.is_finite() && (0.5..=120.0).contains(&self.window_s),
            "recorder.window_s = {}: must be in [0.5, 120] s",
            self.window_s
        );
        anyhow::ensure!(
            self.post_s.is_finite() && (0.0..=60.0).contains(&self.post_s),
            "recorder.post_s = {}: must be in [0, 60] s",
            self.post_s
        );
        anyhow::ensure!(
            self.max_disk_mb.is_finite() && self.max_disk_mb > 0.0,
            "recorder.max_disk_mb = {}: must be > 0",
            self.max_disk_mb
        );
        anyhow::ensure!(
            !self.robot_id.is_empty()
                && self
                    .robot_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "recorder.robot_id = {:?}: use letters, digits, '-', '_' or '.' (it names files and object keys)",
            self.robot_id
        );
        if let Some(u) = &self.upload {
            u.validate()?;
        }
        for t in &self.triggers {
            let known = Reason::ALL.iter().any(|r| r.name() == t)
                || ["deadline_miss", "inference_fault", "operator_mark"].contains(&t.as_str());
            anyhow::ensure!(
                known,
                "recorder.triggers: {t:?} is not a safety reason name, deadline_miss, \
                 inference_fault or operator_mark"
            );
        }
        Ok(())
    }
}

/// One inference, as the inference worker ran it (recorded off the RT thread): the observation
/// it saw and the chunk it produced, so `reflex replay --policy` can re-run the policy.
#[derive(Debug, Clone)]
pub struct InferenceRecord {
    pub t_obs_ns: u64,
    pub model_generation: u32,
    pub observation: reflex_policy::Observation,
    pub chunk: Vec<f32>,
}

/// The inference worker's end (non-RT: it may clone; a full queue drops the record).
#[derive(Debug, Clone)]
pub struct InferenceTap {
    queue: Arc<ArrayQueue<InferenceRecord>>,
    dropped: Arc<AtomicU64>,
}

impl InferenceTap {
    pub fn record(&self, generation: u32, obs: &reflex_policy::Observation, chunk: &[f32]) {
        let r = InferenceRecord {
            t_obs_ns: obs.t_obs_ns,
            model_generation: generation,
            observation: obs.clone(),
            chunk: chunk.to_vec(),
        };
        if self.queue.push(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What every recording says about where it came from.
#[derive(Debug, Clone, Default)]
pub struct RecordingMeta {
    pub robot_id: String,
    pub model_name: String,
    pub model_version: String,
    pub model_digest: String,
    /// Set from the loop's layer when the tap is taken.
    pub config_hash: String,
    /// The safety config as JSON (attached; `reflex replay` rebuilds the layer from it).
    pub safety_config_json: Vec<u8>,
    /// Wall clock (ns since the epoch) at monotonic time 0 of this run, for header stamps.
    pub wall_minus_mono_ns: i128,
    /// Generation of the model that `model_digest` names (hot swaps count up).
    pub model_generation: u32,
}

/// The recorder: the tap's queues plus the thread that keeps the ring and writes files.
#[derive(Debug)]
pub struct Recorder {
    config: RecorderConfig,
    /// The RT end of the tap until the loop takes it.
    tap: std::sync::Mutex<Option<RecorderTap>>,
    dropped: Arc<AtomicU64>,
    mark: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Inference records: several workers over a run (a restarted one takes over), none of them
    /// the RT thread, so a bounded MPMC queue.
    inferences: Arc<ArrayQueue<InferenceRecord>>,
    meta: Arc<std::sync::Mutex<RecordingMeta>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
}

impl Recorder {
    /// Prepares the directories and queues (sized for `period_ms` and `max_beams`) and starts
    /// the recorder thread.
    pub fn start(
        config: RecorderConfig,
        meta: RecordingMeta,
        period_ms: f64,
        max_beams: usize,
        telemetry: Arc<Telemetry>,
    ) -> Result<Arc<Self>> {
        config.validate()?;
        for sub in ["queue", "tmp"] {
            let d = config.dir.join(sub);
            std::fs::create_dir_all(&d).with_context(|| {
                format!(
                    "recorder.dir: cannot create {}; fix: a writable directory",
                    d.display()
                )
            })?;
        }
        // Half-written files from a crash are not recordings.
        for e in std::fs::read_dir(config.dir.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        // Two seconds of ticks and scans in flight before the recorder thread must have drained.
        let ticks_cap = ((2000.0 / period_ms) as usize).max(256) * 4;
        // The ring holds window + post (+1 s of older scans) at up to 50 Hz, plus 2 s in flight.
        let scans_cap = (((config.window_s + config.post_s + 3.0) * 50.0) as usize).max(64);
        let dropped = Arc::new(AtomicU64::new(0));
        let (tap, rings) = reflex_rt::tap::tap(ticks_cap, scans_cap, max_beams, dropped.clone());
        let rec = Arc::new(Self {
            config: config.clone(),
            tap: std::sync::Mutex::new(Some(tap)),
            dropped,
            mark: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            inferences: Arc::new(ArrayQueue::new(256)),
            meta: Arc::new(std::sync::Mutex::new(meta)),
            thread: std::sync::Mutex::new(None),
        });
        let worker = Worker {
            config,
            meta: rec.meta.clone(),
            rings,
            dropped: rec.dropped.clone(),
            mark: rec.mark.clone(),
            stop: rec.stop.clone(),
            inference_queue: rec.inferences.clone(),
            inference_ring: VecDeque::new(),
            telemetry,
            ring: VecDeque::new(),
            scans: VecDeque::new(),
            pending: None,
            active: BTreeMap::new(),
        };
        worker.update_queue_gauges()?;
        let handle = std::thread::Builder::new()
            .name("reflex-recorder".into())
            .spawn(move || worker.run())
            .context("cannot start the recorder thread")?;
        *rec.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(rec)
    }

    /// The RT loop's end (one per recorder), for the loop whose layer is `safety` (its exact
    /// config is attached to every recording).
    pub fn tap(&self, safety: &reflex_safety::Safety) -> Result<RecorderTap> {
        let tap = self
            .tap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .context("the recorder has one RT tap; it is taken")?;
        {
            let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
            meta.config_hash = safety.config_hash_hex();
            meta.safety_config_json = serde_json::to_vec(safety.config())?;
        }
        Ok(tap)
    }

    /// The inference worker's end.
    pub fn inference_tap(&self) -> InferenceTap {
        InferenceTap {
            queue: self.inferences.clone(),
            dropped: self.dropped.clone(),
        }
    }

    /// An operator's mark: freezes the current window (trigger `operator_mark`).
    pub fn mark(&self) {
        self.mark.store(true, Ordering::Release);
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.config.dir.join("queue")
    }

    /// Drains what the loop recorded, writes a pending recording with what it has, stops.
    pub fn finish(&self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match handle {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the recorder thread panicked"))?,
            None => Ok(()),
        }
    }
}

struct Pending {
    reason: String,
    trigger_ns: u64,
    until_ns: u64,
    also: Vec<String>,
}

struct Worker {
    config: RecorderConfig,
    meta: Arc<std::sync::Mutex<RecordingMeta>>,
    rings: TapReceiver,
    dropped: Arc<AtomicU64>,
    mark: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    inference_queue: Arc<ArrayQueue<InferenceRecord>>,
    inference_ring: VecDeque<InferenceRecord>,
    telemetry: Arc<Telemetry>,
    ring: VecDeque<TickRecord>,
    scans: VecDeque<ScanRecord>,
    pending: Option<Pending>,
    /// Triggers active on the previous tick (a trigger fires on its rising edge).
    active: BTreeMap<String, bool>,
}

impl Worker {
    fn run(mut self) -> Result<()> {
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            let mut progressed = false;
            while let Ok(s) = self.rings.scans_ready.pop() {
                self.scans.push_back(s);
                progressed = true;
            }
            while let Some(i) = self.inference_queue.pop() {
                self.inference_ring.push_back(i);
                progressed = true;
            }
            while let Ok(t) = self.rings.ticks.pop() {
                self.on_tick(t)?;
                progressed = true;
            }
            if let Some(newest) = self.ring.back().map(|t| t.now_ns) {
                self.prune(newest);
                if self.pending.as_ref().is_some_and(|p| newest >= p.until_ns) {
                    self.write_pending()?;
                }
            }
            if stopping && !progressed {
                if self.pending.is_some() {
                    self.write_pending()?;
                }
                return Ok(());
            }
            if !progressed {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }

    fn fired(&mut self, name: &str, now: bool) -> bool {
        let was = self.active.insert(name.to_string(), now).unwrap_or(false);
        now && !was
    }

    fn on_tick(&mut self, t: TickRecord) -> Result<()> {
        let mut fired: Vec<String> = Vec::new();
        let triggers = self.config.triggers.clone();
        for name in &triggers {
            let now = match name.as_str() {
                "deadline_miss" => t.flags & FLAG_DEADLINE_MISS != 0,
                "inference_fault" => t.flags & FLAG_INFERENCE_FAULT != 0,
                "operator_mark" => self.mark.swap(false, Ordering::AcqRel),
                reason => t.verdict.reasons.iter().any(|r| r.name() == reason),
            };
            if self.fired(name, now) {
                fired.push(name.clone());
            }
        }
        self.ring.push_back(t);
        if let Some(first) = fired.first() {
            match &mut self.pending {
                Some(p) => {
                    for f in &fired {
                        if *f != p.reason && !p.also.contains(f) {
                            p.also.push(f.clone());
                        }
                    }
                }
                None => {
                    self.pending = Some(Pending {
                        reason: first.clone(),
                        trigger_ns: t.now_ns,
                        until_ns: t.now_ns + (self.config.post_s * 1e9) as u64,
                        also: fired[1..].iter().filter(|f| *f != first).cloned().collect(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Keeps `window_s` (+ the post window of a pending recording) of ticks; scans a second
    /// longer (the first tick of a window may use an older scan).
    fn prune(&mut self, newest: u64) {
        let keep_ns = ((self.config.window_s + self.config.post_s) * 1e9) as u64;
        let from = match &self.pending {
            Some(p) => p
                .trigger_ns
                .saturating_sub((self.config.window_s * 1e9) as u64),
            None => newest.saturating_sub(keep_ns),
        };
        while self.ring.front().is_some_and(|t| t.now_ns < from) {
            self.ring.pop_front();
        }
        while self
            .inference_ring
            .front()
            .is_some_and(|i| i.t_obs_ns < from.saturating_sub(1_000_000_000))
        {
            self.inference_ring.pop_front();
        }
        let scan_from = from.saturating_sub(1_000_000_000);
        while self.scans.front().is_some_and(|s| s.stamp_ns < scan_from) {
            let s = self.scans.pop_front().expect("checked");
            let _ = self.rings.scans_free.push(s);
        }
    }

    fn write_pending(&mut self) -> Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let from = p
            .trigger_ns
            .saturating_sub((self.config.window_s * 1e9) as u64);
        let ticks: Vec<&TickRecord> = self
            .ring
            .iter()
            .filter(|t| t.now_ns >= from && t.now_ns <= p.until_ns)
            .collect();
        if ticks.is_empty() {
            return Ok(());
        }
        let first_scan = ticks[0].scan_stamp_ns;
        let scans: Vec<&ScanRecord> = self
            .scans
            .iter()
            .filter(|s| s.stamp_ns >= first_scan.min(from) && s.stamp_ns <= p.until_ns)
            .collect();
        let inferences: Vec<&InferenceRecord> = self
            .inference_ring
            .iter()
            .filter(|i| {
                i.t_obs_ns >= from.saturating_sub(1_000_000_000) && i.t_obs_ns <= p.until_ns
            })
            .collect();
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner()).clone();
        {
            // The model running now (a hot swap may have changed it since the start).
            let m = self
                .telemetry
                .model
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !m.digest.is_empty() {
                meta.model_digest = m.digest.clone();
                meta.model_name = m.name.clone();
                meta.model_version = m.version.clone();
                meta.model_generation = m.generation;
            }
        }
        let wall_ms = reflex_ros::port::wall_clock_ns() / 1_000_000;
        let name = format!("{}-{}-{}.mcap", meta.robot_id, wall_ms, p.reason);
        let tmp = self.config.dir.join("tmp").join(format!("{name}.partial"));
        let bytes = write_mcap(
            &meta,
            &p,
            &ticks,
            &scans,
            &inferences,
            self.dropped.load(Ordering::Relaxed),
        )?;
        self.make_room(bytes.len() as u64)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        let dest = self.config.dir.join("queue").join(&name);
        std::fs::rename(&tmp, &dest)?;
        std::fs::File::open(self.config.dir.join("queue"))?.sync_all()?;
        self.telemetry
            .recordings_written
            .fetch_add(1, Ordering::Relaxed);
        self.update_queue_gauges()?;
        eprintln!(
            "reflex: flight recording {} ({} ticks, {} scans, {} bytes, trigger {})",
            dest.display(),
            ticks.len(),
            scans.len(),
            bytes.len(),
            p.reason
        );
        Ok(())
    }

    /// Drops the oldest queued recordings until `incoming` more bytes fit the budget.
    fn make_room(&self, incoming: u64) -> Result<()> {
        let budget = (self.config.max_disk_mb * 1e6) as u64;
        let mut files = crate::upload::queued(&self.config.dir.join("queue"))?;
        let mut total: u64 = files.iter().map(|(_, n)| n).sum();
        files.sort();
        for (path, size) in files {
            if total + incoming <= budget {
                break;
            }
            std::fs::remove_file(&path)?;
            total -= size;
            self.telemetry
                .recordings_dropped
                .fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "reflex: recorder disk budget ({} MB): dropped the oldest recording {}",
                self.config.max_disk_mb,
                path.display()
            );
        }
        Ok(())
    }

    fn update_queue_gauges(&self) -> Result<()> {
        let files = crate::upload::queued(&self.config.dir.join("queue"))?;
        self.telemetry
            .recorder_queue_files
            .store(files.len() as u64, Ordering::Relaxed);
        self.telemetry
            .recorder_queue_bytes
            .store(files.iter().map(|(_, n)| n).sum(), Ordering::Relaxed);
        Ok(())
    }
}

/// `sensor_msgs/msg/LaserScan` in the `ros2msg` concatenated form (MCAP ROS 2 profile).
const LASER_SCAN_MSG: &str = "std_msgs/Header header\nfloat32 angle_min\nfloat32 angle_max\nfloat32 angle_increment\nfloat32 time_increment\nfloat32 scan_time\nfloat32 range_min\nfloat32 range_max\nfloat32[] ranges\nfloat32[] intensities\n================================================================================\nMSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n================================================================================\nMSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n";

const TICK_SCHEMA: &str = r#"{"type":"object","title":"reflex tick","properties":{"t_ns":{"type":"integer"},"proposed":{"type":"object","properties":{"source":{"type":"string"},"vx":{"type":"number"},"vy":{"type":"number"},"wz":{"type":"number"},"age_ms":{"type":"number"}}},"command":{"type":"object","properties":{"vx":{"type":"number"},"vy":{"type":"number"},"wz":{"type":"number"}}},"power_enabled":{"type":"boolean"},"action":{"type":"string"},"reasons":{"type":"array","items":{"type":"string"}},"clearance_m":{"type":"number"},"flags":{"type":"array","items":{"type":"string"}}}}"#;

/// Encoding of `/reflex/safety_io` messages.
pub const SAFETY_IO_ENCODING: &str = "reflex-safety-io/1";

/// One `/reflex/safety_io` message: everything `Safety::evaluate` read and returned.
pub fn encode_safety_io(t: &TickRecord) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(t.now_ns);
    reflex_safety::wire::put_estops(&mut w, &t.estop);
    w.u64(t.reset_seq);
    w.u64(t.scan_stamp_ns);
    w.u8(u8::from(t.odometry.is_some()));
    let odom = t.odometry.unwrap_or(Odometry {
        stamp: reflex_safety::Monotonic::default(),
        twist: reflex_safety::Twist::default(),
    });
    w.u64(odom.stamp.as_nanos());
    w.twist(&odom.twist);
    w.u64(t.joint_stamp_ns);
    w.u8(t.joint_count);
    for i in 0..usize::from(t.joint_count) {
        w.f64(t.joint_positions[i]);
        w.f64(t.joint_velocities[i]);
    }
    w.command(&t.proposed);
    t.state_before.encode(&mut w);
    // The verdict to reproduce.
    w.command(&t.verdict.command);
    w.u8(t.verdict.action as u8);
    w.u64(t.verdict.reasons.bits());
    w.u8(u8::from(t.verdict.power_enabled));
    w.u8(t.flags);
    // After the flags (older readers stop before): the arm's per-joint state.
    t.state_before.encode_arm(&mut w);
    w.0
}

fn finite(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Encoding of `/reflex/inference` messages.
pub const INFERENCE_ENCODING: &str = "reflex-inference/1";

/// One `/reflex/inference` message: generation, observation (state, tokens, image) and chunk.
pub fn encode_inference(i: &InferenceRecord) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(i.t_obs_ns);
    w.u32(i.model_generation);
    let o = &i.observation;
    w.u32(o.state.len() as u32);
    for v in &o.state {
        w.f32(*v);
    }
    w.u32(o.instruction.len() as u32);
    for v in &o.instruction {
        w.u64(*v as u64);
    }
    // Tag 0: no image, 1/2: one u8/f32 image (the format before several cameras), 3: a count,
    // then each image as tag 1/2 and its values.
    let image = |w: &mut Writer, image: &reflex_policy::ImageData| match image {
        reflex_policy::ImageData::U8(d) => {
            w.u8(1);
            w.u32(d.len() as u32);
            w.0.extend_from_slice(d);
        }
        reflex_policy::ImageData::F32(d) => {
            w.u8(2);
            w.u32(d.len() as u32);
            for v in d {
                w.f32(*v);
            }
        }
    };
    match o.images.as_slice() {
        [] => w.u8(0),
        [one] => image(&mut w, one),
        several => {
            w.u8(3);
            w.u32(several.len() as u32);
            for one in several {
                image(&mut w, one);
            }
        }
    }
    w.u32(i.chunk.len() as u32);
    for v in &i.chunk {
        w.f32(*v);
    }
    w.0
}

/// Reads what [`encode_inference`] wrote.
pub fn decode_inference(data: &[u8]) -> Option<InferenceRecord> {
    let mut r = reflex_safety::wire::Reader(data);
    let t_obs_ns = r.u64()?;
    let model_generation = r.u32()?;
    let n = r.u32()? as usize;
    let state = (0..n).map(|_| r.f32()).collect::<Option<Vec<_>>>()?;
    let n = r.u32()? as usize;
    let instruction = (0..n)
        .map(|_| r.u64().map(|v| v as i64))
        .collect::<Option<Vec<_>>>()?;
    fn image(r: &mut reflex_safety::wire::Reader<'_>, tag: u8) -> Option<reflex_policy::ImageData> {
        let n = r.u32()? as usize;
        match tag {
            1 => {
                let (head, rest) = r.0.split_at_checked(n)?;
                r.0 = rest;
                Some(reflex_policy::ImageData::U8(head.to_vec()))
            }
            2 => Some(reflex_policy::ImageData::F32(
                (0..n).map(|_| r.f32()).collect::<Option<Vec<_>>>()?,
            )),
            _ => None,
        }
    }
    let images = match r.u8()? {
        0 => Vec::new(),
        3 => {
            let n = r.u32()? as usize;
            (0..n)
                .map(|_| {
                    let tag = r.u8()?;
                    image(&mut r, tag)
                })
                .collect::<Option<Vec<_>>>()?
        }
        tag => vec![image(&mut r, tag)?],
    };
    let n = r.u32()? as usize;
    let chunk = (0..n).map(|_| r.f32()).collect::<Option<Vec<_>>>()?;
    Some(InferenceRecord {
        t_obs_ns,
        model_generation,
        observation: reflex_policy::Observation {
            t_obs_ns,
            images,
            state,
            instruction,
        },
        chunk,
    })
}

/// `sensor_msgs/msg/Image` (`ros2msg`).
const IMAGE_MSG: &str = "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\nuint8[] data\n================================================================================\nMSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n================================================================================\nMSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n";

/// The policy's u8 NCHW (1×3×H×W) image as an rgb8 `sensor_msgs/Image`, for Foxglove.
fn camera_image(i: &InferenceRecord, wall_ns: u64) -> Option<reflex_ros::port::Image> {
    let Some(reflex_policy::ImageData::U8(d)) = i.observation.images.first() else {
        return None;
    };
    let plane = d.len() / 3;
    let side = (plane as f64).sqrt() as usize;
    if side * side != plane || plane == 0 {
        return None;
    }
    let mut data = vec![0u8; d.len()];
    for p in 0..plane {
        for c in 0..3 {
            data[p * 3 + c] = d[c * plane + p];
        }
    }
    Some(reflex_ros::port::Image {
        header: reflex_ros::port::Header {
            stamp: reflex_ros::port::Time::from_nanos(wall_ns),
            frame_id: "camera".into(),
        },
        height: side as u32,
        width: side as u32,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: (side * 3) as u32,
        data,
    })
}

fn write_mcap(
    meta: &RecordingMeta,
    p: &Pending,
    ticks: &[&TickRecord],
    scans: &[&ScanRecord],
    inferences: &[&InferenceRecord],
    dropped: u64,
) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = mcap::WriteOptions::new()
            .compression(Some(mcap::Compression::Zstd))
            .chunk_size(Some(256 * 1024))
            .profile("ros2")
            .library(concat!("reflex ", env!("CARGO_PKG_VERSION")))
            .create(&mut buf)?;
        let no_meta = BTreeMap::new();
        let scan_schema = w.add_schema(
            "sensor_msgs/msg/LaserScan",
            "ros2msg",
            LASER_SCAN_MSG.as_bytes(),
        )?;
        let scan_ch = w.add_channel(scan_schema, "/scan", "cdr", &no_meta)?;
        let tick_schema = w.add_schema("reflex.Tick", "jsonschema", TICK_SCHEMA.as_bytes())?;
        let tick_ch = w.add_channel(tick_schema, "/reflex/ticks", "json", &no_meta)?;
        let io_ch = w.add_channel(0, "/reflex/safety_io", SAFETY_IO_ENCODING, &no_meta)?;
        let inf_ch = w.add_channel(0, "/reflex/inference", INFERENCE_ENCODING, &no_meta)?;
        let image_schema =
            w.add_schema("sensor_msgs/msg/Image", "ros2msg", IMAGE_MSG.as_bytes())?;
        let image_ch = w.add_channel(image_schema, "/camera/image", "cdr", &no_meta)?;
        let wall = |mono: u64| (i128::from(mono) + meta.wall_minus_mono_ns).max(0) as u64;
        for (seq, s) in scans.iter().enumerate() {
            let msg = reflex_ros::port::LaserScan {
                header: reflex_ros::port::Header {
                    stamp: reflex_ros::port::Time::from_nanos(wall(s.stamp_ns)),
                    frame_id: "laser".into(),
                },
                angle_min: s.angle_min_rad,
                angle_max: s.angle_min_rad
                    + s.angle_increment_rad * (s.ranges.len().max(1) as f32 - 1.0),
                angle_increment: s.angle_increment_rad,
                time_increment: 0.0,
                scan_time: 0.0,
                range_min: s.range_min_m,
                range_max: s.range_max_m,
                ranges: s.ranges.clone(),
                intensities: Vec::new(),
            };
            let data = reflex_ros::port::cdr::encode(&msg).map_err(anyhow::Error::msg)?;
            w.write_to_known_channel(
                &mcap::records::MessageHeader {
                    channel_id: scan_ch,
                    sequence: seq as u32,
                    log_time: s.stamp_ns,
                    publish_time: s.stamp_ns,
                },
                &data,
            )?;
        }
        for (seq, t) in ticks.iter().enumerate() {
            let v = &t.verdict;
            let flags: Vec<&str> = [
                (t.flags & FLAG_DEADLINE_MISS != 0).then_some("deadline_miss"),
                (t.flags & FLAG_INFERENCE_FAULT != 0).then_some("inference_fault"),
                (t.flags & reflex_rt::tap::FLAG_ACTUATOR_ZEROED != 0).then_some("actuator_zeroed"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let reasons: Vec<&str> = v.reasons.iter().map(|r| r.name()).collect();
            let json = serde_json::json!({
                "t_ns": t.now_ns,
                "proposed": {
                    "source": format!("{:?}", t.proposed.source),
                    "vx": finite(t.proposed.base.vx_mps),
                    "vy": finite(t.proposed.base.vy_mps),
                    "wz": finite(t.proposed.base.wz_radps),
                    "age_ms": t.now_ns.saturating_sub(t.proposed.stamp.as_nanos()) as f64 / 1e6,
                },
                "command": {
                    "vx": finite(v.command.base.vx_mps),
                    "vy": finite(v.command.base.vy_mps),
                    "wz": finite(v.command.base.wz_radps),
                },
                "power_enabled": v.power_enabled,
                "action": v.action.name(),
                "reasons": reasons,
                "clearance_m": finite(f64::from(v.clearance_m)),
                "flags": flags,
            });
            let header = |channel_id| mcap::records::MessageHeader {
                channel_id,
                sequence: seq as u32,
                log_time: t.now_ns,
                publish_time: t.now_ns,
            };
            w.write_to_known_channel(&header(tick_ch), &serde_json::to_vec(&json)?)?;
            w.write_to_known_channel(&header(io_ch), &encode_safety_io(t))?;
        }
        for (seq, i) in inferences.iter().enumerate() {
            let header = |channel_id| mcap::records::MessageHeader {
                channel_id,
                sequence: seq as u32,
                log_time: i.t_obs_ns,
                publish_time: i.t_obs_ns,
            };
            w.write_to_known_channel(&header(inf_ch), &encode_inference(i))?;
            if let Some(img) = camera_image(i, wall(i.t_obs_ns)) {
                let data = reflex_ros::port::cdr::encode(&img).map_err(anyhow::Error::msg)?;
                w.write_to_known_channel(&header(image_ch), &data)?;
            }
        }
        w.attach(&mcap::Attachment {
            log_time: ticks[0].now_ns,
            create_time: ticks[0].now_ns,
            name: "safety_config.json".into(),
            media_type: "application/json".into(),
            data: std::borrow::Cow::Borrowed(&meta.safety_config_json),
        })?;
        let mut m = BTreeMap::new();
        m.insert("robot_id".into(), meta.robot_id.clone());
        m.insert("model_name".into(), meta.model_name.clone());
        m.insert("model_version".into(), meta.model_version.clone());
        m.insert("model_digest".into(), meta.model_digest.clone());
        m.insert("model_generation".into(), meta.model_generation.to_string());
        m.insert("config_hash".into(), meta.config_hash.clone());
        m.insert("reason".into(), p.reason.clone());
        m.insert("also".into(), p.also.join(","));
        m.insert("trigger_ns".into(), p.trigger_ns.to_string());
        m.insert("window_start_ns".into(), ticks[0].now_ns.to_string());
        m.insert(
            "window_end_ns".into(),
            ticks[ticks.len() - 1].now_ns.to_string(),
        );
        m.insert("records_dropped".into(), dropped.to_string());
        m.insert("reflex_version".into(), env!("CARGO_PKG_VERSION").into());
        w.write_metadata(&mcap::records::Metadata {
            name: "reflex".into(),
            metadata: m,
        })?;
        w.finish()?;
    }
    Ok(buf.into_inner())
}
