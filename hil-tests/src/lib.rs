//! Scenarios that prove Reflex on a simulated plant today and, through the ROS 2 port, on a
//! real robot tomorrow.
//!
//! Today: randomized pedestrian/obstacle encounters in closed loop with the built-in simulator
//! ([`reflex_runtime::sim::Lockstep`]), including an adversarial policy that drives straight at
//! obstacles at full speed, and scenarios as data ([`scenario`], `hil-tests/scenarios/*.toml`:
//! world, scripted policy, E-stop / lidar fault events, assertions) on the safety layer. The
//! policy-in-the-loop faults (inference hangs, camera loss, cloud link, clock jumps, CPU hogs),
//! the 10,000-encounter campaign, reports and the hardware mode are still to come (issue 7).
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

#![forbid(unsafe_code)]

pub mod scenario;

use reflex_runtime::sim::{Lockstep, Obstacle, Rng, Shape, World};
use reflex_safety::{SafetyConfig, Twist};

/// The demo robot's safety config (launch/reflex.example.toml).
pub fn demo_safety_config() -> SafetyConfig {
    let text = include_str!("../../launch/reflex.example.toml");
    reflex_runtime::config::ReflexConfig::parse(text)
        .expect("launch/reflex.example.toml is valid")
        .safety
}

/// What one encounter did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub seed: u64,
    pub min_clearance_m: f64,
    /// The footprint touched the obstacle while the footprint point nearest to it moved toward
    /// it faster than 1 cm/s (a pedestrian walking into a stopped or receding robot does not
    /// count: no robot can prevent that).
    pub collided_while_moving: bool,
    /// Distance the robot travelled (m): shows the encounter was not a robot standing still.
    pub travelled_m: f64,
}

/// One randomized encounter from `seed`: a post or a pedestrian at a random place ahead, which
/// may walk across; the "policy" drives at or beyond full speed toward it with some wobble.
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
    let speed = if walking { rng.range(0.3, 1.5) } else { 0.0 };
    let start_y = if walking {
        -lateral.signum() * rng.range(1.0, 2.5)
    } else {
        lateral
    };
    let world = World {
        obstacles: vec![Obstacle::circle(
            "obstacle",
            [ahead + 0.35 + radius, start_y],
            radius,
            [0.0, if start_y < 0.0 { speed } else { -speed }],
            (0.0, f64::INFINITY),
        )],
        time_s: 0.0,
    };
    let mut sim = Lockstep::new(config.clone(), world, 720, seed).expect("valid config");
    sim.plant.brake[0] = plant_brake_mps2;
    sim.plant.brake[1] = plant_brake_mps2;
    sim.lidar.noise_std_m = rng.range(0.0, 0.03);
    sim.lidar.dropout = rng.range(0.0, 0.01);
    sim.reset_request_seq = 1;
    let adversarial = rng.uniform() < 0.5;
    let mut min_clearance = f64::INFINITY;
    let mut collided = false;
    for _ in 0..800 {
        let proposed = if adversarial {
            // Straight at the obstacle, beyond the limit.
            let c = match sim.world.obstacles[0].shape {
                Shape::Circle { center, .. } => center,
                Shape::Segment { a, .. } => a,
            };
            let (dx, dy) = (c[0] - sim.plant.pose.x_m, c[1] - sim.plant.pose.y_m);
            let d = dx.hypot(dy).max(1e-6);
            Twist {
                vx_mps: 1.5 * dx / d,
                vy_mps: 1.5 * dy / d,
                wz_radps: 0.0,
            }
        } else {
            Twist {
                vx_mps: rng.range(0.6, 1.3),
                vy_mps: rng.range(-0.2, 0.2),
                wz_radps: rng.range(-0.3, 0.3),
            }
        };
        let record = sim.tick(proposed);
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
    record: &reflex_runtime::sim::TickRecord,
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
