//! One or more tests per safety requirement, named after its ID.

mod common;

use common::*;
use reflex_safety::*;
use std::f32::consts::{FRAC_PI_2, PI};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn moving(rig: &mut Rig, vx: f64) {
    let v = rig.drive_for(12, vx, 0.0, 0.0);
    assert!(close(v.command.base.vx_mps, vx), "{v:?}");
    assert_eq!(v.action, Action::Pass, "{v:?}");
}

// ---------------------------------------------------------------- SAF-001 E-stop

#[test]
fn saf_001_estop_latches_from_every_source_and_needs_an_explicit_reset() {
    for source in EstopSource::ALL {
        let mut rig = Rig::started(config());
        moving(&mut rig, 0.5);
        rig.press(source);
        let v = rig.drive(0.5, 0.0, 0.0);
        assert_eq!(v.action, Action::Estop, "{source:?}");
        assert!(v.reasons.contains(match source {
            EstopSource::Hardware => Reason::EstopHardware,
            EstopSource::RosTopic => Reason::EstopRosTopic,
            EstopSource::Cloud => Reason::EstopCloud,
            EstopSource::Watchdog => Reason::EstopWatchdog,
            EstopSource::Internal => Reason::EstopInternal,
        }));
        // Released, but still latched: no motion until reset.
        rig.release(source);
        let v = rig.drive_for(100, 0.5, 0.0, 0.0);
        assert_eq!(v.action, Action::Estop);
        assert!(v.reasons.contains(Reason::EstopLatched));
        assert_eq!(v.command.base.vx_mps, 0.0);
        rig.reset();
        let v = rig.drive(0.5, 0.0, 0.0);
        assert_ne!(v.action, Action::Estop, "{v:?}");
        assert!(v.command.base.vx_mps > 0.0);
    }
}

#[test]
fn saf_001_unconfigured_source_still_latches() {
    let cfg = config_with(
        "estop",
        "sources",
        r#"[{ name = "watchdog" }, { name = "internal" }]"#,
    );
    let mut rig = Rig::started(cfg);
    rig.press(EstopSource::Cloud);
    assert_eq!(rig.drive(0.3, 0.0, 0.0).action, Action::Estop);
}

#[test]
fn saf_001_reset_refused_while_any_source_pressed_and_is_not_remembered() {
    let mut rig = Rig::started(config());
    rig.press(EstopSource::RosTopic);
    rig.drive(0.0, 0.0, 0.0);
    rig.reset();
    let v = rig.drive(0.3, 0.0, 0.0);
    assert!(v.reasons.contains(Reason::ResetRefused));
    assert!(rig.safety.is_latched());
    // The refused request was consumed: releasing later does not un-latch by itself.
    rig.release(EstopSource::RosTopic);
    let v = rig.drive_for(10, 0.3, 0.0, 0.0);
    assert_eq!(v.action, Action::Estop);
    rig.reset();
    assert_ne!(rig.drive(0.3, 0.0, 0.0).action, Action::Estop);
}

#[test]
fn saf_001_stale_heartbeat_latches() {
    let mut rig = Rig::started(config());
    // The hardware source has max_age_ms = 100; stop refreshing it.
    rig.estop[EstopSource::Hardware.index()] = EstopReport::Clear(rig.now);
    let mut latched_at = None;
    for tick in 0..20 {
        rig.now = rig.now.add_nanos(PERIOD_NS);
        let cmd = Command::base(CommandSource::LocalPolicy, rig.now, 0.2, 0.0, 0.0);
        let inputs = rig.w.inputs();
        let v = rig.safety.evaluate(&inputs, &cmd, rig.w.now);
        if v.reasons.contains(Reason::EstopSourceStale) {
            latched_at = Some(tick);
            break;
        }
    }
    // Ages 10..=100 ms are fine; 110 ms is stale.
    assert_eq!(latched_at, Some(10));
}

#[test]
fn saf_001_category_0_removes_power_at_once() {
    let mut rig = Rig::started(config_with("estop", "stop_category", "0"));
    moving(&mut rig, 1.0);
    rig.press(EstopSource::Hardware);
    let v = rig.drive(1.0, 0.0, 0.0);
    assert_eq!(v.command.base, Twist::default());
    assert!(!v.power_enabled);
    assert_eq!(v.stop_category, Some(StopCategory::Cat0));
}

#[test]
fn saf_001_category_1_brakes_at_the_configured_deceleration_then_removes_power() {
    let mut rig = Rig::started(config());
    moving(&mut rig, 1.0);
    rig.press(EstopSource::Hardware);
    // brake_decel_mps2 = 2.0, 10 ms ticks: 0.02 m/s less per tick, 50 ticks to zero (51 with
    // rounding); power stays on while moving and goes off at standstill.
    let mut previous = 1.0;
    let mut ticks = 0;
    while previous != 0.0 && ticks < 60 {
        let v = rig.drive(1.0, 0.0, 0.0);
        let vx = v.command.base.vx_mps;
        assert!(
            previous - vx <= 0.02 + 1e-9 && (vx == 0.0 || previous - vx >= 0.02 - 1e-9),
            "{previous} -> {vx}"
        );
        assert_eq!(v.power_enabled, vx != 0.0);
        assert_eq!(v.stop_category, Some(StopCategory::Cat1));
        previous = vx;
        ticks += 1;
    }
    assert!((50..=51).contains(&ticks), "{ticks}");
    assert!(!rig.drive(1.0, 0.0, 0.0).power_enabled);
}

#[test]
fn saf_001_category_2_brakes_then_holds_with_power() {
    let mut rig = Rig::started(config_with("estop", "stop_category", "2"));
    moving(&mut rig, 1.0);
    rig.press(EstopSource::Cloud);
    let first = rig.drive(1.0, 0.0, 0.0);
    assert!(close(first.command.base.vx_mps, 0.98));
    let v = rig.drive_for(60, 1.0, 0.0, 0.0);
    assert_eq!(v.command.base.vx_mps, 0.0);
    assert!(v.power_enabled);
    // Joints hold: zero velocity.
    assert_eq!(v.command.joints[0].velocity, Some(0.0));
}

// ---------------------------------------------------------------- SAF-002 start-up

#[test]
fn saf_002_starts_latched_until_every_source_has_reported() {
    let mut rig = Rig::unstarted(config());
    assert!(rig.safety.is_latched());
    let v = rig.drive(0.3, 0.0, 0.0);
    assert_eq!(v.action, Action::Estop);
    assert!(v.reasons.contains(Reason::EstopNotReady));
    // All but one source clear: a reset is refused.
    rig.all_sources_clear();
    rig.estop[EstopSource::Cloud.index()] = EstopReport::Unknown;
    rig.reset();
    let v = rig.drive(0.3, 0.0, 0.0);
    assert!(v.reasons.contains(Reason::ResetRefused));
    assert!(v.reasons.contains(Reason::EstopNotReady));
    // Every source reported clear: still latched until the explicit reset.
    rig.release(EstopSource::Cloud);
    let v = rig.drive_for(5, 0.3, 0.0, 0.0);
    assert_eq!(v.action, Action::Estop);
    assert!(!v.reasons.contains(Reason::EstopNotReady));
    rig.reset();
    assert!(rig.drive(0.3, 0.0, 0.0).command.base.vx_mps > 0.0);
}

// ---------------------------------------------------------------- SAF-003 proximity

#[test]
fn saf_003_obstacle_in_protective_zone_stops_motion_toward_it() {
    let mut rig = Rig::started(config());
    moving(&mut rig, 0.5);
    // Contact after 0.1 m; the zone at 0.5 m/s is 0.5·0.05 + 0.5²/4 + 0.05 = 0.1375 m.
    rig.wall(0.0, 0.4, 30);
    let v = rig.drive(0.5, 0.0, 0.0);
    assert_eq!(v.action, Action::Stop);
    assert!(v.reasons.contains(Reason::ProtectiveZone));
    assert_eq!(v.command.base.vx_mps, 0.0);
    assert!((v.clearance_m - 0.1).abs() < 1e-4, "{}", v.clearance_m);
    assert!((v.protective_depth_m - 0.1375).abs() < 1e-6);
}

#[test]
fn saf_003_protective_zone_grows_with_speed() {
    // Contact after 0.2 m: outside the 0.5 m/s zone (0.1375), inside the 1 m/s zone (0.35).
    let mut slow = Rig::started(config());
    moving(&mut slow, 0.5);
    slow.wall(0.0, 0.5, 30);
    let v = slow.drive(0.5, 0.0, 0.0);
    assert_eq!(v.action, Action::Slow, "{v:?}");
    assert!(v.command.base.vx_mps > 0.0);

    let mut fast = Rig::started(config());
    moving(&mut fast, 1.0);
    fast.wall(0.0, 0.5, 30);
    let v = fast.drive(1.0, 0.0, 0.0);
    assert_eq!(v.action, Action::Stop, "{v:?}");
    assert_eq!(v.command.base.vx_mps, 0.0);
}

#[test]
fn saf_003_slowdown_zone_scales_speed_linearly() {
    let mut rig = Rig::started(config());
    moving(&mut rig, 0.5);
    // Contact 0.2 m; zone 0.1375; slow-down depth 0.5: scale (0.2 - 0.1375) / 0.5 = 0.125.
    rig.wall(0.0, 0.5, 30);
    let v = rig.drive(0.5, 0.0, 0.0);
    assert!(v.reasons.contains(Reason::SlowdownZone));
    assert!((v.command.base.vx_mps - 0.5 * 0.125).abs() < 1e-4, "{v:?}");
}

