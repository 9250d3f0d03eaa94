//! Scenarios that prove Reflex on a simulated plant today and, through the ROS 2 port, on a
//! real robot tomorrow.
//!
//! Today: randomized pedestrian/obstacle encounters in closed loop with the built-in simulator
//! ([`reflex_sim::world::Lockstep`]), including an adversarial policy that drives straight at
//! obstacles at full speed, and scenarios as data ([`scenario`], `hil-tests/scenarios/*.toml`:
//! world, scripted policy, E-stop / lidar fault events, assertions) on the safety layer. The
//! policy-in-the-loop faults (inference hangs, camera loss, CPU hogs) run the demo VLA; cloud
//! link and wall-clock faults, the campaign and reports are here, and [`hardware`] runs the same
//! scenario files on a robot through the ROS 2 port (`reflex-hil hardware`).
//!
//! # Guarantees checked
//! - No collision in which the robot was moving toward the obstacle.
//! - The minimum clearance of every encounter is reported.
//!
//! # Example
//! ```
//! let config = reflex_hil::demo_safety_config();
//! let outcome = reflex_hil::run_encounter(&config, 42);
//! assert!(!outcome.collided_while_moving);
//! ```

#![deny(unsafe_code)]

// The counting allocator is the only unsafe code (forwarding to `System`).
#[allow(unsafe_code)]
pub mod alloc;
pub mod arm;
pub mod arm_campaign;
pub mod hardware;
pub mod scenario;

/// The demo robot's config file (`launch/reflex.example.toml`).
pub const DEMO_CONFIG: &str = include_str!("../../launch/reflex.example.toml");

use reflex_safety::{SafetyConfig, Twist};
use reflex_sim::world::{Lockstep, Obstacle, Rng, Shape, World};

/// The demo robot's safety config (launch/reflex.example.toml).
pub fn demo_safety_config() -> SafetyConfig {
    reflex_runner::config::ReflexConfig::parse(DEMO_CONFIG)
        .expect("launch/reflex.example.toml is valid")
        .safety
}

/// How the policy in one encounter misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Perturbation {
    /// Straight at the obstacle at 1–1.5× the speed limit, every tick.
    Adversarial,
    /// Roughly ahead with random wobble in speed, sideways motion and turn rate.
    Wobble,
    /// Full speed forward and full reverse in alternating bursts (jerky, oscillating policy).
    BangBang,
    /// Aims beside the obstacle, then swerves at it when close.
    LateSwerve,
    /// Straight at the obstacle, its commands arriving 50–250 ms old (slow inference/link).
    Delayed,
    /// Straight at the obstacle with bursts of NaN / infinite commands.
    GarbageBursts,
}

impl Perturbation {
    pub const ALL: [Perturbation; 6] = [
        Self::Adversarial,
        Self::Wobble,
        Self::BangBang,
        Self::LateSwerve,
        Self::Delayed,
        Self::GarbageBursts,
    ];
}

/// What one encounter did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub seed: u64,
    pub perturbation: Perturbation,
    pub min_clearance_m: f64,
    /// The footprint touched the obstacle while the footprint point nearest to it moved toward
    /// it faster than 1 cm/s (a pedestrian walking into a stopped or receding robot does not
    /// count: no robot can prevent that).
    pub collided_while_moving: bool,
    /// Distance the robot travelled (m): shows the encounter was not a robot standing still.
    pub travelled_m: f64,
}

/// One randomized encounter from `seed`: a post or a pedestrian (walking at up to 1.6 m/s in
/// a random direction) at a random place ahead, a lidar with random noise, dropouts, latency
/// and lost scans, and a policy with one of the [`Perturbation`]s.
pub fn run_encounter(config: &SafetyConfig, seed: u64) -> Outcome {
    let brake = config.base.as_ref().map_or(1.0, |b| b.brake_decel_mps2);
    run_encounter_with_plant_brake(config, seed, brake)
}

