//! Property tests (proptest) for the safety invariants.

mod common;

use common::*;
use proptest::prelude::*;
use reflex_safety::*;

const DT: f64 = 0.01;

/// Any f64 bit pattern: NaN payloads, infinities, subnormals, huge and tiny values.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -2.0..2.0f64,
        1 => any::<u64>().prop_map(f64::from_bits),
        1 => prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MIN_POSITIVE / 2.0),
            Just(-0.0),
            Just(1e300)
        ],
    ]
}

fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => 0.0..10.0f32,
        1 => any::<u32>().prop_map(f32::from_bits),
        1 => prop_oneof![
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(f32::MIN_POSITIVE / 2.0)
        ],
    ]
}

#[derive(Debug, Clone)]
struct Tick {
    v: [f64; 3],
    joint_position: f64,
    joint_velocity: f64,
    gripper: f64,
    ee: [f64; 3],
    obstacle_direction: f32,
    obstacle_range: f32,
    noise: Vec<(usize, f32)>,
    press: Option<usize>,
    release_all: bool,
    reset: bool,
    command_age_ms: u64,
}

fn tick(wild: bool) -> impl Strategy<Value = Tick> {
    let value = move || {
        if wild {
            any_f64().boxed()
        } else {
            (-2.0..2.0f64).boxed()
        }
    };
    (
        [value(), value(), value()],
        value(),
        value(),
        value(),
        [value(), value(), value()],
        -3.2..3.2f32,
        0.1..4.0f32,
        prop::collection::vec((0..BEAMS, any_f32()), 0..if wild { 40 } else { 3 }),
        prop::option::weighted(0.05, 0..EstopSource::COUNT),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop_oneof![9 => 0..50u64, 1 => 0..400u64],
    )
        .prop_map(
            |(v, jp, jv, g, ee, dir, range, noise, press, release_all, reset, age)| Tick {
                v,
                joint_position: jp,
                joint_velocity: jv,
                gripper: g,
                ee,
                obstacle_direction: dir,
                obstacle_range: range,
                noise,
                press,
                release_all,
                reset,
                command_age_ms: age,
            },
        )
}

fn apply(rig: &mut Rig, t: &Tick) -> Verdict {
    rig.clear_scan();
    rig.obstacle(t.obstacle_direction, t.obstacle_range, 3);
    for &(i, r) in &t.noise {
        rig.ranges[i] = r;
    }
    if t.release_all {
        rig.all_sources_clear();
    }
    if let Some(i) = t.press {
        rig.press(EstopSource::ALL[i]);
    }
    if t.reset {
        rig.reset();
    }
    let next = rig.now.add_nanos(PERIOD_NS);
    let mut command = arm_command(
        [Some(t.joint_position), None],
        [None, Some(t.joint_velocity)],
    );
    command.stamp = Monotonic::from_nanos(next.as_nanos() - t.command_age_ms * 1_000_000);
    command.base = Twist {
        vx_mps: t.v[0],
        vy_mps: t.v[1],
        wz_radps: t.v[2],
    };
    command.gripper_position = Some(t.gripper);
    command.ee_target_m = Some(t.ee);
    rig.step(command)
}

/// Obstacle points (base frame) of the rig's current scan, by the LaserScan conventions.
fn points(rig: &Rig) -> Vec<(f64, f64)> {
    rig.ranges
        .iter()
        .enumerate()
        .filter_map(|(i, &r)| {
            let r = if r == f32::NEG_INFINITY { 0.0 } else { r };
            (r >= 0.0 && (r == 0.0 || (0.05..=30.0).contains(&r))).then(|| {
                let a = f64::from(rig.angle_min) + i as f64 * f64::from(rig.angle_increment);
                (f64::from(r) * a.cos(), f64::from(r) * a.sin())
            })
        })
        .collect()
}

fn inside_footprint(x: f64, y: f64) -> bool {
    x.abs() <= 0.3 && y.abs() <= 0.2
}

