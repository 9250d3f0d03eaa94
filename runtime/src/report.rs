//! `reflex sim --report DIR`: the per-tick CSV and an SVG plot of the run (walls, markers,
//! people, the robot's path, where the safety layer slowed or stopped it).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use reflex_safety::Action;

use crate::sim::{Shape, World};
use crate::simrun::SimTick;

/// Writes `ticks.csv` and `trajectory.svg` into `dir` (created if needed).
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
    Ok(())
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
