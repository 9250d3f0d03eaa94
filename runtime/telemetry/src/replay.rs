//! `reflex replay FILE.mcap`: re-runs a flight recording's inputs through the safety layer
//! built from the recording's own config, starting from the recorded state of the first tick,
//! and reports whether every verdict (command bits, action, reasons, drive power) and every
//! intermediate state is bit-identical to what the robot computed.
//!
//! With `--policy DIR` whose model digest is the recording's, the recorded observations are
//! also re-run through the policy and each chunk compared bit for bit.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use reflex_safety::wire::{Reader, SafetyState, Writer};
use reflex_safety::{Monotonic, Odometry, Safety, SafetyConfig, SafetyInputs, Scan};
use serde::Serialize;

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub file: String,
    pub reason: String,
    pub model_digest: String,
    pub config_hash: String,
    pub ticks: u64,
    pub scans: u64,
    pub identical: bool,
    pub mismatches: u64,
    pub first_mismatch: Option<String>,
    /// What happened to the policy: replayed, or why not.
    pub policy: String,
    pub policy_inferences: u64,
    pub policy_identical: Option<bool>,
}

struct ScanData {
    geometry: [f32; 4],
    ranges: Vec<f32>,
}

fn bits(c: &reflex_safety::Command) -> Vec<u8> {
    let mut w = Writer::default();
    w.command(c);
    w.0
}

fn state_bits(s: &SafetyState) -> Vec<u8> {
    let mut w = Writer::default();
    s.encode(&mut w);
    s.encode_arm(&mut w);
    w.0
}

