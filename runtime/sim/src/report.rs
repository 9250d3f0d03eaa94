//! `reflex sim --report DIR`: the per-tick CSV, an SVG plot of the run (walls, markers,
//! people, the robot's path, where the safety layer slowed or stopped it) and an MCAP file of
//! the ticks and poses for Foxglove.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use reflex_safety::Action;

use crate::lockstep::SimTick;
use crate::world::{Shape, World};

/// `foxglove.PoseInFrame` (JSON): Foxglove's 3D panel draws the robot's path from it.
const POSE_SCHEMA: &str = r#"{"type":"object","properties":{"timestamp":{"type":"object","properties":{"sec":{"type":"integer"},"nsec":{"type":"integer"}}},"frame_id":{"type":"string"},"pose":{"type":"object","properties":{"position":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"},"z":{"type":"number"}}},"orientation":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"},"z":{"type":"number"},"w":{"type":"number"}}}}}}}"#;
const SIM_TICK_SCHEMA: &str = r#"{"type":"object","title":"reflex sim tick","properties":{"time_s":{"type":"number"},"x_m":{"type":"number"},"y_m":{"type":"number"},"yaw_rad":{"type":"number"},"speed_mps":{"type":"number"},"command":{"type":"object"},"action":{"type":"string"},"reasons":{"type":"array","items":{"type":"string"}},"clearance_m":{"type":"number"}}}"#;

/// Writes `path`: an MCAP (zstd) with `/sim/ticks` (JSON per tick: pose, speed, command,
/// action, reasons, clearance), `/sim/robot_pose` (`foxglove.PoseInFrame`) and metadata
/// `run` = `meta`. Opens in Foxglove and PyPI `mcap`.
pub fn write_mcap(
    path: &Path,
    meta: std::collections::BTreeMap<String, String>,
    ticks: &[SimTick],
) -> Result<()> {
    let num = |v: f64| {
        serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
    };
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = mcap::WriteOptions::new()
            .compression(Some(mcap::Compression::Zstd))
            .chunk_size(Some(256 * 1024))
            .library(concat!("reflex ", env!("CARGO_PKG_VERSION")))
            .create(&mut buf)?;
        let none = std::collections::BTreeMap::new();
        let tick_schema =
            w.add_schema("reflex.SimTick", "jsonschema", SIM_TICK_SCHEMA.as_bytes())?;
        let tick_ch = w.add_channel(tick_schema, "/sim/ticks", "json", &none)?;
        let pose_schema =
            w.add_schema("foxglove.PoseInFrame", "jsonschema", POSE_SCHEMA.as_bytes())?;
        let pose_ch = w.add_channel(pose_schema, "/sim/robot_pose", "json", &none)?;
        for (seq, t) in ticks.iter().enumerate() {
            let ns = (t.time_s * 1e9).round() as u64;
            let header = |channel_id| mcap::records::MessageHeader {
                channel_id,
                sequence: seq as u32,
                log_time: ns,
                publish_time: ns,
            };
            let reasons: Vec<&str> = t.reasons.iter().map(|r| r.name()).collect();
            let tick = serde_json::json!({
                "time_s": num(t.time_s),
                "x_m": num(t.pose.x_m),
                "y_m": num(t.pose.y_m),
                "yaw_rad": num(t.pose.yaw_rad),
                "speed_mps": num(t.velocity.vx_mps.hypot(t.velocity.vy_mps)),
                "command": {"vx": num(t.command.vx_mps), "vy": num(t.command.vy_mps), "wz": num(t.command.wz_radps)},
                "action": t.action.name(),
                "reasons": reasons,
                "clearance_m": num(t.clearance_m.min(99.0)),
            });
            w.write_to_known_channel(&header(tick_ch), &serde_json::to_vec(&tick)?)?;
            let (s, c) = (t.pose.yaw_rad / 2.0).sin_cos();
            let pose = serde_json::json!({
                "timestamp": {"sec": ns / 1_000_000_000, "nsec": ns % 1_000_000_000},
                "frame_id": "world",
                "pose": {
                    "position": {"x": num(t.pose.x_m), "y": num(t.pose.y_m), "z": 0.0},
                    "orientation": {"x": 0.0, "y": 0.0, "z": num(s), "w": num(c)},
                },
            });
            w.write_to_known_channel(&header(pose_ch), &serde_json::to_vec(&pose)?)?;
        }
        w.write_metadata(&mcap::records::Metadata {
            name: "run".into(),
            metadata: meta,
        })?;
        w.finish()?;
    }
    std::fs::write(path, buf.into_inner())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `ticks.csv`, `trajectory.svg` and `run.mcap` into `dir` (created if needed).