#[test]
fn saf_003_robot_beside_a_wall_may_drive_away_along_it_or_rotate() {
    let mut rig = Rig::started(config());
    // Wall parallel to the left side, 0.02 m from the footprint and inside the 0.36 m
    // circumradius, so rotating would swing the front-left corner into it.
    rig.wall(FRAC_PI_2, 0.22, 60);
    let v = rig.drive_for(5, 0.0, -0.3, 0.0);
    assert!(close(v.command.base.vy_mps, -0.3), "away: {v:?}");
    let mut rig = Rig::started(config());
    rig.wall(FRAC_PI_2, 0.22, 60);
    let v = rig.drive_for(5, 0.3, 0.0, 0.0);
    assert!(close(v.command.base.vx_mps, 0.3), "along: {v:?}");
    let mut rig = Rig::started(config());
    rig.wall(FRAC_PI_2, 0.22, 60);
    let v = rig.drive(0.0, 0.0, 1.0);
    assert_eq!(v.command.base.wz_radps, 0.0, "a corner would hit: {v:?}");
    assert!(v.reasons.contains(Reason::ProtectiveZone));
    // With the wall beyond the circumradius, rotating in place is free.
    let mut rig = Rig::started(config());
    rig.wall(FRAC_PI_2, 0.45, 60);
    let v = rig.drive_for(5, 0.0, 0.0, 1.0);
    assert!(close(v.command.base.wz_radps, 1.0), "rotate: {v:?}");
}

#[test]
fn saf_003_lateral_motion_of_a_holonomic_base_is_checked() {
    let mut rig = Rig::started(config());
    // Obstacle on the left, 0.04 m from the footprint.
    rig.obstacle(FRAC_PI_2, 0.24, 3);
    let v = rig.drive(0.0, 0.3, 0.0);
    assert_eq!(v.command.base.vy_mps, 0.0);
    assert!(v.reasons.contains(Reason::ProtectiveZone));
    let v = rig.drive_for(5, 0.0, -0.3, 0.0);
    assert!(close(v.command.base.vy_mps, -0.3), "{v:?}");
}

#[test]
fn saf_003_a_person_about_to_step_into_the_path_counts() {
    // 1 m ahead, 0.6 m left of the centre line: off the swept path (0.4 m beside it), but at
    // 1.6 m/s a person closes 0.4 m well within the 0.55 s the robot needs to stop from 1 m/s.
    for (intrusion, expected) in [("0.0", Action::Pass), ("1.6", Action::Slow)] {
        let mut rig = Rig::started(config_with("lidar", "intrusion_speed_mps", intrusion));
        moving(&mut rig, 1.0);
        let (x, y) = (1.0f32, 0.6f32);
        rig.obstacle(y.atan2(x), x.hypot(y), 3);
        let v = rig.drive(1.0, 0.0, 0.0);
        assert_eq!(v.action, expected, "intrusion {intrusion}: {v:?}");
    }
}

#[test]
fn saf_003_rotation_is_direction_aware() {
    // Two points at 0.35 m, 0.49-0.51 rad: just clockwise of the front-left corner's arc
    // window. Turning clockwise sweeps the corner into them; counter-clockwise moves away.
    let mut rig = Rig::started(config());
    let i = rig.beam(0.489);
    rig.ranges[i] = 0.35;
    let i = rig.beam(0.506);
    rig.ranges[i] = 0.35;
    let v = rig.drive(0.0, 0.0, -1.0);
    assert_eq!(v.command.base.wz_radps, 0.0, "{v:?}");
    assert!(v.reasons.contains(Reason::ProtectiveZone));
    let mut rig = Rig::started(config());
    let i = rig.beam(0.489);
    rig.ranges[i] = 0.35;
    let i = rig.beam(0.506);
    rig.ranges[i] = 0.35;
    let v = rig.drive_for(5, 0.0, 0.0, 1.0);
    assert!(close(v.command.base.wz_radps, 1.0), "{v:?}");
}

// ---------------------------------------------------------------- SAF-004 noise, hysteresis

#[test]
fn saf_004_one_noisy_beam_does_not_stop_the_robot() {
    let mut rig = Rig::started(config());
    moving(&mut rig, 0.5);
    rig.obstacle(0.0, 0.35, 1);
    let v = rig.drive(0.5, 0.0, 0.0);
    assert_eq!(v.action, Action::Pass, "{v:?}");
    rig.obstacle(0.0, 0.35, 2);
    assert_eq!(rig.drive(0.5, 0.0, 0.0).action, Action::Stop);
}

#[test]
fn saf_004_a_stop_does_not_chatter() {
    let mut rig = Rig::started(config());
    moving(&mut rig, 0.5);
    rig.wall(0.0, 0.4, 30);
    assert_eq!(rig.drive(0.5, 0.0, 0.0).action, Action::Stop);
    // From standstill the zone is 0.0575 m (ramped 0.1 m/s); the obstacle at 0.1 m would be
    // outside it, but the hysteresis (0.05 m) keeps the stop.
    for _ in 0..10 {
        let v = rig.drive(0.5, 0.0, 0.0);
        assert_eq!(v.command.base.vx_mps, 0.0, "{v:?}");
    }
    // A one-scan dropout (and a single surviving beam) does not restart the robot.
    rig.clear_scan();
    rig.obstacle(0.0, 0.4, 1);
    let v = rig.drive(0.5, 0.0, 0.0);
    assert_eq!(v.command.base.vx_mps, 0.0, "{v:?}");
    rig.wall(0.0, 0.4, 30);
    assert_eq!(rig.drive(0.5, 0.0, 0.0).command.base.vx_mps, 0.0);
    // Really clear: released only after release_delay_ms = 200 of continuous clearance.
    rig.clear_scan();
    let mut released_after = None;
    for tick in 0..30 {
        if rig.drive(0.5, 0.0, 0.0).command.base.vx_mps > 0.0 {
            released_after = Some(tick);
            break;
        }
    }
    assert_eq!(released_after, Some(20));
}

// ---------------------------------------------------------------- SAF-005 invalid data

#[test]
fn saf_005_invalid_beams_in_the_direction_of_motion_stop_it() {
    let mut rig = Rig::started(config());
    for d in -40..=40 {
        let i = rig.beam((d as f32).to_radians());
        rig.ranges[i] = f32::NAN;
    }
    let v = rig.drive(0.3, 0.0, 0.0);
    assert_eq!(v.command.base.vx_mps, 0.0);
    assert!(v.reasons.contains(Reason::InvalidBeams));
    let v = rig.drive_for(5, -0.3, 0.0, 0.0);
    assert!(
        close(v.command.base.vx_mps, -0.3),
        "away from the blind sector: {v:?}"
    );
}

#[test]
fn saf_005_laser_scan_conventions() {
    // +inf: no return, clear.
    let mut rig = Rig::started(config());
    rig.obstacle(0.0, f32::INFINITY, 40);
    assert_eq!(rig.drive_for(5, 0.3, 0.0, 0.0).action, Action::Pass);
    // -inf: an object closer than range_min: treated as touching the robot.
    let mut rig = Rig::started(config());
    rig.obstacle(0.0, f32::NEG_INFINITY, 2);
    let v = rig.drive(0.3, 0.0, 0.0);
    assert!(v.reasons.contains(Reason::FootprintIntrusion), "{v:?}");
    assert_eq!(v.command.base.vx_mps, 0.0);
    // Below range_min and beyond range_max: invalid.
    for bad in [0.01f32, 31.0] {
        let mut rig = Rig::started(config());
        rig.obstacle(0.0, bad, 80);
        let v = rig.drive(0.3, 0.0, 0.0);
        assert!(v.reasons.contains(Reason::InvalidBeams), "{bad}: {v:?}");
    }
}

#[test]
fn saf_005_missing_stale_or_malformed_scan_stops() {
    let mut rig = Rig::started(config());
    rig.scan_present = false;
    let v = rig.drive(0.3, 0.0, 0.0);
    assert!(v.reasons.contains(Reason::ScanMissing));
    assert_eq!(v.command.base, Twist::default());

    let mut rig = Rig::started(config());
    rig.scan_age_ns = 100_000_001;
    assert!(rig.drive(0.3, 0.0, 0.0).reasons.contains(Reason::ScanStale));
    rig.scan_age_ns = 100_000_000;
    assert!(!rig.drive(0.3, 0.0, 0.0).reasons.contains(Reason::ScanStale));

    let mut rig = Rig::started(config());
    rig.ranges = vec![f32::INFINITY; 361];
    assert!(
        rig.drive(0.3, 0.0, 0.0)
            .reasons
            .contains(Reason::ScanInvalid)
    );

    let mut rig = Rig::started(config());
    rig.angle_increment = f32::NAN;
    assert!(
        rig.drive(0.3, 0.0, 0.0)
            .reasons
            .contains(Reason::ScanInvalid)
    );

    let mut rig = Rig::started(config());
    rig.ranges.clear();
    assert!(
        rig.drive(0.3, 0.0, 0.0)
            .reasons
            .contains(Reason::ScanInvalid)
    );
}

#[test]
fn saf_005_scan_from_the_future_stops() {
    let mut rig = Rig::started(config());
    rig.now = rig.now.add_nanos(PERIOD_NS);
    let future = rig.now.add_nanos(5_000_000);
    let mut inputs = rig.w.inputs();
    if let Some(scan) = inputs.scan.as_mut() {
        scan.stamp = future;
    }
    let cmd = Command::base(CommandSource::LocalPolicy, rig.now, 0.3, 0.0, 0.0);
    let v = rig.safety.evaluate(&inputs, &cmd, rig.w.now);
    assert!(v.reasons.contains(Reason::ScanStale));
    assert_eq!(v.action, Action::Stop);
}

