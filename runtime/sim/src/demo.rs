//! `reflex safety-demo`: the safety layer in closed loop with the built-in simulator, driven by
//! an adversarial "policy" that always asks for more than full speed straight ahead. Prints the
//! verdicts as the scripted events happen, then a summary.

use std::io::Write;

use anyhow::Result;
use reflex_safety::{Action, Reason, SafetyConfig, Twist};

use crate::world::{Lockstep, Obstacle, TickRecord, World};

/// Beams of the simulated lidar (0.5° over 360°).
pub const DEMO_BEAMS: usize = 720;

/// A scripted event of the demo timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    OperatorStart,
    EstopPressed,
    EstopReleased,
    OperatorReset,
    LidarFreezes,
    LidarResumes,
}

/// (time s, event).
pub const TIMELINE: &[(f64, Event)] = &[
    (0.5, Event::OperatorStart),
    (6.0, Event::EstopPressed),
    (7.0, Event::EstopReleased),
    (7.5, Event::OperatorReset),
    (9.0, Event::LidarFreezes),
    (9.3, Event::LidarResumes),
];

/// The demo world: a 3 m wide corridor ending in a wall at x = 8 m, a pedestrian who steps
/// briskly across the robot's path at x = 3 m around t = 3 s, and a box that drops into the
/// path just ahead of the robot at t = 10.75 s.
pub fn demo_world() -> World {
    World {
        obstacles: vec![
            Obstacle::wall("left wall", [-1.0, 1.5], [8.0, 1.5]),
            Obstacle::wall("right wall", [-1.0, -1.5], [8.0, -1.5]),
            Obstacle::wall("end wall", [8.0, -1.5], [8.0, 1.5]),
            Obstacle::circle("pedestrian", [3.0, -1.3], 0.25, [0.0, 1.4], (2.4, 4.2)),
            Obstacle::circle(
                "dropped box",
                [7.5, 0.1],
                0.15,
                [0.0; 2],
                (10.75, f64::INFINITY),
            ),
        ],
        time_s: 0.0,
    }
}

/// What the demo saw.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    pub ticks: u64,
    pub by_action: [u64; 5],
    pub min_clearance_m: f64,
    /// Ticks with the footprint touching an obstacle.
    pub collisions: u64,
    pub final_x_m: f64,
}

