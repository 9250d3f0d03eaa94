//! Table-driven scenarios: the robot is brought to the commanded velocity on a clear scan, then
//! the world changes and one more tick is judged.

mod common;

use common::*;
use reflex_safety::*;
use std::f32::consts::{FRAC_PI_2, PI};

struct Row {
    name: &'static str,
    /// (vx, vy, wz) held during warm-up and on the judged tick.
    command: (f64, f64, f64),
    world: fn(&mut Rig),
    action: Action,
    reason: Option<Reason>,
    /// Expected output (vx, vy, wz), or None to skip.
    output: Option<(f64, f64, f64)>,
}

fn nothing(_: &mut Rig) {}

const TABLE: &[Row] = &[
    Row {
        name: "clear path",
        command: (0.5, 0.0, 0.0),
        world: nothing,
        action: Action::Pass,
        reason: None,
        output: Some((0.5, 0.0, 0.0)),
    },
    Row {
        name: "wall ahead in the protective zone",
        command: (0.5, 0.0, 0.0),
        world: |r| r.wall(0.0, 0.4, 30),
        action: Action::Stop,
        reason: Some(Reason::ProtectiveZone),
        output: Some((0.0, 0.0, 0.0)),
    },
    Row {
        name: "wall ahead in the slow-down zone",
        command: (0.5, 0.0, 0.0),
        world: |r| r.wall(0.0, 0.6, 30),
        action: Action::Slow,
        reason: Some(Reason::SlowdownZone),
        output: None,
    },
    Row {
        name: "wall far ahead",
        command: (0.5, 0.0, 0.0),
        world: |r| r.wall(0.0, 2.0, 30),
        action: Action::Pass,
        reason: None,
        output: Some((0.5, 0.0, 0.0)),
    },
    Row {
        name: "wall behind while driving forward",
        command: (0.5, 0.0, 0.0),
        world: |r| r.wall(PI, 0.35, 30),
        action: Action::Pass,
        reason: None,
        output: Some((0.5, 0.0, 0.0)),
    },
    Row {
        name: "person on the left, strafing left",
        command: (0.0, 0.3, 0.0),
        world: |r| r.obstacle(FRAC_PI_2, 0.28, 4),
        action: Action::Stop,
        reason: Some(Reason::ProtectiveZone),
        output: Some((0.0, 0.0, 0.0)),
    },
    Row {
        name: "person on the left, strafing right",
        command: (0.0, -0.3, 0.0),
        world: |r| r.obstacle(FRAC_PI_2, 0.28, 4),
        action: Action::Pass,
        reason: None,
        output: Some((0.0, -0.3, 0.0)),
    },
    Row {
        name: "diagonal into a corner post",
        command: (0.4, 0.3, 0.0),
        world: |r| r.obstacle(0.6, 0.45, 3),
        action: Action::Stop,
        reason: Some(Reason::ProtectiveZone),
        output: Some((0.0, 0.0, 0.0)),
    },
    Row {
        name: "one noisy beam",
        command: (0.5, 0.0, 0.0),
        world: |r| r.obstacle(0.0, 0.32, 1),
        action: Action::Pass,
        reason: None,
        output: Some((0.5, 0.0, 0.0)),
    },
    Row {
        name: "blind sector ahead (NaN)",
        command: (0.5, 0.0, 0.0),
        world: |r| r.obstacle(0.0, f32::NAN, 90),
        action: Action::Stop,
        reason: Some(Reason::InvalidBeams),
        output: Some((0.0, 0.0, 0.0)),
    },
    Row {
        name: "object too close (-inf)",
        command: (0.5, 0.0, 0.0),
        world: |r| r.obstacle(0.3, f32::NEG_INFINITY, 2),
        action: Action::Stop,
        reason: Some(Reason::FootprintIntrusion),
        output: Some((0.0, 0.0, 0.0)),
    },
    Row {
        name: "scan dropped",
        command: (0.5, 0.0, 0.0),
        world: |r| r.scan_present = false,
        action: Action::Stop,
        reason: Some(Reason::ScanMissing),
        output: Some((0.0, 0.0, 0.0)),
    },
    Row {
        name: "scan frozen",
        command: (0.5, 0.0, 0.0),
        world: |r| r.scan_age_ns = 150_000_000,
        action: Action::Stop,
        reason: Some(Reason::ScanStale),
        output: Some((0.0, 0.0, 0.0)),
    },
    Row {
        name: "hardware E-stop",
        command: (0.5, 0.0, 0.0),
        world: |r| r.press(EstopSource::Hardware),
        action: Action::Estop,
        reason: Some(Reason::EstopHardware),
        output: Some((0.48, 0.0, 0.0)),
    },
    Row {
        name: "watchdog fault",
        command: (0.5, 0.0, 0.0),
        world: |r| r.press(EstopSource::Watchdog),
        action: Action::Estop,
        reason: Some(Reason::EstopWatchdog),
        output: Some((0.48, 0.0, 0.0)),
    },
    Row {
        name: "over-speed request",
        command: (3.0, 0.0, 0.0),
        world: nothing,
        action: Action::Clamp,
        reason: Some(Reason::VelocityLimit),
        output: Some((1.0, 0.0, 0.0)),
    },
    Row {
        name: "spin beside a wall",
        command: (0.0, 0.0, 1.0),
        world: |r| r.wall(FRAC_PI_2, 0.22, 60),
        action: Action::Stop,
        reason: Some(Reason::ProtectiveZone),
        output: Some((0.0, 0.0, 0.0)),
    },
    Row {
        name: "spin in the open",
        command: (0.0, 0.0, 1.0),
        world: |r| r.wall(FRAC_PI_2, 0.6, 60),
        action: Action::Pass,
        reason: None,
        output: Some((0.0, 0.0, 1.0)),
    },
];

#[test]
fn scenario_table() {
    let mut failures = Vec::new();
    for row in TABLE {
        let mut rig = Rig::started(config());
        let (vx, vy, wz) = row.command;
        rig.drive_for(15, vx, vy, wz);
        (row.world)(&mut rig);
        let v = rig.drive(vx, vy, wz);
        let mut ok = v.action == row.action;
        if let Some(reason) = row.reason {
            ok &= v.reasons.contains(reason);
        }
        if let Some((x, y, z)) = row.output {
            let b = v.command.base;
            ok &= (b.vx_mps - x).abs() < 1e-9
                && (b.vy_mps - y).abs() < 1e-9
                && (b.wz_radps - z).abs() < 1e-9;
        }
        if !ok {
            failures.push(format!(
                "{}: got {} [{}] {:?}",
                row.name,
                v.action.name(),
                v.reasons,
                v.command.base
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