/// Replays `path`; with `policy` (a package and a backend config) also the inferences.
pub fn replay(
    path: &Path,
    policy: Option<(&reflex_policy::PolicyPackage, &reflex_policy::BackendConfig)>,
) -> Result<ReplayReport> {
    let buf = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bad = |what: &str| {
        anyhow::anyhow!(
            "{}: {what}; fix: pass a flight recording written by Reflex (recorder.dir/queue/*.mcap)",
            path.display()
        )
    };
    let summary = mcap::read::Summary::read(&buf)
        .with_context(|| format!("{}: not a readable MCAP file", path.display()))?
        .ok_or_else(|| bad("the MCAP file has no summary (unfinished?)"))?;
    let meta = summary
        .metadata_indexes
        .iter()
        .find(|m| m.name == "reflex")
        .ok_or_else(|| bad("no `reflex` metadata"))?;
    let meta = mcap::read::metadata(&buf, meta)?.metadata;
    let config_index = summary
        .attachment_indexes
        .iter()
        .find(|a| a.name == "safety_config.json")
        .ok_or_else(|| bad("no safety_config.json attachment"))?;
    let attachment = mcap::read::attachment(&buf, config_index)?;
    let config: SafetyConfig = serde_json::from_slice(&attachment.data)
        .with_context(|| format!("{}: the attached safety config is invalid", path.display()))?;
    let mut safety = Safety::new(config).map_err(|e| {
        anyhow::anyhow!(
            "{}: the attached safety config is refused: {e}",
            path.display()
        )
    })?;
    let recorded_hash = meta.get("config_hash").cloned().unwrap_or_default();
    anyhow::ensure!(
        safety.config_hash_hex() == recorded_hash,
        "{}: the attached safety config hashes to {}, the recording says {recorded_hash}: the \
         file was altered; nothing replayed",
        path.display(),
        safety.config_hash_hex()
    );
    let mut scans: HashMap<u64, ScanData> = HashMap::new();
    let mut io: Vec<(u64, u32, Vec<u8>)> = Vec::new();
    let mut inferences = Vec::new();
    for message in mcap::MessageStream::new(&buf)? {
        let m = message?;
        match m.channel.topic.as_str() {
            "/scan" => {
                let scan: reflex_ros::port::LaserScan =
                    reflex_ros::port::cdr::decode(&m.data).map_err(|e| bad(&e))?;
                scans.insert(
                    m.log_time,
                    ScanData {
                        geometry: [
                            scan.angle_min,
                            scan.angle_increment,
                            scan.range_min,
                            scan.range_max,
                        ],
                        ranges: scan.ranges,
                    },
                );
            }
            "/reflex/safety_io" => {
                anyhow::ensure!(
                    m.channel.message_encoding == crate::recorder::SAFETY_IO_ENCODING,
                    "{}: /reflex/safety_io is {:?}, this reflex reads {:?}",
                    path.display(),
                    m.channel.message_encoding,
                    crate::recorder::SAFETY_IO_ENCODING
                );
                io.push((m.log_time, m.sequence, m.data.into_owned()));
            }
            "/reflex/inference" => {
                inferences.push(
                    crate::recorder::decode_inference(&m.data)
                        .ok_or_else(|| bad("an inference record is corrupt"))?,
                );
            }
            _ => {}
        }
    }
    io.sort_by_key(|(t, seq, _)| (*t, *seq));
    anyhow::ensure!(
        !io.is_empty(),
        "{}: no /reflex/safety_io ticks",
        path.display()
    );
    let mut report = ReplayReport {
        file: path.display().to_string(),
        reason: meta.get("reason").cloned().unwrap_or_default(),
        model_digest: meta.get("model_digest").cloned().unwrap_or_default(),
        config_hash: recorded_hash,
        ticks: 0,
        scans: scans.len() as u64,
        identical: true,
        mismatches: 0,
        first_mismatch: None,
        policy: String::new(),
        policy_inferences: 0,
        policy_identical: None,
    };
    let digest = meta.get("model_digest").cloned().unwrap_or_default();
    let generation: u32 = meta
        .get("model_generation")
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    report.policy = match policy {
        None => format!(
            "not replayed: pass --policy DIR with the package whose model digest is {digest}"
        ),
        Some((package, _)) if package.model_digest() != digest => format!(
            "not replayed: {} has model digest {}, the recording {digest}",
            package.dir.display(),
            package.model_digest()
        ),
        Some((package, backend)) => {
            let mut ort = reflex_policy::OrtBackend::load(package, backend)?;
            let mut chunk = package.manifest.action_chunk();
            let mut identical = true;
            for i in inferences
                .iter()
                .filter(|i| i.model_generation == generation)
            {
                ort.infer(&i.observation, &mut chunk)?;
                report.policy_inferences += 1;
                let same = chunk.actions.len() == i.chunk.len()
                    && chunk
                        .actions
                        .iter()
                        .zip(&i.chunk)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                if !same && identical {
                    identical = false;
                    if report.first_mismatch.is_none() {
                        report.first_mismatch = Some(format!(
                            "policy: the chunk for the observation at {} ns differs",
                            i.t_obs_ns
                        ));
                    }
                }
            }
            report.policy_identical = Some(identical);
            if !identical {
                report.identical = false;
            }
            format!(
                "replayed {} inferences of {} on ONNX Runtime",
                report.policy_inferences,
                package.dir.display()
            )
        }
    };
    for (i, (t, _, data)) in io.iter().enumerate() {
        let mut r = Reader(data);
        let corrupt = || bad(&format!("tick {i} at {t} ns is truncated or corrupt"));
        let now = r.u64().ok_or_else(corrupt)?;
        let estop = reflex_safety::wire::get_estops(&mut r).ok_or_else(corrupt)?;
        let reset_seq = r.u64().ok_or_else(corrupt)?;
        let scan_stamp = r.u64().ok_or_else(corrupt)?;
        let has_odom = r.u8().ok_or_else(corrupt)? == 1;
        let odom_stamp = r.u64().ok_or_else(corrupt)?;
        let odom_twist = r.twist().ok_or_else(corrupt)?;
        let joint_stamp = r.u64().ok_or_else(corrupt)?;
        let joints = usize::from(r.u8().ok_or_else(corrupt)?);
        let mut positions = Vec::with_capacity(joints);
        let mut velocities = Vec::with_capacity(joints);
        for _ in 0..joints {
            positions.push(r.f64().ok_or_else(corrupt)?);
            velocities.push(r.f64().ok_or_else(corrupt)?);
        }
        let proposed = r.command().ok_or_else(corrupt)?;
        let mut state = SafetyState::decode(&mut r).ok_or_else(corrupt)?;
        let expected_command = r.command().ok_or_else(corrupt)?;
        let expected_action = r.u8().ok_or_else(corrupt)?;
        let expected_reasons = r.u64().ok_or_else(corrupt)?;
        let expected_power = r.u8().ok_or_else(corrupt)? == 1;
        // Older files end the tick here; newer ones carry the tick's flags, then the arm's
        // per-joint state (SAF-015 yield, SAF-018 stall window; all clear when absent).
        let flags = r.u8().unwrap_or(0);
        let _ = state.decode_arm(&mut r);
        let mut mismatch = Vec::new();
        if i == 0 || flags & reflex_rt::tap::FLAG_ACTUATOR_ZEROED != 0 {
            // The first tick, or one where the actuator gate had set the layer to standstill
            // (what the robot was told outside the layer): start from the recorded state.
            safety.restore(&state);
        } else if state_bits(&safety.state()) != state_bits(&state) {
            mismatch.push("state before the tick".to_string());
        }
        let scan = if scan_stamp == 0 {
            None
        } else {
            let s = scans.get(&scan_stamp).ok_or_else(|| {
                bad(&format!(
                    "tick {i} uses the scan stamped {scan_stamp} ns, which the file lacks"
                ))
            })?;
            Some(Scan {
                stamp: Monotonic::from_nanos(scan_stamp),
                angle_min_rad: s.geometry[0],
                angle_increment_rad: s.geometry[1],
                range_min_m: s.geometry[2],
                range_max_m: s.geometry[3],
                ranges_m: &s.ranges,
            })
        };
        let inputs = SafetyInputs {
            estop,
            reset_request_seq: reset_seq,
            scan,
            odometry: has_odom.then_some(Odometry {
                stamp: Monotonic::from_nanos(odom_stamp),
                twist: odom_twist,
            }),
            joint_state: (joint_stamp > 0 && joints > 0).then_some(reflex_safety::JointState {
                stamp: Monotonic::from_nanos(joint_stamp),
                positions: &positions,
                velocities: &velocities,
            }),
        };
        let v = safety.evaluate(&inputs, &proposed, Monotonic::from_nanos(now));
        if bits(&v.command) != bits(&expected_command) {
            mismatch.push(format!(
                "command {:?} vs recorded {:?}",
                v.command.base, expected_command.base
            ));
        }
        if v.action as u8 != expected_action {
            mismatch.push(format!("action {:?}", v.action));
        }
        if v.reasons.bits() != expected_reasons {
            mismatch.push(format!(
                "reasons {:?}",
                v.reasons.iter().map(|r| r.name()).collect::<Vec<_>>()
            ));
        }
        if v.power_enabled != expected_power {
            mismatch.push("drive power".into());
        }
        report.ticks += 1;
        if !mismatch.is_empty() {
            report.identical = false;
            report.mismatches += 1;
            if report.first_mismatch.is_none() {
                report.first_mismatch =
                    Some(format!("tick {i} at {now} ns: {}", mismatch.join("; ")));
            }
        }
    }
    Ok(report)
}