/// Runs the demo for `seconds`, printing a line every `print_every_ms` and at every change of
/// action or reasons.
pub fn run(
    config: &SafetyConfig,
    seconds: f64,
    print_every_ms: u64,
    seed: u64,
    out: &mut dyn Write,
) -> Result<DemoSummary> {
    let mut sim = Lockstep::new(config.clone(), demo_world(), DEMO_BEAMS, seed)?;
    writeln!(
        out,
        "reflex safety-demo: safety config {}, {} beams, {} ms period, seed {seed}",
        sim.safety.config_hash_hex(),
        DEMO_BEAMS,
        config.control_period_ms
    )?;
    writeln!(
        out,
        "policy: adversarial, always proposes vx = 1.2 m/s straight ahead (limit {} m/s)",
        config.base.as_ref().map_or(0.0, |b| b.max_vx_mps)
    )?;
    writeln!(
        out,
        "{:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {:<6} reasons",
        "t_s", "x_m", "v_mps", "prop", "cmd", "clr_m", "action"
    )?;
    let proposed = Twist {
        vx_mps: 1.2,
        ..Twist::default()
    };
    let ticks = (seconds * 1e9 / sim.period_ns as f64).round() as u64;
    let print_every = (print_every_ms * 1_000_000 / sim.period_ns).max(1);
    let mut summary = DemoSummary {
        min_clearance_m: f64::INFINITY,
        ..DemoSummary::default()
    };
    let mut next_event = 0;
    let mut last_severity = None;
    for tick in 0..ticks {
        let t = (tick + 1) as f64 * sim.period_ns as f64 * 1e-9;
        while next_event < TIMELINE.len() && TIMELINE[next_event].0 <= t + 1e-9 {
            let event = TIMELINE[next_event].1;
            writeln!(out, "-- t={t:.2}s event: {event:?}")?;
            match event {
                Event::OperatorStart | Event::OperatorReset => sim.reset_request_seq += 1,
                Event::EstopPressed => sim.hardware_pressed = true,
                Event::EstopReleased => sim.hardware_pressed = false,
                Event::LidarFreezes => sim.lidar_frozen = true,
                Event::LidarResumes => sim.lidar_frozen = false,
            }
            next_event += 1;
        }
        let record = sim.tick(proposed);
        summary.ticks += 1;
        summary.by_action[action_index(record.verdict.action)] += 1;
        summary.min_clearance_m = summary.min_clearance_m.min(record.clearance_m);
        summary.collisions += u64::from(record.clearance_m <= 0.0);
        summary.final_x_m = record.pose.x_m;
        // Print on entering or leaving a stop (not on every clamp/slow flicker) and periodically.
        let severity = record.verdict.action.max(Action::Slow);
        if last_severity != Some(severity) || tick % print_every == print_every - 1 {
            print_line(out, &record)?;
        }
        last_severity = Some(severity);
    }
    writeln!(out, "summary:")?;
    writeln!(out, "  ticks: {}", summary.ticks)?;
    for (i, action) in [
        Action::Pass,
        Action::Clamp,
        Action::Slow,
        Action::Stop,
        Action::Estop,
    ]
    .iter()
    .enumerate()
    {
        writeln!(out, "  {:<6} {}", action.name(), summary.by_action[i])?;
    }
    let counts = sim.safety.reason_counts();
    let reasons: Vec<String> = Reason::ALL
        .iter()
        .filter(|r| counts[**r as usize] > 0)
        .map(|r| format!("{}={}", r.name(), counts[*r as usize]))
        .collect();
    writeln!(out, "  reasons: {}", reasons.join(" "))?;
    writeln!(out, "  min clearance: {:.3} m", summary.min_clearance_m)?;
    writeln!(out, "  collisions: {}", summary.collisions)?;
    writeln!(
        out,
        "  final x: {:.2} m (front of the box at 7.35 m, end wall at 8.0 m)",
        summary.final_x_m
    )?;
    Ok(summary)
}

fn action_index(action: Action) -> usize {
    match action {
        Action::Pass => 0,
        Action::Clamp => 1,
        Action::Slow => 2,
        Action::Stop => 3,
        Action::Estop => 4,
    }
}

fn print_line(out: &mut dyn Write, r: &TickRecord) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2}  {:<6} {}",
        r.time_s,
        r.pose.x_m,
        r.velocity.vx_mps,
        r.proposed.vx_mps,
        r.verdict.command.base.vx_mps,
        r.clearance_m.min(99.0),
        r.verdict.action.name(),
        r.verdict.reasons
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> SafetyConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../launch/reflex.example.toml");
        reflex_runner::config::ReflexConfig::load(&path)
            .unwrap()
            .safety
    }

    #[test]
    fn demo_stops_for_everything_and_never_collides() {
        let mut out = Vec::new();
        let s = run(&example(), 14.0, 100, 7, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(s.collisions, 0, "{text}");
        assert!(s.min_clearance_m > 0.0);
        // Latched at start, the E-stop, the frozen lidar, the pedestrian and the box show up.
        assert!(s.by_action[action_index(Action::Estop)] > 100, "{text}");
        assert!(text.contains("scan_stale"), "{text}");
        assert!(text.contains("slowdown_zone"), "{text}");
        assert!(text.contains("velocity_limit"), "{text}");
        // It got somewhere, and stopped before the end wall.
        assert!(
            s.final_x_m > 6.5 && s.final_x_m < 7.5 - 0.15 - 0.35,
            "{text}"
        );
    }
}