pub fn write(dir: &Path, world: &World, ticks: &[SimTick]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create report dir {}", dir.display()))?;
    let mut csv = String::from(
        "time_s,x_m,y_m,yaw_rad,vx_mps,vy_mps,wz_radps,cmd_vx_mps,cmd_vy_mps,cmd_wz_radps,action,reasons,clearance_m\n",
    );
    for t in ticks {
        let _ = writeln!(
            csv,
            "{:.3},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{},{},{:.4}",
            t.time_s,
            t.pose.x_m,
            t.pose.y_m,
            t.pose.yaw_rad,
            t.velocity.vx_mps,
            t.velocity.vy_mps,
            t.velocity.wz_radps,
            t.command.vx_mps,
            t.command.vy_mps,
            t.command.wz_radps,
            t.action.name(),
            t.reasons.to_string().replace(',', ";"),
            t.clearance_m.min(99.0)
        );
    }
    let csv_path = dir.join("ticks.csv");
    std::fs::write(&csv_path, csv)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    let svg_path = dir.join("trajectory.svg");
    std::fs::write(&svg_path, svg(world, ticks))
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("source".to_string(), "reflex sim".to_string());
    write_mcap(&dir.join("run.mcap"), meta, ticks)
}

fn svg(world: &World, ticks: &[SimTick]) -> String {
    // Bounds of everything drawn, plus a margin.
    let mut points: Vec<[f64; 2]> = ticks.iter().map(|t| [t.pose.x_m, t.pose.y_m]).collect();
    for o in &world.obstacles {
        match o.shape {
            Shape::Circle { center, .. } => points.push(center),
            Shape::Segment { a, b } => {
                points.push(a);
                points.push(b);
            }
        }
    }
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for [x, y] in &points {
        x0 = x0.min(*x);
        y0 = y0.min(*y);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    let (x0, y0, x1, y1) = (x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5);
    let scale = 80.0;
    let (w, h) = ((x1 - x0) * scale, (y1 - y0) * scale);
    let px = |x: f64| (x - x0) * scale;
    let py = |y: f64| (y1 - y) * scale;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for o in &world.obstacles {
        let rgb = format!("rgb({},{},{})", o.colour[0], o.colour[1], o.colour[2]);
        match o.shape {
            Shape::Segment { a, b } => {
                let _ = writeln!(
                    s,
                    "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{rgb}\" stroke-width=\"4\"/>",
                    px(a[0]),
                    py(a[1]),
                    px(b[0]),
                    py(b[1])
                );
            }
            Shape::Circle { center, radius_m } => {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{:.1}\" fill=\"{rgb}\" fill-opacity=\"0.7\"><title>{}</title></circle>",
                    px(center[0]),
                    py(center[1]),
                    radius_m * scale,
                    o.name
                );
            }
        }
    }
    let path: Vec<String> = ticks
        .iter()
        .step_by(5)
        .map(|t| format!("{:.1},{:.1}", px(t.pose.x_m), py(t.pose.y_m)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"black\" stroke-width=\"2\"/>",
        path.join(" ")
    );
    for t in ticks.iter().step_by(10) {
        let colour = match t.action {
            Action::Stop | Action::Estop => "red",
            Action::Slow => "orange",
            _ => continue,
        };
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
            px(t.pose.x_m),
            py(t.pose.y_m)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"8\" y=\"18\" font-family=\"sans-serif\" font-size=\"14\">path (black); slowed (orange), stopped (red) by the safety layer</text>\n</svg>"
    );
    s
}