#[test]
fn saf_005_motion_outside_the_field_of_view_stops() {
    let mut rig = Rig::started(config());
    rig.ranges = vec![f32::INFINITY; 181];
    rig.angle_min = -FRAC_PI_2;
    rig.angle_increment = PI / 180.0;
    let v = rig.drive(-0.3, 0.0, 0.0);
    assert!(v.reasons.contains(Reason::MotionUnobserved), "{v:?}");
    assert_eq!(v.command.base.vx_mps, 0.0);
    let v = rig.drive_for(5, 0.3, 0.0, 0.0);
    assert!(close(v.command.base.vx_mps, 0.3));
    // Straight left is the edge of this field of view (observed); back-left at 135° is not.
    let mut rig = Rig::started(config());
    rig.ranges = vec![f32::INFINITY; 181];
    rig.angle_min = -FRAC_PI_2;
    rig.angle_increment = PI / 180.0;
    let v = rig.drive(0.0, 0.1, 0.0);
    assert!(close(v.command.base.vy_mps, 0.1), "{v:?}");
    let mut rig = Rig::started(config());
    rig.ranges = vec![f32::INFINITY; 181];
    rig.angle_min = -FRAC_PI_2;
    rig.angle_increment = PI / 180.0;
    let v = rig.drive(-0.1, 0.1, 0.0);
    assert!(v.reasons.contains(Reason::MotionUnobserved), "{v:?}");
    assert_eq!(v.command.base.vy_mps, 0.0);
}

#[test]
fn saf_005_joint_state_missing_stale_or_invalid_stops() {
    let mut rig = Rig::started(config());
    rig.joints_present = false;
    assert!(
        rig.drive(0.0, 0.0, 0.0)
            .reasons
            .contains(Reason::JointStateMissing)
    );

    let mut rig = Rig::started(config());
    rig.positions[1] = f64::NAN;
    let v = rig.step(arm_command([Some(0.1), None], [None, None]));
    assert!(v.reasons.contains(Reason::JointStateInvalid));
    assert_eq!(v.action, Action::Stop);

    let mut rig = Rig::started(config());
    rig.positions.push(0.0);
    assert!(
        rig.drive(0.0, 0.0, 0.0)
            .reasons
            .contains(Reason::JointStateInvalid)
    );

    let mut rig = Rig::started(config());
    rig.now = rig.now.add_nanos(PERIOD_NS);
    let mut inputs = rig.w.inputs();
    if let Some(js) = inputs.joint_state.as_mut() {
        js.stamp = Monotonic::from_nanos(rig.now.as_nanos() - 50_000_001);
    }
    let cmd = Command::base(CommandSource::LocalPolicy, rig.now, 0.0, 0.0, 0.0);
    let v = rig.safety.evaluate(&inputs, &cmd, rig.w.now);
    assert!(v.reasons.contains(Reason::JointStateStale));
}

#[test]
fn saf_005_required_odometry_is_checked() {
    let mut rig = Rig::started(config_with("base", "odometry_max_age_ms", "50.0"));
    // The rig feeds no odometry.
    let v = rig.drive(0.3, 0.0, 0.0);
    assert!(v.reasons.contains(Reason::OdometryMissing));
    assert_eq!(v.action, Action::Stop);
}

// ---------------------------------------------------------------- SAF-006 limits

#[test]
fn saf_006_base_velocity_and_acceleration_limits() {
    let mut rig = Rig::started(config());
    let v = rig.drive(5.0, -5.0, 9.0);
    assert!(v.reasons.contains(Reason::VelocityLimit));
    assert!(v.reasons.contains(Reason::AccelLimit));
    // First tick: 10 m/s² and 20 rad/s² over 10 ms.
    assert!(close(v.command.base.vx_mps, 0.1));
    assert!(close(v.command.base.vy_mps, -0.1));
    assert!(close(v.command.base.wz_radps, 0.2));
    let v = rig.drive_for(20, 5.0, -5.0, 9.0);
    assert!(close(v.command.base.vx_mps, 1.0));
    assert!(close(v.command.base.vy_mps, -0.5));
    assert!(close(v.command.base.wz_radps, 1.5));
    assert_eq!(v.action, Action::Clamp);
}

#[test]
fn saf_006_a_reversal_brakes_to_measured_standstill_first() {
    // Without odometry: straight to zero at the brake limit (2 m/s², not the 10 m/s² ramp).
    let mut rig = Rig::started(config());
    moving(&mut rig, 0.5);
    let v = rig.drive(-0.5, 0.0, 0.0);
    assert!(close(v.command.base.vx_mps, 0.48), "{v:?}");
    // With odometry: no reversed setpoint while the base still moves forward (a drive ramps a
    // reversed setpoint at its acceleration limit, not its brake).
    let mut rig = Rig::started(config());
    moving(&mut rig, 0.5);
    let v = rig.drive_for(30, 0.0, 0.0, 0.0);
    assert_eq!(v.command.base.vx_mps, 0.0);
    for (measured, reverses) in [(0.3, false), (0.0, true)] {
        rig.w.now = rig.w.now.add_nanos(PERIOD_NS);
        rig.w.release(EstopSource::Hardware);
        let mut inputs = rig.w.inputs();
        inputs.odometry = Some(Odometry {
            stamp: rig.w.now,
            twist: Twist {
                vx_mps: measured,
                ..Twist::default()
            },
        });
        let cmd = Command::base(CommandSource::LocalPolicy, rig.w.now, -0.5, 0.0, 0.0);
        let v = rig.safety.evaluate(&inputs, &cmd, rig.w.now);
        assert_eq!(v.command.base.vx_mps < 0.0, reverses, "{measured}: {v:?}");
    }
}

#[test]
fn saf_003_an_old_scan_widens_the_protective_zone() {
    // At 1 m/s the zone is 1·0.05 + 1/(2·2) + 0.05 = 0.35 m past the front (0.3 m): a wall
    // at 0.70 m is outside it with a fresh scan, inside once the scan is 90 ms old.
    for (age_ms, blocked) in [(0u64, false), (90, true)] {
        let mut rig = Rig::started(config());
        moving(&mut rig, 1.0);
        rig.wall(0.0, 0.70, 30);
        rig.scan_age_ns = age_ms * 1_000_000;
        let v = rig.drive(1.0, 0.0, 0.0);
        assert_eq!(
            v.reasons.contains(Reason::ProtectiveZone),
            blocked,
            "{age_ms} ms: {v:?}"
        );
    }
}

#[test]
fn saf_006_differential_base_never_moves_sideways() {
    let mut cfg = config();
    let base = cfg.base.as_mut().unwrap();
    base.kind = BaseKind::Differential;
    let mut rig = Rig::started(cfg);
    let v = rig.drive(0.0, 0.3, 0.0);
    assert_eq!(v.command.base.vy_mps, 0.0);
    assert!(v.reasons.contains(Reason::NonHolonomic));
}

#[test]
fn saf_006_joint_position_limits_and_rate() {
    let mut rig = Rig::started(config());
    // shoulder: [-1, 1] rad, 1 rad/s, 5 rad/s²: from the measured 0 at rest, the first 10 ms
    // tick may reach 0.05 rad/s, so 0.0005 rad.
    let v = rig.step(arm_command([Some(2.0), Some(-3.0)], [None, None]));
    assert!(v.reasons.contains(Reason::JointPositionLimit));
    assert!(v.reasons.contains(Reason::JointVelocityLimit));
    assert!(v.reasons.contains(Reason::AccelLimit));
    assert!(close(v.command.joints[0].position.unwrap(), 0.0005));
    // The velocity the target implies is sent with it (for a trajectory controller).
    assert!(close(v.command.joints[0].velocity.unwrap(), 0.05));
    // elbow: [0, 2], measured 1.0, 0.5 rad/s, 2 rad/s² ⇒ 1.0 - 0.0002.
    assert!(close(v.command.joints[1].position.unwrap(), 0.9998));
    // Speed grows by at most a·dt per tick up to max_velocity, then the target is reached
    // without overshoot (it brakes at a before it), exactly at the position limit.
    let mut previous = v.command.joints[0];
    let mut peak: f64 = 0.0;
    for _ in 0..300 {
        let v = rig.step(arm_command([Some(2.0), Some(-3.0)], [None, None]));
        let j = v.command.joints[0];
        let (p, vel) = (j.position.unwrap(), j.velocity.unwrap());
        assert!(p <= 1.0 && vel.abs() <= 1.0 + 1e-9, "{j:?}");
        assert!(
            (vel - previous.velocity.unwrap()).abs() <= 0.05 + 1e-9,
            "{previous:?} -> {j:?}"
        );
        assert!(
            p >= previous.position.unwrap(),
            "never back: {previous:?} -> {j:?}"
        );
        peak = peak.max(vel);
        previous = j;
    }
    assert!(close(peak, 1.0), "{peak}");
    let v = rig.step(arm_command([Some(2.0), Some(-3.0)], [None, None]));
    assert_eq!(v.command.joints[0].position, Some(1.0));
    assert_eq!(v.command.joints[0].velocity, Some(0.0));
    assert_eq!(v.command.joints[1].position, Some(0.0));
}

#[test]
fn saf_001_category_1_decelerates_a_position_driven_arm_along_its_path() {
    let mut rig = Rig::started(config());
    // Shoulder up to speed (1 rad/s after 20 ticks at 5 rad/s²), then an E-stop.
    let mut p = 0.0;
    for _ in 0..40 {
        let v = rig.step(arm_command([Some(1.0), None], [None, None]));
        p = v.command.joints[0].position.unwrap();
        rig.positions[0] = p;
    }
    rig.press(EstopSource::Hardware);
    let mut speed = 1.0;
    let mut ticks = 0;
    loop {
        let v = rig.step(arm_command([Some(1.0), None], [None, None]));
        assert_eq!(v.stop_category, Some(StopCategory::Cat1));
        let j = v.command.joints[0];
        let (q, vel) = (j.position.unwrap(), j.velocity.unwrap());
        // 0.05 rad/s less per tick (5 rad/s²), still moving forward along the path.
        assert!(close(speed - vel, 0.05) || vel == 0.0, "{speed} -> {vel}");
        assert!(q >= p && close(q - p, vel * 0.01), "{p} -> {q} at {vel}");
        assert_eq!(v.power_enabled, vel != 0.0);
        ticks += 1;
        if vel == 0.0 {
            break;
        }
        (speed, p) = (vel, q);
        rig.positions[0] = q;
        assert!(ticks < 30);
    }
    assert!((19..=21).contains(&ticks), "{ticks}");
}

