//! `reflex inspect`: a policy package as a person reads it.

use std::fmt::Write;

use reflex_policy::{InputRole, PolicyPackage, Stats};

fn stats(s: &Stats) -> String {
    match (&s.mean, &s.std, &s.min, &s.max) {
        (Some(mean), Some(std), _, _) => format!("mean {mean:?} std {std:?}"),
        (_, _, Some(min), Some(max)) => format!("min {min:?} max {max:?}"),
        _ => "missing".into(),
    }
}

/// Multi-line description of `package`.
pub fn describe(package: &PolicyPackage) -> String {
    let m = &package.manifest;
    let mut out = String::new();
    let _ = writeln!(out, "{} {}  ({})", m.name, m.version, package.dir.display());
    if !m.description.is_empty() {
        let _ = writeln!(out, "  {}", m.description);
    }
    let _ = writeln!(out, "schema: {}", m.schema_version);
    let _ = writeln!(out, "inputs:");
    for i in &m.inputs {
        let role = match i.role {
            InputRole::Image => "image",
            InputRole::State => "state",
            InputRole::InstructionTokens => "instruction tokens",
            InputRole::InstructionEmbedding => "instruction embedding, from the package",
            InputRole::Noise => "noise, drawn per inference",
        };
        let _ = writeln!(
            out,
            "  {:<12} {:?} {:?}  ({role})",
            i.name, i.dtype, i.shape
        );
    }
    let o = &m.outputs[0];
    let _ = writeln!(
        out,
        "output:\n  {:<12} {:?} {:?}  (action chunk: H = {} steps × A = {})",
        o.name,
        o.dtype,
        o.shape,
        m.horizon_steps(),
        m.action_space.len()
    );
    for o in &m.outputs[1..] {
        let _ = writeln!(
            out,
            "  {:<12} {:?} {:?}  (computed, not used)",
            o.name, o.dtype, o.shape
        );
    }
    let _ = writeln!(out, "action space:");
    for (i, a) in m.action_space.iter().enumerate() {
        let _ = writeln!(
            out,
            "  [{i}] {:<10} {:<8} drives {}{}",
            a.name,
            a.unit,
            a.drives,
            if a.relative {
                " (relative to its measured state at the observation)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        out,
        "normalization:\n  state:  {}\n  action: {}",
        stats(&m.normalization.state),
        stats(&m.normalization.action)
    );
    let _ = writeln!(
        out,
        "control: {} Hz, chunk horizon {} s ({} steps)",
        m.control_rate_hz,
        m.chunk_horizon_s,
        m.horizon_steps()
    );
    let e = &m.safety_envelope;
    let _ = writeln!(
        out,
        "safety envelope: vx ≤ {} m/s, vy ≤ {} m/s, wz ≤ {} rad/s",
        e.max_vx_mps, e.max_vy_mps, e.max_wz_radps
    );
    let _ = writeln!(out, "targets:");
    for t in &m.targets {
        let platform = [&t.arch, &t.gpu_sm, &t.tensorrt_version, &t.precision]
            .iter()
            .filter_map(|v| v.as_deref())
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "  {:?} {} sha256:{} {platform}",
            t.kind, t.file, t.sha256
        );
    }
    let pairs = package
        .golden_pairs()
        .map(|p| p.len().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let _ = writeln!(
        out,
        "golden: {} ({} pairs, tolerance abs {} rel {})",
        m.golden.file, pairs, m.golden.tolerance.abs, m.golden.tolerance.rel
    );
    if let Some(v) = &m.instruction_vocabulary {
        let _ = writeln!(out, "instruction vocabulary: {}", v.join(" "));
    }
    if let Some(e) = &m.instruction_embeddings {
        let _ = writeln!(
            out,
            "instructions ({}, embedded): {}",
            e.file,
            m.known_instructions()
        );
    }
    out
}