fn check_limits(v: &Verdict, previous: &Verdict) -> Result<(), TestCaseError> {
    let b = v.command.base;
    let p = previous.command.base;
    for (value, old, max, accel, brake) in [
        (b.vx_mps, p.vx_mps, 1.0, 10.0, 2.0),
        (b.vy_mps, p.vy_mps, 0.5, 10.0, 2.0),
        (b.wz_radps, p.wz_radps, 1.5, 20.0, 4.0),
    ] {
        prop_assert!(value.is_finite());
        prop_assert!(value.abs() <= max, "{value} > {max}");
        // Speed never grows faster than the acceleration limit; it may always drop.
        if value * old >= 0.0 {
            prop_assert!(
                value.abs() <= old.abs() + accel * DT + 1e-9,
                "{old} -> {value}"
            );
        } else {
            prop_assert!(
                value.abs() <= accel.min(brake) * DT + 1e-9,
                "{old} -> {value}"
            );
        }
    }
    let limits = [(-1.0, 1.0, 1.0, 5.0), (0.0, 2.0, 0.5, 2.0)];
    for (i, (min, max, max_v, accel)) in limits.into_iter().enumerate() {
        let j = v.command.joints[i];
        if let Some(p) = j.position {
            prop_assert!((min..=max).contains(&p), "joint {i} at {p}");
        }
        if let Some(vel) = j.velocity {
            prop_assert!(vel.abs() <= max_v, "joint {i} at {vel}");
            // A joint's speed never grows faster than its acceleration limit (measured at
            // rest here, so also from a standstill); it may always drop.
            let old = previous.command.joints[i].velocity.unwrap_or(0.0);
            if vel * old >= 0.0 {
                prop_assert!(
                    vel.abs() <= old.abs() + accel * DT + 1e-9,
                    "joint {i}: {old} -> {vel}"
                );
            } else {
                prop_assert!(vel.abs() <= accel * DT + 1e-9, "joint {i}: {old} -> {vel}");
            }
        }
    }
    if let Some(g) = v.command.gripper_position {
        prop_assert!((0.0..=0.08).contains(&g));
    }
    if let Some(ee) = v.command.ee_target_m {
        prop_assert!(
            (0.1..=0.8).contains(&ee[0])
                && (-0.5..=0.5).contains(&ee[1])
                && (0.0..=1.0).contains(&ee[2])
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// SAF-006: whatever is proposed, the output stays within every limit.
    #[test]
    fn saf_006_outputs_never_exceed_limits(ticks in prop::collection::vec(tick(false), 1..60)) {
        let mut rig = Rig::started(config());
        let mut previous = rig.step(Command::default());
        for t in &ticks {
            let v = apply(&mut rig, t);
            check_limits(&v, &previous)?;
            previous = v;
        }
    }

    /// SAF-003: with an obstacle in the protective zone in the direction of motion, that
    /// motion is zero. Checked against a brute-force sweep of the footprint.
    #[test]
    fn saf_003_obstacle_in_protective_zone_means_that_motion_is_zero(
        warmup in prop::collection::vec((-1.0..1.0f64, -0.5..0.5f64), 0..15),
        direction in -3.2..3.2f32,
        range in 0.2..2.0f32,
        beams in 2..6usize,
        v in (-1.0..1.0f64, -0.5..0.5f64),
    ) {
        let mut rig = Rig::started(config());
        for (vx, vy) in warmup {
            rig.drive(vx, vy, 0.0);
        }
        rig.obstacle(direction, range, beams);
        let verdict = rig.drive(v.0, v.1, 0.0);
        let out = verdict.command.base;
        let speed = out.vx_mps.hypot(out.vy_mps);
        // The zone is never shorter than the stopping distance of the output speed.
        prop_assert!(f64::from(verdict.protective_depth_m) + 1e-6 >= speed * 0.05 + speed * speed / 4.0 + 0.05);
        if speed > 0.0 {
            let (ux, uy) = (out.vx_mps / speed, out.vy_mps / speed);
            let depth = f64::from(verdict.protective_depth_m) - 0.002;
            let hit = points(&rig).iter().filter(|&&(px, py)| {
                (0..=(depth.max(0.0) / 0.0005) as usize).any(|k| {
                    let t = k as f64 * 0.0005;
                    inside_footprint(px - t * ux, py - t * uy)
                })
            }).count();
            prop_assert!(hit < 2, "{hit} points in the protective zone while moving {out:?}: {verdict:?}");
        }
    }

    /// SAF-001: while latched the output only decelerates, and any press latches at once.
    #[test]
    fn saf_001_latched_means_stop(ticks in prop::collection::vec(tick(false), 1..80)) {
        let mut rig = Rig::started(config());
        let mut previous = rig.step(Command::default());
        for t in &ticks {
            let v = apply(&mut rig, t);
            if t.press.is_some() {
                prop_assert_eq!(v.action, Action::Estop);
            }
            if v.stop_category.is_some() {
                prop_assert!(rig.safety.is_latched());
                prop_assert!(v.reasons.contains(Reason::EstopLatched));
                let (b, p) = (v.command.base, previous.command.base);
                prop_assert!(b.vx_mps.abs() <= p.vx_mps.abs() && b.vy_mps.abs() <= p.vy_mps.abs() && b.wz_radps.abs() <= p.wz_radps.abs());
                prop_assert!(b.vx_mps * p.vx_mps >= 0.0 && b.wz_radps * p.wz_radps >= 0.0);
            }
            previous = v;
        }
    }

    /// SAF-009: never panics, whatever the floats; outputs stay finite and limited.
    #[test]
    fn saf_009_evaluate_never_panics_on_arbitrary_input(
        ticks in prop::collection::vec(tick(true), 1..40),
        angle_min in any_f32(),
        angle_increment in any_f32(),
        now_jump in prop::option::weighted(0.1, any::<u64>()),
    ) {
        let mut rig = Rig::started(config());
        let mut previous = rig.step(Command::default());
        for (i, t) in ticks.iter().enumerate() {
            if i == ticks.len() / 2 {
                rig.angle_min = angle_min;
                rig.angle_increment = angle_increment;
            }
            if let (Some(jump), true) = (now_jump, i == 3) {
                rig.now = Monotonic::from_nanos(jump / 2);
            }
            let v = apply(&mut rig, t);
            check_limits(&v, &previous).or_else(|e| {
                // After a clock jump the first tick's ramp reference is one period.
                if now_jump.is_some() { Ok(()) } else { Err(e) }
            })?;
            previous = v;
        }
    }

    /// SAF-009: the same inputs give bit-identical verdicts.
    #[test]
    fn saf_009_same_inputs_same_verdicts(ticks in prop::collection::vec(tick(true), 1..40)) {
        let mut a = Rig::started(config());
        let mut b = Rig::started(config());
        for t in &ticks {
            let va = apply(&mut a, t);
            let vb = apply(&mut b, t);
            prop_assert_eq!(format!("{va:?}"), format!("{vb:?}"));
            prop_assert_eq!(va.command.base.vx_mps.to_bits(), vb.command.base.vx_mps.to_bits());
            prop_assert_eq!(va.clearance_m.to_bits(), vb.clearance_m.to_bits());
        }
    }

    /// SAF-016: whatever joint targets a policy sends, from a clear start no commanded pose
    /// puts a link into the keep-out box or out of the workspace (checked by sampling the
    /// capsules, independently of the layer's geometry). The drive follows with a lag.
    #[test]
    fn saf_016_no_link_ever_enters_a_zone(
        targets in prop::collection::vec((-1.0..1.0f64, 0.0..2.0f64, 1..60usize), 1..12),
        lag in 0.0..0.5f64,
    ) {
        let k = zoned_kinematics();
        let mut rig = Rig::started(zoned(true));
        rig.positions = vec![0.0, 0.0];
        for (shoulder, elbow, ticks) in targets {
            for _ in 0..ticks {
                let v = rig.step(arm_command([Some(shoulder), Some(elbow)], [None, None]));
                let q = [
                    v.command.joints[0].position.unwrap(),
                    v.command.joints[1].position.unwrap(),
                ];
                prop_assert!(clearance(&k, &q, POST) >= -1e-9, "{q:?} in the post");
                prop_assert!(workspace_margin(&k, &q) >= -1e-9, "{q:?} outside the workspace");
                for (m, c) in rig.w.positions.iter_mut().zip(q) {
                    *m += (c - *m) * (1.0 - lag);
                }
            }
        }
    }

    /// SAF-017: whatever joint targets a policy sends and however a person walks in (from
    /// 2.5 m away, at up to the configured 1.6 m/s, to anywhere), the arm never moves while
    /// they are within the margin C of a link (less the ±1° of the beams that stand for them;
    /// the test's own geometry), and its speed never changes faster than its acceleration limit.
    #[test]
    fn saf_017_the_arm_is_still_whenever_a_person_is_within_the_margin(
        targets in prop::collection::vec((-1.0..1.0f64, 0.0..0.5f64, 1..60usize), 1..8),
        from_angle in -3.1..3.1f64,
        to in (-1.0..1.0f64, -1.0..1.0f64),
        speed in 0.2..1.6f64,
    ) {
        let k = zoned_kinematics();
        let mut rig = Rig::started(separated(true));
        rig.positions = vec![0.0, 0.0];
        let start = [2.5 * from_angle.cos(), 2.5 * from_angle.sin()];
        let end = [to.0, to.1];
        let length = (end[0] - start[0]).hypot(end[1] - start[1]);
        let mut t = 0usize;
        let mut previous = [0.0f64; 2];
        for (shoulder, elbow, ticks) in targets {
            for _ in 0..ticks {
                let f = (speed * t as f64 * 0.01 / length).min(1.0);
                let person = [start[0] + f * (end[0] - start[0]), start[1] + f * (end[1] - start[1])];
                // Nearer the lidar than its range_min (0.05 m) nobody can be seen (invalid
                // beams; that is the arm's base here): the walk ends there.
                if person[0].hypot(person[1]) < 0.1 {
                    return Ok(());
                }
                rig.person_at(person);
                t += 1;
                let v = rig.step(arm_command([Some(shoulder), Some(elbow)], [None, None]));
                let q = [
                    v.command.joints[0].position.unwrap(),
                    v.command.joints[1].position.unwrap(),
                ];
                let d = person_separation(&k, &q, person);
                let velocity = [
                    v.command.joints[0].velocity.unwrap(),
                    v.command.joints[1].velocity.unwrap(),
                ];
                if velocity.iter().any(|s| s.abs() > 1e-9) {
                    prop_assert!(d > SEPARATION.margin_m - 0.02, "moving at {q:?} {velocity:?}, person {d:.3} m away");
                }
                // The tracker's last step onto its target is shorter than a full tick's: not
                // checked. Nor is its last step onto a position limit, which a reversed target
                // can leave it braking toward (the braking path planned for the old target is
                // a tick's rounding off the discrete one) — but only from a near-standstill.
                let joints = [(5.0, shoulder, [-1.0, 1.0]), (2.0, elbow, [0.0, 2.0])];
                for (j, (a, target, range)) in joints.into_iter().enumerate() {
                    if (q[j] - target).abs() <= 1e-12 {
                        continue;
                    }
                    if range.iter().any(|limit| (q[j] - limit).abs() <= 1e-12) {
                        prop_assert!(previous[j].abs() <= 2.0 * a * DT + 1e-9, "joint {j} stopped at its limit from {previous:?}");
                        continue;
                    }
                    prop_assert!((velocity[j] - previous[j]).abs() <= a * DT + 1e-9, "joint {j}: {previous:?} -> {velocity:?}");
                }
                previous = velocity;
                rig.positions = q.to_vec();
            }
        }
    }
}