#[test]
fn saf_015_a_joint_that_does_not_follow_stops_the_arm_where_it_is() {
    let mut rig = Rig::started(config_with("arm", "max_following_error", "0.1"));
    // Tracking: measured follows the target; the shoulder speeds up to 1 rad/s.
    for _ in 0..30 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        assert!(!v.reasons.contains(Reason::FollowingError), "{v:?}");
        rig.positions[0] = v.command.joints[0].position.unwrap();
    }
    let at = rig.positions[0];
    assert!(at > 0.1, "{at}");
    // Blocked: the shoulder stays while targets walk on (0.01 rad per tick) until 0.1 rad
    // ahead ⇒ a protective stop that latches.
    let mut stopped = None;
    for tick in 0..20 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        if v.reasons.contains(Reason::FollowingError) {
            stopped = Some((tick, v));
            break;
        }
    }
    let (tick, v) = stopped.expect("a blocked joint stops the arm");
    assert!(tick <= 11, "stopped after {tick} ticks");
    assert_eq!(v.action, Action::Estop);
    assert!(rig.safety.is_latched());
    // Held where it is measured, at rest: it does not push on against what blocks it.
    assert_eq!(v.command.joints[0].position, Some(at));
    assert_eq!(v.command.joints[0].velocity, Some(0.0));
    // Latched: the policy's targets do not move it, even once the block is gone.
    for _ in 0..50 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        assert_eq!(v.command.joints[0].position, Some(at), "{v:?}");
        assert!(v.reasons.contains(Reason::EstopLatched));
    }
    // Pushed back 0.5 rad by a person while latched, then reset: targets restart from the
    // measured pose at rest, one acceleration-limited step at a time — never pulling back to
    // the old target.
    rig.positions[0] = at - 0.5;
    rig.reset();
    let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
    assert!(!rig.safety.is_latched(), "{v:?}");
    assert!(!v.reasons.contains(Reason::FollowingError), "{v:?}");
    assert!(
        close(v.command.joints[0].position.unwrap(), at - 0.5 + 0.0005),
        "{v:?}"
    );
    // Without the bound (the default) the same block is not noticed.
    let mut rig = Rig::started(config());
    for _ in 0..40 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        assert!(!v.reasons.contains(Reason::FollowingError));
    }
}

#[test]
fn saf_015_a_stale_joint_state_brakes_along_the_path_without_a_following_error() {
    // The shoulder at 1 rad/s, tracked; then the joint state goes stale (a lossy link, a
    // driver that hangs): the measured pose is frozen while the stop brakes along the path
    // (1 rad/s at 5 rad/s²: 0.1 rad, twice the bound). That is no following error: no latch,
    // and the arm is never held at the stale pose (pulled back along its path).
    let mut rig = Rig::started(config_with("arm", "max_following_error", "0.05"));
    for _ in 0..30 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        rig.positions[0] = v.command.joints[0].position.unwrap();
    }
    let frozen = rig.positions[0];
    rig.joint_age_ns = 80_000_000;
    let mut last = frozen;
    for _ in 0..40 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        assert!(v.reasons.contains(Reason::JointStateStale), "{v:?}");
        assert!(!v.reasons.contains(Reason::FollowingError), "{v:?}");
        let p = v.command.joints[0].position.unwrap();
        assert!(p >= last, "never back along the path: {last} -> {p}");
        last = p;
    }
    assert!(!rig.safety.is_latched());
    assert!(
        last - frozen > 0.05,
        "braked {:.3} rad past the stale pose",
        last - frozen
    );
    // Fresh again where the braking took it: it follows, nothing latched.
    rig.positions[0] = last;
    rig.joint_age_ns = 0;
    let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
    assert!(!v.reasons.contains(Reason::FollowingError), "{v:?}");
    assert!(!rig.safety.is_latched());
    // A blocked joint on a fresh state still latches at once (the check is gated, not gone).
    for _ in 0..30 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        if v.reasons.contains(Reason::FollowingError) {
            break;
        }
    }
    assert!(
        rig.safety.is_latched(),
        "a fresh blocked joint still stops the arm"
    );
}

#[test]
fn saf_015_latched_and_at_rest_the_hold_yields_to_a_push_and_never_springs_back() {
    let mut rig = Rig::started(config_with("arm", "max_following_error", "0.1"));
    for _ in 0..30 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        rig.positions[0] = v.command.joints[0].position.unwrap();
    }
    let at = rig.positions[0];
    // Blocked until the following error latches (held at `at`, at rest).
    for _ in 0..20 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        if v.reasons.contains(Reason::FollowingError) {
            break;
        }
    }
    assert!(rig.safety.is_latched());
    // A small error (gravity, the drive's lag: under a tenth of the bound) keeps the hold:
    // it does not creep.
    rig.positions[0] = at - 0.005;
    let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
    assert_eq!(v.command.joints[0].position, Some(at), "{v:?}");
    // A person pushes it 0.3 rad back and holds it: the hold goes with them (the drive never
    // pushes back under power) ...
    rig.positions[0] = at - 0.3;
    let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
    assert_eq!(v.command.joints[0].position, Some(at - 0.3), "{v:?}");
    assert_eq!(v.command.joints[0].velocity, Some(0.0));
    // ... and when they let go it stays there: no spring back toward them.
    for _ in 0..20 {
        let v = rig.step(arm_command([Some(1.0), Some(1.0)], [None, None]));
        assert_eq!(v.command.joints[0].position, Some(at - 0.3), "{v:?}");
        assert!(rig.safety.is_latched());
    }
}

#[test]
fn saf_018_a_joint_held_where_it_is_stops_the_arm_though_its_targets_never_run_far_ahead() {
    // A closed-loop policy re-plans from the measured pose: every target is 0.03 rad ahead of
    // where the shoulder is measured, so the following error (bound 0.1) never grows.
    let stall = "{ min_error = 0.02, time_ms = 300.0 }";
    let with = |stall: Option<&str>| {
        let mut c = config_with("arm", "max_following_error", "0.1");
        if let Some(s) = stall {
            c.arm.as_mut().unwrap().stall = Some(
                toml::from_str(&format!("x = {s}"))
                    .map(|t: toml::Table| t["x"].clone().try_into().unwrap())
                    .unwrap(),
            );
        }
        c
    };
    let mut rig = Rig::started(with(Some(stall)));
    // Moving: the measured shoulder follows one tick behind (a drive's lag): never a stall.
    for _ in 0..100 {
        let target = rig.positions[0] + 0.03;
        let v = rig.step(arm_command(
            [Some(target.min(0.9)), Some(1.0)],
            [None, None],
        ));
        assert!(!v.reasons.contains(Reason::JointStalled), "{v:?}");
        rig.positions[0] = v.command.joints[0].position.unwrap();
    }
    // A drive lagging its targets by four ticks (0.04 rad at full speed), fast and slow, to a
    // stop and back: the gap opens and closes as it moves, never a stall.
    let mut lagging = Rig::started(with(Some(stall)));
    let mut sent = std::collections::VecDeque::from([0.0; 4]);
    for (goal, ticks) in [(0.8, 150), (0.75, 60), (-0.5, 250), (-0.5, 60)] {
        for _ in 0..ticks {
            let v = lagging.step(arm_command([Some(goal), Some(1.0)], [None, None]));
            assert!(!v.reasons.contains(Reason::JointStalled), "{v:?}");
            sent.push_back(v.command.joints[0].position.unwrap());
            lagging.positions[0] = sent.pop_front().unwrap();
        }
    }
    // Holding a still target with a sag of 0.05 rad (gravity): the target does not move, so
    // this is no stall either.
    let held = rig.positions[0];
    for _ in 0..60 {
        let v = rig.step(arm_command([Some(held), Some(1.0)], [None, None]));
        rig.positions[0] = v.command.joints[0].position.unwrap();
    }
    rig.positions[0] -= 0.05;
    for _ in 0..60 {
        let v = rig.step(arm_command([Some(held), Some(1.0)], [None, None]));
        assert!(!v.reasons.contains(Reason::JointStalled), "{v:?}");
    }
    // Blocked where it is (a hand in the way): targets keep coming 0.03 rad ahead of the
    // measured pose ⇒ after 0.3 s of pushing, a protective stop that latches.
    let mut rig = Rig::started(with(Some(stall)));
    let at = 0.2;
    rig.positions[0] = at;
    let mut stopped = None;
    for tick in 0..80 {
        let v = rig.step(arm_command([Some(at + 0.03), Some(1.0)], [None, None]));
        assert!(!v.reasons.contains(Reason::FollowingError), "{v:?}");
        if v.reasons.contains(Reason::JointStalled) {
            stopped = Some((tick, v));
            break;
        }
    }
    let (tick, v) = stopped.expect("a joint held where it is stops the arm");
    assert!((28..=40).contains(&tick), "stopped after {tick} ticks");
    assert_eq!(v.action, Action::Estop);
    assert!(rig.safety.is_latched());
    assert_eq!(v.command.joints[0].position, Some(at));
    assert_eq!(v.command.joints[0].velocity, Some(0.0));
    // Pushed 0.03 rad from a still target at rest (no stall: nothing holds it against the
    // target), then the policy drives the target on into the hand: a stall.
    let mut rig = Rig::started(with(Some(stall)));
    for _ in 0..100 {
        let v = rig.step(arm_command([Some(at), Some(1.0)], [None, None]));
        rig.positions[0] = v.command.joints[0].position.unwrap();
    }
    assert_eq!(rig.positions[0], at);
    rig.positions[0] = at - 0.03;
    for _ in 0..60 {
        let v = rig.step(arm_command([Some(at), Some(1.0)], [None, None]));
        assert!(!v.reasons.contains(Reason::JointStalled), "{v:?}");
    }
    let latched = (0..60).any(|_| {
        rig.step(arm_command([Some(at + 0.05), Some(1.0)], [None, None]))
            .reasons
            .contains(Reason::JointStalled)
    });
    assert!(latched, "driven into the hand that holds it: a stall");
    // Every fifth joint state stale (a lossy link): the window pauses, it does not restart.
    let mut rig = Rig::started(with(Some(stall)));
    rig.positions[0] = at;
    let mut stalled = false;
    for tick in 0..120 {
        rig.joint_age_ns = if tick % 5 == 4 { 80_000_000 } else { 0 };
        let v = rig.step(arm_command([Some(at + 0.03), Some(1.0)], [None, None]));
        stalled |= v.reasons.contains(Reason::JointStalled);
    }
    assert!(stalled, "a lossy joint-state link must not hide a stall");
    // A stale joint state is frozen while targets move on: no stall from it (the staleness
    // itself stops the arm, not latched), and the fresh states after it start a new window.
    let mut rig = Rig::started(with(Some(stall)));
    for _ in 0..20 {
        let target = rig.positions[0] + 0.03;
        let v = rig.step(arm_command([Some(target), Some(1.0)], [None, None]));
        rig.positions[0] = v.command.joints[0].position.unwrap();
    }
    rig.joint_age_ns = 80_000_000;
    for _ in 0..60 {
        let v = rig.step(arm_command([Some(0.9), Some(1.0)], [None, None]));
        assert!(v.reasons.contains(Reason::JointStateStale), "{v:?}");
        assert!(!v.reasons.contains(Reason::JointStalled), "{v:?}");
    }
    assert!(!rig.safety.is_latched());
    // Without stall detection the same block goes on for ever, pushing 0.03 rad ahead.
    let mut rig = Rig::started(with(None));
    rig.positions[0] = at;
    for _ in 0..200 {
        let v = rig.step(arm_command([Some(at + 0.03), Some(1.0)], [None, None]));
        assert!(!rig.safety.is_latched(), "{v:?}");
    }
}