/// [`run_encounter`] with a simulated drive that brakes at `plant_brake_mps2` instead of the
/// config's `brake_decel_mps2`: a config that overstates the brakes must fail here.
pub fn run_encounter_with_plant_brake(
    config: &SafetyConfig,
    seed: u64,
    plant_brake_mps2: f64,
) -> Outcome {
    let mut rng = Rng::new(seed);
    let ahead = rng.range(1.0, 5.0);
    let lateral = rng.range(-0.6, 0.6);
    let radius = rng.range(0.1, 0.35);
    let walking = rng.uniform() < 0.5;
    let speed = if walking { rng.range(0.3, 1.6) } else { 0.0 };
    let (start, velocity) = if walking {
        // Crosses the path within ±23° of square, from either side (steeper diagonal
        // approaches: see hil-tests/README.md, "open finding").
        let side = if lateral < 0.0 { 1.0 } else { -1.0 };
        let start_y = -side * rng.range(1.0, 2.5);
        let angle = rng.range(-0.4, 0.4);
        (
            [ahead + 0.35 + radius, start_y],
            [speed * angle.sin(), -start_y.signum() * speed * angle.cos()],
        )
    } else {
        ([ahead + 0.35 + radius, lateral], [0.0, 0.0])
    };
    let world = World {
        obstacles: vec![Obstacle::circle(
            "obstacle",
            start,
            radius,
            velocity,
            (0.0, f64::INFINITY),
        )],
        time_s: 0.0,
    };
    let mut sim = Lockstep::new(config.clone(), world, 720, seed).expect("valid config");
    sim.plant.brake[0] = plant_brake_mps2;
    sim.plant.brake[1] = plant_brake_mps2;
    sim.lidar.noise_std_m = rng.range(0.0, 0.03);
    sim.lidar.dropout = rng.range(0.0, 0.01);
    sim.lidar_latency_ns = (rng.range(0.0, 20.0) * 1e6) as u64;
    sim.scan_loss = rng.range(0.0, 0.1);
    sim.reset_request_seq = 1;
    let perturbation = Perturbation::ALL[(rng.next_u64() % 6) as usize];
    let top = rng.range(1.0, 1.5);
    let delay_ns = (rng.range(50.0, 250.0) * 1e6) as u64;
    let swerve_offset = rng.range(0.8, 1.5) * if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
    let mut min_clearance = f64::INFINITY;
    let mut collided = false;
    for tick in 0..800u64 {
        let c = match sim.world.obstacles[0].shape {
            Shape::Circle { center, .. } => center,
            Shape::Segment { a, .. } => a,
        };
        let (dx, dy) = (c[0] - sim.plant.pose.x_m, c[1] - sim.plant.pose.y_m);
        let d = dx.hypot(dy).max(1e-6);
        let at = |v: f64, dx: f64, dy: f64| {
            let n = dx.hypot(dy).max(1e-6);
            Twist {
                vx_mps: v * dx / n,
                vy_mps: v * dy / n,
                wz_radps: 0.0,
            }
        };
        let mut stamp_age_ns = 0;
        let proposed = match perturbation {
            Perturbation::Adversarial => at(top, dx, dy),
            Perturbation::Wobble => Twist {
                vx_mps: rng.range(0.6, 1.3),
                vy_mps: rng.range(-0.2, 0.2),
                wz_radps: rng.range(-0.3, 0.3),
            },
            Perturbation::BangBang => {
                let v = if (tick / 60) % 3 == 2 { -top } else { top };
                at(v, dx, dy)
            }
            Perturbation::LateSwerve => {
                if d > 1.5 {
                    at(top, dx, dy + swerve_offset)
                } else {
                    at(top, dx, dy)
                }
            }
            Perturbation::Delayed => {
                stamp_age_ns = delay_ns;
                at(top, dx, dy)
            }
            Perturbation::GarbageBursts => {
                let mut t = at(top, dx, dy);
                match (tick / 7) % 9 {
                    0 => t.vx_mps = f64::NAN,
                    4 => t.wz_radps = f64::INFINITY,
                    _ => {}
                }
                t
            }
        };
        let record = sim.tick_with(|now| {
            reflex_safety::Command::base(
                reflex_safety::CommandSource::LocalPolicy,
                reflex_safety::Monotonic::from_nanos(now.as_nanos().saturating_sub(stamp_age_ns)),
                proposed.vx_mps,
                proposed.vy_mps,
                proposed.wz_radps,
            )
        });
        min_clearance = min_clearance.min(record.clearance_m);
        if record.clearance_m <= 0.0 {
            let obstacle = match sim.world.obstacles[0].shape {
                Shape::Circle { center, .. } => center,
                Shape::Segment { a, .. } => a,
            };
            let footprint: Vec<[f64; 2]> = sim
                .footprint
                .iter()
                .map(|&p| record.pose.transform(p))
                .collect();
            collided |= approach_speed(&footprint, &record, obstacle) > TOWARD_MPS;
        }
    }
    Outcome {
        seed,
        perturbation,
        min_clearance_m: min_clearance,
        collided_while_moving: collided,
        travelled_m: sim.plant.pose.x_m.hypot(sim.plant.pose.y_m),
    }
}

/// Above this approach speed (m/s) a contact counts as the robot's doing.
const TOWARD_MPS: f64 = 0.01;

/// Speed at which the footprint point nearest to `obstacle` moves toward it (m/s; negative when
/// moving away), from the base's body velocity and rotation.
fn approach_speed(
    footprint_world: &[[f64; 2]],
    record: &reflex_sim::world::TickRecord,
    obstacle: [f64; 2],
) -> f64 {
    let n = footprint_world.len();
    let mut nearest = footprint_world[0];
    let mut best = f64::INFINITY;
    for i in 0..n {
        let (a, b) = (footprint_world[i], footprint_world[(i + 1) % n]);
        let ab = [b[0] - a[0], b[1] - a[1]];
        let t = (((obstacle[0] - a[0]) * ab[0] + (obstacle[1] - a[1]) * ab[1])
            / (ab[0] * ab[0] + ab[1] * ab[1]))
            .clamp(0.0, 1.0);
        let q = [a[0] + t * ab[0], a[1] + t * ab[1]];
        let d = (obstacle[0] - q[0]).hypot(obstacle[1] - q[1]);
        if d < best {
            best = d;
            nearest = q;
        }
    }
    let pose = record.pose;
    let (s, c) = pose.yaw_rad.sin_cos();
    let v = record.velocity;
    let (vx, vy) = (c * v.vx_mps - s * v.vy_mps, s * v.vx_mps + c * v.vy_mps);
    let (rx, ry) = (nearest[0] - pose.x_m, nearest[1] - pose.y_m);
    let (qx, qy) = (vx - v.wz_radps * ry, vy + v.wz_radps * rx);
    let (mut dx, mut dy) = (obstacle[0] - nearest[0], obstacle[1] - nearest[1]);
    if dx.hypot(dy) < 1e-9 {
        // Centre inside the footprint: use the direction from the base centre.
        (dx, dy) = (obstacle[0] - pose.x_m, obstacle[1] - pose.y_m);
    }
    let d = dx.hypot(dy).max(1e-12);
    (qx * dx + qy * dy) / d
}
