//! The flight recorder's RT end: the loop copies every tick's safety inputs, proposal, state and
//! verdict (and each new scan) into preallocated records, handed to the recorder thread
//! (`reflex_telemetry::recorder`) through wait-free SPSC rings; full = drop and count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reflex_safety::wire::SafetyState;
use reflex_safety::{
    Command, EstopReport, EstopSource, MAX_JOINTS, Odometry, SafetyInputs, Verdict,
};

/// Tick flags the loop sets besides the verdict.
pub const FLAG_DEADLINE_MISS: u8 = 1;
pub const FLAG_INFERENCE_FAULT: u8 = 2;
/// The actuator gate sent zero since the last tick: the safety layer's state was set to
/// standstill before this tick (`Safety::assume_stopped`); replay restores it here.
pub const FLAG_ACTUATOR_ZEROED: u8 = 4;

/// One tick, as the RT loop copies it (Copy, fixed size).
#[derive(Debug, Clone, Copy)]
pub struct TickRecord {
    pub now_ns: u64,
    pub estop: [EstopReport; EstopSource::COUNT],
    pub reset_seq: u64,
    /// Stamp of the scan the layer saw (0: none).
    pub scan_stamp_ns: u64,
    pub odometry: Option<Odometry>,
    pub joint_stamp_ns: u64,
    pub joint_count: u8,
    pub joint_positions: [f64; MAX_JOINTS],
    pub joint_velocities: [f64; MAX_JOINTS],
    pub proposed: Command,
    pub state_before: SafetyState,
    pub verdict: Verdict,
    pub flags: u8,
}

/// A scan buffer (preallocated to the configured beams).
#[derive(Debug, Clone)]
pub struct ScanRecord {
    pub stamp_ns: u64,
    pub angle_min_rad: f32,
    pub angle_increment_rad: f32,
    pub range_min_m: f32,
    pub range_max_m: f32,
    pub ranges: Vec<f32>,
}

/// The RT loop's end: copies into preallocated records; never allocates, locks or blocks. Its
/// three hops are wait-free SPSC rings (`rtrb`): ticks and filled scan buffers to the recorder
/// thread, empty scan buffers back.
#[derive(Debug)]
pub struct RecorderTap {
    ticks: rtrb::Producer<TickRecord>,
    scans_free: rtrb::Consumer<ScanRecord>,
    scans_ready: rtrb::Producer<ScanRecord>,
    /// A buffer the loop could not use (a scan longer than configured), kept for the next scan.
    spare: Option<ScanRecord>,
    dropped: Arc<AtomicU64>,
    last_scan_stamp: u64,
    /// Set by the loop for the next record (deadline miss, inference fault).
    pub flags: u8,
}

impl RecorderTap {
    /// Records one tick: `state_before` is [`reflex_safety::Safety::state`] before `evaluate`.
    pub fn record(
        &mut self,
        now_ns: u64,
        inputs: &SafetyInputs<'_>,
        proposed: &Command,
        state_before: &SafetyState,
        verdict: &Verdict,
    ) {
        if let Some(scan) = &inputs.scan
            && scan.stamp.as_nanos() != self.last_scan_stamp
        {
            self.last_scan_stamp = scan.stamp.as_nanos();
            match self.spare.take().or_else(|| self.scans_free.pop().ok()) {
                Some(mut buf) if buf.ranges.capacity() >= scan.ranges_m.len() => {
                    buf.stamp_ns = scan.stamp.as_nanos();
                    buf.angle_min_rad = scan.angle_min_rad;
                    buf.angle_increment_rad = scan.angle_increment_rad;
                    buf.range_min_m = scan.range_min_m;
                    buf.range_max_m = scan.range_max_m;
                    buf.ranges.clear();
                    buf.ranges.extend_from_slice(scan.ranges_m);
                    if self.scans_ready.push(buf).is_err() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(buf) => {
                    // Longer than configured: the layer refused it anyway; keep the buffer.
                    self.spare = Some(buf);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let mut r = TickRecord {
            now_ns,
            estop: inputs.estop,
            reset_seq: inputs.reset_request_seq,
            scan_stamp_ns: inputs.scan.as_ref().map_or(0, |s| s.stamp.as_nanos()),
            odometry: inputs.odometry,
            joint_stamp_ns: 0,
            joint_count: 0,
            joint_positions: [0.0; MAX_JOINTS],
            joint_velocities: [0.0; MAX_JOINTS],
            proposed: *proposed,
            state_before: *state_before,
            verdict: *verdict,
            flags: std::mem::take(&mut self.flags),
        };
        if let Some(js) = &inputs.joint_state {
            let n = js.positions.len().min(MAX_JOINTS);
            r.joint_stamp_ns = js.stamp.as_nanos();
            r.joint_count = n as u8;
            r.joint_positions[..n].copy_from_slice(&js.positions[..n]);
            let m = js.velocities.len().min(MAX_JOINTS);
            r.joint_velocities[..m].copy_from_slice(&js.velocities[..m]);
        }
        if self.ticks.push(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The recorder thread's end of the tap's rings.
#[derive(Debug)]
pub struct TapReceiver {
    /// Ticks, oldest first.
    pub ticks: rtrb::Consumer<TickRecord>,
    /// Filled scan buffers, oldest first.
    pub scans_ready: rtrb::Consumer<ScanRecord>,
    /// Where the recorder gives scan buffers back.
    pub scans_free: rtrb::Producer<ScanRecord>,
}

/// The tap's rings: `ticks_cap` tick records in flight and `scans_cap` scan buffers of
/// `max_beams` beams, all allocated here. `dropped` counts what a full ring refused.
pub fn tap(
    ticks_cap: usize,
    scans_cap: usize,
    max_beams: usize,
    dropped: Arc<AtomicU64>,
) -> (RecorderTap, TapReceiver) {
    let (ticks_tx, ticks_rx) = rtrb::RingBuffer::new(ticks_cap);
    let (scans_ready_tx, scans_ready_rx) = rtrb::RingBuffer::new(scans_cap);
    let (mut scans_free_tx, scans_free_rx) = rtrb::RingBuffer::new(scans_cap);
    for _ in 0..scans_cap {
        let _ = scans_free_tx.push(ScanRecord {
            stamp_ns: 0,
            angle_min_rad: 0.0,
            angle_increment_rad: 0.0,
            range_min_m: 0.0,
            range_max_m: 0.0,
            ranges: Vec::with_capacity(max_beams),
        });
    }
    (
        RecorderTap {
            ticks: ticks_tx,
            scans_free: scans_free_rx,
            scans_ready: scans_ready_tx,
            spare: None,
            dropped,
            last_scan_stamp: 0,
            flags: 0,
        },
        TapReceiver {
            ticks: ticks_rx,
            scans_ready: scans_ready_rx,
            scans_free: scans_free_tx,
        },
    )
}