#[test]
fn saf_006_a_stop_decelerates_a_position_driven_arm_along_its_path() {
    // A non-latched stop (here: the joint state goes missing) while the shoulder moves at 1 rad/s: it
    // decelerates at 5 rad/s² along its path instead of freezing its target at once.
    let mut rig = Rig::started(config());
    let mut last = None;
    for _ in 0..40 {
        let v = rig.step(arm_command([Some(1.0), None], [None, None]));
        rig.positions[0] = v.command.joints[0].position.unwrap();
        last = Some(v.command.joints[0]);
    }
    let moving = last.unwrap();
    assert!(close(moving.velocity.unwrap(), 1.0), "{moving:?}");
    rig.joints_present = false;
    let v = rig.step(arm_command([Some(1.0), None], [None, None]));
    assert_eq!(v.action, Action::Stop, "{v:?}");
    let j = v.command.joints[0];
    assert!(close(j.velocity.unwrap(), 0.95), "{j:?}");
    assert!(
        close(j.position.unwrap() - moving.position.unwrap(), 0.0095),
        "{j:?}"
    );
}

#[test]
fn saf_006_joint_velocity_limit_ramp_and_braking_before_the_position_limit() {
    let mut rig = Rig::started(config());
    let v = rig.step(arm_command([None, None], [Some(3.0), None]));
    assert!(v.reasons.contains(Reason::JointVelocityLimit));
    assert!(v.reasons.contains(Reason::AccelLimit));
    assert!(close(v.command.joints[0].velocity.unwrap(), 0.05));
    // Near the upper limit: only as fast as can still stop (√(2·5·0.001) = 0.1 rad/s).
    rig.positions[0] = 0.999;
    let v = (0..20)
        .map(|_| rig.step(arm_command([None, None], [Some(1.0), None])))
        .last()
        .unwrap();
    assert!(
        v.command.joints[0].velocity.unwrap() <= 0.1 + 1e-12,
        "{v:?}"
    );
    assert!(v.reasons.contains(Reason::JointPositionLimit));
    rig.positions[0] = 1.0;
    let v = rig.step(arm_command([None, None], [Some(1.0), None]));
    assert_eq!(v.command.joints[0].velocity, Some(0.0));
    // Away from the limit is fine.
    let v = rig.step(arm_command([None, None], [Some(-0.02), None]));
    assert!(close(v.command.joints[0].velocity.unwrap(), -0.02));
}

#[test]
fn saf_006_gripper_and_workspace_are_clamped() {
    let mut rig = Rig::started(config());
    let mut cmd = arm_command([None, None], [None, None]);
    cmd.gripper_position = Some(0.2);
    cmd.ee_target_m = Some([1.0, 0.0, -0.2]);
    let v = rig.step(cmd);
    assert_eq!(v.command.gripper_position, Some(0.08));
    assert_eq!(v.command.ee_target_m, Some([0.8, 0.0, 0.0]));
    assert!(v.reasons.contains(Reason::GripperLimit));
    assert!(v.reasons.contains(Reason::WorkspaceLimit));
}

#[test]
fn saf_006_non_finite_anywhere_in_a_command_stops() {
    let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    for value in bad {
        let mutations: [fn(&mut Command, f64); 7] = [
            |c, x| c.base.vx_mps = x,
            |c, x| c.base.vy_mps = x,
            |c, x| c.base.wz_radps = x,
            |c, x| c.joints[0].position = Some(x),
            |c, x| c.joints[1].velocity = Some(x),
            |c, x| c.gripper_position = Some(x),
            |c, x| c.ee_target_m = Some([0.3, x, 0.3]),
        ];
        for (i, mutate) in mutations.iter().enumerate() {
            let mut rig = Rig::started(config());
            moving(&mut rig, 0.5);
            let mut cmd = Command::base(
                CommandSource::LocalPolicy,
                Monotonic::default(),
                0.5,
                0.0,
                0.0,
            );
            mutate(&mut cmd, value);
            let v = rig.step(cmd);
            assert!(v.reasons.contains(Reason::InvalidCommand), "{value} #{i}");
            assert_eq!(v.action, Action::Stop);
            assert_eq!(v.command.base, Twist::default());
            // The next good command moves again: a stop for that tick only.
            assert!(rig.drive(0.5, 0.0, 0.0).command.base.vx_mps > 0.0);
        }
    }
}

#[test]
fn saf_006_command_outside_the_action_space_is_invalid() {
    let mut rig = Rig::started(config());
    let mut cmd = arm_command([None, None], [None, None]);
    cmd.joints[5].velocity = Some(0.1);
    assert!(rig.step(cmd).reasons.contains(Reason::InvalidCommand));
}

// ---------------------------------------------------------------- SAF-007 staleness

#[test]
fn saf_007_stale_commands_are_never_executed() {
    for (source, max_age_ms) in [
        (CommandSource::LocalPolicy, 200),
        (CommandSource::Cloud, 300),
        (CommandSource::Operator, 150),
    ] {
        let mut rig = Rig::started(config());
        let next = rig.now.add_nanos(PERIOD_NS);
        let fresh = Command::base(
            source,
            Monotonic::from_nanos(next.as_nanos() - max_age_ms * 1_000_000),
            0.3,
            0.0,
            0.0,
        );
        assert!(
            rig.step(fresh).command.base.vx_mps > 0.0,
            "{source:?} at its max age"
        );
        let next = rig.now.add_nanos(PERIOD_NS);
        let stale = Command::base(
            source,
            Monotonic::from_nanos(next.as_nanos() - max_age_ms * 1_000_000 - 1),
            0.3,
            0.0,
            0.0,
        );
        let v = rig.step(stale);
        assert!(v.reasons.contains(Reason::StaleCommand), "{source:?}");
        assert_eq!(v.command.base, Twist::default());
    }
}

#[test]
fn saf_007_future_or_missing_commands_stop() {
    let mut rig = Rig::started(config());
    let future = rig.now.add_nanos(PERIOD_NS + 1);
    let v = rig.step(Command::base(CommandSource::Cloud, future, 0.3, 0.0, 0.0));
    assert!(v.reasons.contains(Reason::CommandFromFuture));
    assert_eq!(v.action, Action::Stop);
    let v = rig.step(Command::default());
    assert!(v.reasons.contains(Reason::NoCommand));
    assert_eq!(v.command.base, Twist::default());
}

// ---------------------------------------------------------------- SAF-008 authority

#[test]
fn saf_008_config_is_fixed_and_its_hash_reported() {
    let mut rig = Rig::started(config());
    let hash = rig.safety.config_hash_hex();
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    assert_eq!(
        Safety::new(config()).unwrap().config_hash(),
        rig.safety.config_hash()
    );
    assert_ne!(
        Safety::new(config_with("lidar", "margin_m", "0.06"))
            .unwrap()
            .config_hash(),
        rig.safety.config_hash()
    );
    // A hostile cloud: huge, tiny and sign-flipping commands, resets, presses and releases.
    let before = rig.safety.config().clone();
    for i in 0..2_000u32 {
        let x = f64::from(i).sin() * 1e6;
        if i % 97 == 0 {
            rig.press(EstopSource::Cloud);
        } else if i % 97 == 1 {
            rig.release(EstopSource::Cloud);
        }
        if i % 13 == 0 {
            rig.reset();
        }
        let v = rig.step(Command::base(
            CommandSource::Cloud,
            Monotonic::default(),
            x,
            -x,
            x,
        ));
        assert!(v.command.base.vx_mps.abs() <= 1.0);
        assert!(v.command.base.vy_mps.abs() <= 0.5);
        assert!(v.command.base.wz_radps.abs() <= 1.5);
    }
    assert_eq!(rig.safety.config(), &before);
    assert_eq!(rig.safety.config_hash_hex(), hash);
}

// ---------------------------------------------------------------- SAF-010 accounting

#[test]
fn saf_010_every_veto_is_counted() {
    let mut rig = Rig::started(config());
    let n0 = rig.safety.reason_counts()[Reason::ProtectiveZone as usize];
    moving(&mut rig, 0.5);
    rig.wall(0.0, 0.4, 30);
    for _ in 0..7 {
        rig.drive(0.5, 0.0, 0.0);
    }
    assert_eq!(
        rig.safety.reason_counts()[Reason::ProtectiveZone as usize] - n0,
        7
    );
    assert_eq!(rig.safety.evaluations(), 1 + 12 + 7);
}

#[test]
fn clock_going_backwards_stops_for_that_tick() {
    let mut rig = Rig::started(config());
    moving(&mut rig, 0.3);
    let earlier = Monotonic::from_nanos(rig.now.as_nanos() - 5_000_000);
    let inputs = rig.w.inputs();
    let cmd = Command::base(CommandSource::LocalPolicy, earlier, 0.3, 0.0, 0.0);
    let v = rig.safety.evaluate(&inputs, &cmd, earlier);
    assert!(v.reasons.contains(Reason::ClockFault));
    assert!(v.action >= Action::Stop);
    // The hardware heartbeat now lies in the future too, which latches a category 1 stop.
    assert!(v.reasons.contains(Reason::EstopSourceStale));
    assert!(v.command.base.vx_mps < 0.3);
}

// ---------------------------------------------------------------- SAF-016 arm zones

/// Steps the arm toward `targets`, the measured pose following the verdict exactly; returns
/// the last verdict and every commanded pose.
fn follow(rig: &mut Rig, targets: [f64; 2], ticks: usize) -> (Verdict, Vec<[f64; 2]>) {
    let mut poses = Vec::new();
    let mut last = None;
    for _ in 0..ticks {
        let v = rig.step(arm_command(
            [Some(targets[0]), Some(targets[1])],
            [None, None],
        ));
        let q = [
            v.command.joints[0].position.unwrap(),
            v.command.joints[1].position.unwrap(),
        ];
        rig.positions = q.to_vec();
        poses.push(q);
        last = Some(v);
    }
    (last.unwrap(), poses)
}

#[test]
fn saf_016_the_arm_stops_before_a_keep_out_box_and_turns_away_from_it() {
    let k = zoned_kinematics();
    let post = POST;
    let mut rig = Rig::started(zoned(true));
    rig.positions = vec![0.0, 0.0];
    // The shoulder is sent to 1.0 rad, through the post (contact at about 0.34 rad of yaw).
    let (v, poses) = follow(&mut rig, [1.0, 0.0], 200);
    let min = poses
        .iter()
        .map(|q| clearance(&k, q, post))
        .fold(f64::INFINITY, f64::min);
    assert!(min >= -1e-9, "a link entered the post: clearance {min}");
    let yaw = rig.positions[0];
    assert!((0.25..0.34).contains(&yaw), "stopped at {yaw}");
    assert!(v.reasons.contains(Reason::ArmKeepOut), "{v:?}");
    assert_eq!(v.action, Action::Stop);
    assert_eq!(v.command.joints[0].velocity, Some(0.0), "{v:?}");
    // Away from the post it moves at once.
    let (v, _) = follow(&mut rig, [-1.0, 0.0], 5);
    assert!(rig.positions[0] < yaw, "{v:?}");
    assert!(!v.reasons.contains(Reason::ArmKeepOut), "{v:?}");
    // Without the box the same command drives through it to the target.
    let mut rig = Rig::started(zoned(false));
    rig.positions = vec![0.0, 0.0];
    follow(&mut rig, [1.0, 0.0], 200);
    assert!((rig.positions[0] - 1.0).abs() < 1e-9, "{:?}", rig.positions);
}

#[test]
fn saf_016_every_link_stays_in_the_workspace() {
    let mut rig = Rig::started(zoned(false));
    rig.positions = vec![0.0, 0.0];
    // The elbow pitched down toward 2 rad: the tool (radius 0.05) would go through the table
    // at z = 0 from sin(θ) > 0.5, θ > 0.524.
    let (v, poses) = follow(&mut rig, [0.0, 2.0], 300);
    let lowest = poses
        .iter()
        .map(|q| 0.2 - 0.3 * q[1].sin())
        .fold(f64::INFINITY, f64::min);
    assert!(lowest >= 0.05 - 1e-9, "the tool went to z = {lowest}");
    let elbow = rig.positions[1];
    assert!((0.45..0.524).contains(&elbow), "stopped at {elbow}");
    assert!(v.reasons.contains(Reason::ArmWorkspace), "{v:?}");
    // Without kinematics the workspace box only clamps Cartesian targets: the same command
    // reaches its target.
    let mut rig = Rig::started(config());
    rig.positions = vec![0.0, 0.0];
    follow(&mut rig, [0.0, 2.0], 500);
    assert!((rig.positions[1] - 2.0).abs() < 1e-9, "{:?}", rig.positions);
}

#[test]
fn saf_016_an_arm_already_in_a_zone_may_move_out_but_never_deeper() {
    let mut rig = Rig::started(zoned(true));
    // Moved by hand into the edge of the post (tool at yaw 0.45 rad).
    rig.positions = vec![0.45, 0.0];
    let (v, _) = follow(&mut rig, [0.6, 0.0], 20);
    assert!(v.reasons.contains(Reason::ArmKeepOut), "{v:?}");
    assert!(
        (rig.positions[0] - 0.45).abs() < 1e-9,
        "went deeper: {:?}",
        rig.positions
    );
    let (v, _) = follow(&mut rig, [0.0, 0.0], 100);
    assert!(rig.positions[0] < 0.2, "{v:?}");
}

#[test]
fn saf_016_a_link_outside_a_zone_lends_no_allowance_to_another() {
    // The workspace narrowed to |y| <= 0.25 and the elbow pitched down 1.5 rad: the tool is
    // 0.15 m below the table (started there). Yawing the shoulder keeps the tool as deep as it
    // is, but the upper arm (shoulder to elbow, clear) would leave the workspace's side at
    // about 0.73 rad: depths are per link, so it stops there instead of borrowing the tool's.
    let mut narrow = zoned(false);
    let ws = narrow.arm.as_mut().unwrap().workspace.as_mut().unwrap();
    (ws.min_m[1], ws.max_m[1]) = (-0.25, 0.25);
    let mut rig = Rig::started(narrow);
    rig.positions = vec![0.0, 1.5];
    let (v, poses) = follow(&mut rig, [1.0, 1.5], 200);
    assert!(v.reasons.contains(Reason::ArmWorkspace), "{v:?}");
    let furthest = poses.iter().map(|q| q[0]).fold(0.0, f64::max);
    let elbow_y = 0.3 * furthest.sin() + 0.05;
    assert!(
        elbow_y <= 0.25 + 1e-9 && furthest > 0.5,
        "yawed to {furthest} rad: the upper arm reached y = {elbow_y}"
    );
    // Back, and the tool out of the table: free again.
    let (_, poses) = follow(&mut rig, [0.0, 0.0], 600);
    let last = poses.last().unwrap();
    assert!(last[0].abs() < 1e-6 && last[1].abs() < 1e-6, "{last:?}");
}

#[test]
fn saf_016_an_end_effector_target_is_refused_with_a_kinematic_chain() {
    // Without inverse kinematics a Cartesian target cannot be checked link by link.
    let mut rig = Rig::started(zoned(true));
    rig.positions = vec![0.0, 0.0];
    let mut cmd = arm_command([Some(0.0), Some(0.0)], [None, None]);
    cmd.ee_target_m = Some([0.5, 0.0, 0.4]);
    let v = rig.step(cmd);
    assert!(v.reasons.contains(Reason::InvalidCommand), "{v:?}");
    assert_eq!(v.command.ee_target_m, None);
}

#[test]
fn saf_016_a_stop_path_is_checked_not_only_the_next_target() {
    // At 1 rad/s the shoulder needs 0.1 rad to stop (5 rad/s²): it starts braking that far
    // before the post, not when the next target touches it.
    let mut rig = Rig::started(zoned(true));
    rig.positions = vec![0.0, 0.0];
    let (_, poses) = follow(&mut rig, [1.0, 0.0], 200);
    let first_braking = poses
        .windows(3)
        .position(|w| (w[2][0] - w[1][0]) < (w[1][0] - w[0][0]) - 1e-9 && w[1][0] > 0.1)
        .expect("it brakes");
    let at = poses[first_braking][0];
    assert!(at < 0.34 - 0.08, "braking began at {at}");
}

/// Follows `target` for `ticks` while a person walks from `start` toward `end` at `speed`
/// (m/s) and then stands there; the drive tracks exactly. Per tick: the verdict, the commanded
/// pose, and the person's separation from it (the test's own geometry).
fn walk_in(
    rig: &mut Rig,
    target: [f64; 2],
    (start, end, speed): ([f64; 2], [f64; 2], f64),
    ticks: usize,
) -> Vec<(Verdict, [f64; 2], f64)> {
    let k = zoned_kinematics();
    let mut out = Vec::new();
    let length = (end[0] - start[0]).hypot(end[1] - start[1]);
    for t in 0..ticks {
        let walked = (speed * t as f64 * 0.01).min(length);
        let f = if length > 0.0 { walked / length } else { 1.0 };
        let person = [
            start[0] + f * (end[0] - start[0]),
            start[1] + f * (end[1] - start[1]),
        ];
        rig.person_at(person);
        let v = rig.step(arm_command(
            [Some(target[0]), Some(target[1])],
            [None, None],
        ));
        let q = [
            v.command.joints[0].position.unwrap(),
            v.command.joints[1].position.unwrap(),
        ];
        rig.positions = q.to_vec();
        out.push((v, q, person_separation(&k, &q, person)));
    }
    out
}

fn arm_moving(v: &Verdict) -> bool {
    v.command.joints[..2]
        .iter()
        .any(|j| j.velocity.is_some_and(|s| s.abs() > 1e-9))
}

#[test]
fn saf_017_the_arm_slows_as_a_person_approaches_and_is_still_before_they_reach_it() {
    // The shoulder sweeps from -1 rad toward +1 rad (the tool toward +y) while a person walks
    // in along the y axis at 1.6 m/s (the configured human speed) and stops 0.3 m from the
    // arm's base: wherever the arm is then, it would be within reach.
    let mut rig = Rig::started(separated(false));
    rig.positions = vec![-1.0, 0.0];
    let run = walk_in(&mut rig, [1.0, 0.0], ([0.0, 3.0], [0.0, 0.3], 1.6), 300);
    let c = SEPARATION.margin_m;
    // While the arm moves, nobody is within the margin C of it (less the ±1° of the three
    // beams that stand for the person); it has come to rest before they arrive, and stays.
    for (t, (v, q, d)) in run.iter().enumerate() {
        assert!(*d > 0.0, "tick {t}: contact at {q:?}");
        if arm_moving(v) {
            assert!(
                *d > c - 0.02,
                "tick {t}: moving {q:?} with a person {d:.3} m away: {v:?}"
            );
        }
    }
    let slow = run
        .iter()
        .position(|(v, ..)| v.reasons.contains(Reason::ArmSeparationSlow))
        .expect("the arm slowed");
    let stop = run
        .iter()
        .position(|(v, ..)| v.reasons.contains(Reason::ArmSeparation))
        .expect("the arm stopped");
    assert!(slow < stop, "slowed at {slow}, stopped at {stop}");
    let (last, q, d) = run.last().unwrap();
    assert!(!arm_moving(last), "{last:?}");
    assert_eq!(last.action, Action::Stop);
    assert!(q[0] < 1.0 && *d > 0.0, "{q:?} {d}");
    // Gone: the arm moves on by itself (no latch), up to its target.
    rig.clear_scan();
    let (v, _) = follow(&mut rig, [1.0, 0.0], 400);
    assert!((rig.positions[0] - 1.0).abs() < 1e-9, "{v:?}");
    assert!(!v.reasons.contains(Reason::ArmSeparation), "{v:?}");
}

#[test]
fn saf_017_the_allowed_speed_falls_with_the_separation() {
    // The same sweep with a person standing still at several distances along +y: the shoulder
    // passes 0.8 rad (the tool near them) slower the closer they stand, at full speed
    // (1 rad/s) when far, and not at all when they stand within reach of the arm's base.
    let mut speeds = Vec::new();
    for distance in [6.0, 1.0, 0.9, 0.8, 0.7, 0.3] {
        let mut rig = Rig::started(separated(false));
        rig.positions = vec![-1.0, 0.0];
        let run = walk_in(
            &mut rig,
            [1.0, 0.0],
            ([0.0, distance], [0.0, distance], 0.0),
            800,
        );
        let passing = run
            .iter()
            .find(|(_, q, _)| q[0] >= 0.8)
            .map_or(0.0, |(v, ..)| v.command.joints[0].velocity.unwrap());
        let slowed = run.iter().any(|(v, ..)| {
            v.reasons.contains(Reason::ArmSeparationSlow)
                || v.reasons.contains(Reason::ArmSeparation)
        });
        speeds.push((distance, passing, slowed));
    }
    assert!(
        (speeds[0].1 - 1.0).abs() < 1e-9 && !speeds[0].2,
        "{speeds:?}"
    );
    for w in speeds.windows(2) {
        assert!(w[1].1 < w[0].1 || w[1].1 == 0.0, "{speeds:?}");
        assert!(w[1].2, "{speeds:?}");
    }
    assert!(speeds[1].1 > 0.0, "{speeds:?}");
    assert_eq!(speeds.last().unwrap().1, 0.0, "{speeds:?}");
}

#[test]
fn saf_017_a_person_within_reach_holds_a_standing_arm_but_one_noisy_beam_does_not() {
    let mut rig = Rig::started(separated(true));
    rig.positions = vec![0.0, 0.0];
    // 0.25 m from the tool's sphere: inside what a standing arm needs, v_h·T_r + C =
    // 1.6 m/s × (50 ms + 10 ms) + 0.2 m = 0.296 m.
    rig.person_at([0.9, 0.0]);
    let (v, _) = follow(&mut rig, [-1.0, 0.0], 50);
    assert_eq!(rig.positions, vec![0.0, 0.0], "{v:?}");
    assert!(v.reasons.contains(Reason::ArmSeparation), "{v:?}");
    assert_eq!(v.action, Action::Stop);
    // An arm alone reports its separation as the verdict's clearance (within the beams'
    // spacing of the test's own figure).
    let d = person_separation(&zoned_kinematics(), &[0.0, 0.0], [0.9, 0.0]);
    assert!((f64::from(v.clearance_m) - d).abs() < 0.02, "{v:?} vs {d}");
    // One beam (min_points = 2): noise, not a person.
    rig.clear_scan();
    rig.obstacle(0.0, 0.9, 1);
    let (v, _) = follow(&mut rig, [-1.0, 0.0], 50);
    assert!(rig.positions[0] < -0.3, "{v:?}");
    assert!(!v.reasons.contains(Reason::ArmSeparation), "{v:?}");
}

#[test]
fn saf_017_an_arm_only_robot_stops_without_a_fresh_readable_scan() {
    let config = separated(true);
    assert!(config.base.is_none());
    let mut rig = Rig::started(config);
    rig.positions = vec![0.0, 0.0];
    // Clear: full speed to the target.
    let (v, _) = follow(&mut rig, [0.5, 0.0], 100);
    assert!((rig.positions[0] - 0.5).abs() < 1e-9, "{v:?}");
    for (fault, reason) in [
        ("missing", Reason::ScanMissing),
        ("stale", Reason::ScanStale),
        ("invalid beams", Reason::InvalidBeams),
    ] {
        rig.clear_scan();
        rig.scan_present = true;
        rig.scan_age_ns = 0;
        match fault {
            "missing" => rig.scan_present = false,
            "stale" => rig.scan_age_ns = 150_000_000,
            _ => rig.ranges[..BEAMS / 4].fill(f32::NAN),
        }
        let before = rig.positions.clone();
        let (v, _) = follow(&mut rig, [-0.5, 0.0], 30);
        assert!(v.reasons.contains(reason), "{fault}: {v:?}");
        assert_eq!(v.action, Action::Stop, "{fault}");
        assert!(!arm_moving(&v), "{fault}: {v:?}");
        assert!(
            (rig.positions[0] - before[0]).abs() < 0.05,
            "{fault}: {:?}",
            rig.positions
        );
    }
}

#[test]
fn saf_017_a_person_appearing_close_brakes_the_arm_at_its_acceleration_limit() {
    // At full speed toward +y, someone steps out from behind a post 0.6 m from the tool: the
    // speed the separation allows is far below what the joints can reach in a tick, so the arm
    // brakes at max_acceleration (5 rad/s² for the shoulder), never with a jump in speed.
    let mut rig = Rig::started(separated(false));
    rig.positions = vec![-1.0, 0.0];
    let run = walk_in(&mut rig, [1.0, 0.0], ([0.0, 9.0], [0.0, 9.0], 0.0), 100);
    let mut previous = run.last().unwrap().0.command.joints[0].velocity.unwrap();
    assert!((previous - 1.0).abs() < 1e-9, "{previous}");
    let run = walk_in(&mut rig, [1.0, 0.0], ([0.55, 0.6], [0.55, 0.6], 0.0), 40);
    assert!(
        run[0].0.reasons.contains(Reason::ArmSeparation),
        "{:?}",
        run[0].0
    );
    for (t, (v, ..)) in run.iter().enumerate() {
        let now = v.command.joints[0].velocity.unwrap();
        assert!(
            (now - previous).abs() <= 5.0 * 0.01 + 1e-9,
            "tick {t}: {previous} -> {now}"
        );
        previous = now;
    }
    // It brakes until its speed is what the separation allows, then goes on that slowly.
    let (last, ..) = run.last().unwrap();
    let settled = last.command.joints[0].velocity.unwrap();
    assert!(settled > 0.0 && settled < 0.8, "{last:?}");
    assert!(last.reasons.contains(Reason::ArmSeparationSlow), "{last:?}");
}

#[test]
fn saf_017_frames_place_the_arm_where_it_stands_in_the_lidar_frame() {
    // The arm's base 0.5 m ahead of and 0.3 m right of the base origin, turned +90°; the lidar
    // 0.2 m ahead, turned +0.3 rad. The arm at rest points along its own +x: the base's +y. A
    // person 0.25 m beyond its tool (inside what a still arm needs) holds it; the same distance
    // on the arm's other side (where a wrong sign or a missing turn would put the tool) does not.
    let mut cfg = separated(true);
    let sep = cfg.arm.as_mut().unwrap().separation.as_mut().unwrap();
    sep.base_from_arm = Pose2 {
        x_m: 0.5,
        y_m: -0.3,
        yaw_rad: std::f64::consts::FRAC_PI_2,
    };
    cfg.lidar.as_mut().unwrap().base_from_lidar = Pose2 {
        x_m: 0.2,
        y_m: 0.0,
        yaw_rad: 0.3,
    };
    // Arm frame -> base frame -> the lidar's frame (what the scan's beams see).
    let to_lidar = |arm_xy: [f64; 2]| {
        let base = [0.5 - arm_xy[1], -0.3 + arm_xy[0]];
        let (dx, dy) = (base[0] - 0.2, base[1]);
        let (c, s) = (0.3f64.cos(), 0.3f64.sin());
        [c * dx + s * dy, -s * dx + c * dy]
    };
    let mut rig = Rig::started(cfg.clone());
    rig.positions = vec![0.0, 0.0];
    rig.person_at(to_lidar([0.9, 0.0]));
    let (v, _) = follow(&mut rig, [-1.0, 0.0], 30);
    assert_eq!(rig.positions, vec![0.0, 0.0], "{v:?}");
    assert!(v.reasons.contains(Reason::ArmSeparation), "{v:?}");
    for mirrored in [[-0.9, 0.0], [0.0, 0.9], [0.0, -0.9]] {
        let mut rig = Rig::started(cfg.clone());
        rig.positions = vec![0.0, 0.0];
        rig.person_at(to_lidar(mirrored));
        let (v, _) = follow(&mut rig, [-1.0, 0.0], 30);
        assert!(rig.positions[0] < -0.05, "{mirrored:?}: {v:?}");
        assert!(
            !v.reasons.contains(Reason::ArmSeparation),
            "{mirrored:?}: {v:?}"
        );
    }
}

#[test]
fn saf_017_on_a_mobile_base_the_base_speed_counts_and_the_stop_brakes_the_base() {
    // A person 0.7 m beyond the tool, behind the base (the base's footprint zones look only
    // along its motion, forward). The arm alone may move toward them, slowly; with the base
    // driving at 0.8 m/s the links close in faster, and the stop brakes the base as well.
    let cfg = separated(false);
    let mut rig = Rig::started(cfg.clone());
    rig.positions = vec![0.0, 0.0];
    rig.person_at([1.35, 0.0]);
    let (v, _) = follow(&mut rig, [0.3, 0.0], 20);
    assert!(!v.reasons.contains(Reason::ArmSeparation), "{v:?}");
    assert!(rig.positions[0] > 0.01, "{v:?}");
    let mut rig = Rig::started(cfg);
    rig.positions = vec![0.0, 0.0];
    rig.person_at([1.35, 0.0]);
    let mut base_speed = 0.0f64;
    let mut stopped = None;
    for t in 0..60 {
        let mut c = arm_command([Some(0.3), Some(0.0)], [None, None]);
        c.base = Twist {
            vx_mps: 0.0,
            vy_mps: 0.0,
            wz_radps: 1.5,
        };
        let v = rig.step(c);
        rig.positions = vec![
            v.command.joints[0].position.unwrap(),
            v.command.joints[1].position.unwrap(),
        ];
        if v.reasons.contains(Reason::ArmSeparation) && stopped.is_none() {
            stopped = Some((t, base_speed, v.command.base.wz_radps));
        }
        base_speed = v.command.base.wz_radps;
    }
    // The turning base carries the arm's tool (0.65 m out) at up to 1 m/s: stopped, and the
    // base braked at its limit (4 rad/s², 0.04 per tick), not driven on.
    let (t, before, after) = stopped.expect("the arm stopped");
    assert!(
        before > 0.0 && (before - after - 0.04).abs() < 1e-9,
        "tick {t}: {before} -> {after}"
    );
}

// ---------------------------------------------------------------- SAF-019 a cell's static returns

/// The arm-only cell of SAF-017 on a table: a wall 3 m around and four table legs 0.42 m from
/// the arm's base, inside what a standing arm needs (0.296 m from a link: the legs stand
/// 0.1–0.4 m from the links as the shoulder turns).
fn table_cell(w: &mut World) {
    w.ranges.fill(3.0);
    table_legs(w);
}

fn table_legs(w: &mut World) {
    for k in 0..4 {
        let direction = PI / 4.0 + k as f32 * FRAC_PI_2;
        w.obstacle(direction, 0.42, 3);
    }
}

/// The same table in an open hall: nothing else within the scanner's range.
fn open_table(w: &mut World) {
    w.clear_scan();
    table_legs(w);
}

/// The config with a background taught from 4 s of `cell` (20 scans), with the ±0.03 m band.
fn taught(cell: fn(&mut World)) -> (SafetyConfig, Taught) {
    let mut config = separated(true);
    let mut rig = Rig::unstarted(config.clone());
    cell(&mut rig);
    let scans: Vec<Scan<'_>> = (0..20u64)
        .map(|k| Scan {
            stamp: Monotonic::from_nanos(k * 200_000_000),
            ..rig.inputs().scan.unwrap()
        })
        .collect();
    let lidar = config.lidar.as_mut().unwrap();
    let taught =
        teach_background(&scans, 0.03, lidar.base_from_lidar).expect("a still cell teaches");
    lidar.background = Some(taught.background.clone());
    (config, taught)
}

/// A started rig of `config` in `cell`, its arm driven to `to` (asserted reached).
fn reached(config: &SafetyConfig, cell: fn(&mut World), to: f64) -> Rig {
    let mut rig = Rig::started(config.clone());
    rig.positions = vec![0.0, 0.0];
    cell(&mut rig);
    let (v, _) = follow(&mut rig, [to, 0.0], 100);
    assert!(close(rig.positions[0], to), "{v:?}");
    assert!(!v.reasons.contains(Reason::ArmSeparation), "{v:?}");
    rig
}

/// The arm, told to move on, stays where it is, stopped for `reason`.
fn held_for(rig: &mut Rig, reason: Reason, what: &str) {
    let before = rig.positions.clone();
    let (v, _) = follow(rig, [-0.5, 0.0], 30);
    assert!(v.reasons.contains(reason), "{what}: {v:?}");
    assert_eq!(v.action, Action::Stop, "{what}");
    assert!(
        (rig.positions[0] - before[0]).abs() < 0.05,
        "{what}: {:?}",
        rig.positions
    );
}

#[test]
fn saf_019_a_taught_cell_moves_past_its_table_legs_and_still_stops_for_a_person() {
    // Untaught, the legs are people inside the arm's reach: the arm never moves (fail-safe,
    // and what an untaught real cell does).
    let mut rig = Rig::started(separated(true));
    rig.positions = vec![0.0, 0.0];
    table_cell(&mut rig);
    let (v, _) = follow(&mut rig, [0.5, 0.0], 50);
    assert_eq!(rig.positions, vec![0.0, 0.0], "{v:?}");
    assert!(v.reasons.contains(Reason::ArmSeparation), "{v:?}");

    // Taught: every beam has its background (the wall or a leg), and the arm reaches.
    let (config, taught) = taught(table_cell);
    assert_eq!(taught.taught_beams, BEAMS);
    assert!(taught.unsteady_beams.is_empty());
    assert!((taught.nearest_m - 0.42).abs() < 1e-6);
    assert_eq!(taught.objects_within(1.0).len(), 4);
    let mut rig = reached(&config, table_cell, 0.5);

    // A person in the open cell, 0.25 m beyond the tool: held, as without a background.
    rig.obstacle(0.5, 0.85, 3);
    held_for(&mut rig, Reason::ArmSeparation, "a person in the open");

    // A person's hand in front of a leg (nearer than its background): held too.
    table_cell(&mut rig);
    rig.obstacle(PI / 4.0, 0.3, 3);
    held_for(&mut rig, Reason::ArmSeparation, "a hand in front of a leg");
}

#[test]
fn saf_019_a_taught_object_taken_away_hides_nobody_behind_where_it_stood() {
    // A box 0.75 m out along 0.3 rad (11 beams), taught with the cell; the arm turns to it.
    fn with_box(w: &mut World) {
        table_cell(w);
        w.obstacle(0.3, 0.75, 11);
    }
    let (config, _) = taught(with_box);
    let mut rig = reached(&config, with_box, 0.3);
    // The box is carried away and someone stands 0.85 m out where it was, 0.2 m beyond the
    // tool: their return lies beyond the box's taught range, and it is a person, not a
    // masked or an invalid beam (the rest of the box's beams now see the wall: points too).
    table_cell(&mut rig);
    rig.obstacle(0.3, 0.85, 3);
    held_for(
        &mut rig,
        Reason::ArmSeparation,
        "a person behind the box's place",
    );
}

#[test]
fn saf_019_a_scanner_that_no_longer_sees_its_taught_cell_stops_the_arm() {
    let (walled, _) = taught(table_cell);
    let (open, open_taught) = taught(open_table);
    assert_eq!(open_taught.taught_beams, 12);
    /// What happened, the config, the cell it reached in, what then changed, the stop.
    type Case<'a> = (
        &'a str,
        &'a SafetyConfig,
        fn(&mut World),
        fn(&mut World),
        Reason,
    );
    let faults: [Case<'_>; 5] = [
        // In an open hall only the legs were taught (12 of 360 beams): blinded, far fewer
        // beams than max_invalid_fraction of the scan are lost, but all of the taught ones.
        (
            "open hall, returns gone",
            &open,
            open_table,
            |w| w.clear_scan(),
            Reason::ScanBackgroundMismatch,
        ),
        // A leg moved away: 3 of the 12 taught beams do not see it (more than 0.2 of them).
        (
            "open hall, a leg moved",
            &open,
            open_table,
            |w| {
                let i = w.beam(PI / 4.0);
                w.ranges[i - 1..=i + 1].fill(f32::INFINITY);
            },
            Reason::ScanBackgroundMismatch,
        ),
        // Tipped to look over the cell, or blinded: no return where the cell stood.
        (
            "walled cell, returns gone",
            &walled,
            table_cell,
            |w| w.clear_scan(),
            Reason::ScanBackgroundMismatch,
        ),
        // Knocked round by 20°: the legs now show on beams taught as the wall (points).
        (
            "walled cell, scanner turned",
            &walled,
            table_cell,
            |w| w.ranges.rotate_right(20),
            Reason::ArmSeparation,
        ),
        // Reconfigured to another resolution: the taught ranges no longer fit its beams.
        (
            "walled cell, other geometry",
            &walled,
            table_cell,
            |w| w.angle_increment *= 0.5,
            Reason::ScanBackgroundMismatch,
        ),
    ];
    for (what, config, cell, fault, reason) in faults {
        let mut rig = reached(config, cell, 0.3);
        fault(&mut rig);
        held_for(&mut rig, reason, what);
    }
    // A moved or recalibrated scanner pose is refused at start: the taught ranges were seen
    // from where it was.
    let mut moved = walled.clone();
    moved.lidar.as_mut().unwrap().base_from_lidar.yaw_rad = 0.1;
    let e = Safety::new(moved).expect_err("a moved scanner is refused");
    assert_eq!(e.key, "lidar.background.base_from_lidar", "{e}");
}
