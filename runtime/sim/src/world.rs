//! The built-in simulator: a planar world of circles (people, posts) and segments (walls), a
//! mobile base whose drive tracks velocity commands within its own physical limits, and a
//! ray-cast lidar with Gaussian noise and dropouts. Deterministic for a given seed.

use reflex_safety::Twist;

/// A pose in the world frame.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pose {
    pub x_m: f64,
    pub y_m: f64,
    pub yaw_rad: f64,
}

impl Pose {
    /// `p` (in this pose's frame) expressed in the parent frame.
    pub fn transform(&self, p: [f64; 2]) -> [f64; 2] {
        let (s, c) = self.yaw_rad.sin_cos();
        [
            self.x_m + c * p[0] - s * p[1],
            self.y_m + s * p[0] + c * p[1],
        ]
    }
}

/// Obstacle geometry in the world frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    Circle { center: [f64; 2], radius_m: f64 },
    Segment { a: [f64; 2], b: [f64; 2] },
}

/// An obstacle; circles may move at a constant velocity while `active`.
#[derive(Debug, Clone, PartialEq)]
pub struct Obstacle {
    pub name: String,
    pub shape: Shape,
    pub velocity_mps: [f64; 2],
    /// Simulation time span (s) during which the obstacle exists and moves.
    pub active_s: (f64, f64),
    /// Colour the camera sees.
    pub colour: [u8; 3],
}

/// Colours of the built-in world.
pub const WALL_GREY: [u8; 3] = [130, 130, 130];
pub const PERSON_GREEN: [u8; 3] = [60, 150, 70];
pub const MARKER_RED: [u8; 3] = [220, 30, 30];
pub const MARKER_BLUE: [u8; 3] = [30, 40, 220];

impl Obstacle {
    /// A static wall from `a` to `b`, always present.
    pub fn wall(name: &str, a: [f64; 2], b: [f64; 2]) -> Self {
        Self {
            name: name.into(),
            shape: Shape::Segment { a, b },
            velocity_mps: [0.0; 2],
            active_s: (0.0, f64::INFINITY),
            colour: WALL_GREY,
        }
    }

    /// A coloured goal marker post.
    pub fn marker(name: &str, center: [f64; 2], radius_m: f64, colour: [u8; 3]) -> Self {
        Self {
            colour,
            ..Self::circle(name, center, radius_m, [0.0; 2], (0.0, f64::INFINITY))
        }
    }

    /// A circle (post, box, person) present and moving at `velocity_mps` during `active_s`.
    pub fn circle(
        name: &str,
        center: [f64; 2],
        radius_m: f64,
        velocity_mps: [f64; 2],
        active_s: (f64, f64),
    ) -> Self {
        Self {
            name: name.into(),
            shape: Shape::Circle { center, radius_m },
            velocity_mps,
            active_s,
            colour: PERSON_GREEN,
        }
    }
}

/// The static and moving obstacles.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub obstacles: Vec<Obstacle>,
    pub time_s: f64,
}

impl World {
    pub fn step(&mut self, dt_s: f64) {
        self.time_s += dt_s;
        for o in &mut self.obstacles {
            if let Shape::Circle { center, .. } = &mut o.shape
                && self.time_s >= o.active_s.0
                && self.time_s <= o.active_s.1
            {
                center[0] += o.velocity_mps[0] * dt_s;
                center[1] += o.velocity_mps[1] * dt_s;
            }
        }
    }

    fn active(&self) -> impl Iterator<Item = &Obstacle> {
        self.obstacles
            .iter()
            .filter(|o| self.time_s >= o.active_s.0 && self.time_s <= o.active_s.1)
    }

    /// Distance along the unit ray `origin + t·dir` to the first obstacle, `+inf` if none.
    pub fn raycast(&self, origin: [f64; 2], dir: [f64; 2]) -> f64 {
        self.raycast_hit(origin, dir)
            .map_or(f64::INFINITY, |(t, _)| t)
    }

    /// The first obstacle on the ray and its distance.
    pub fn raycast_hit(&self, origin: [f64; 2], dir: [f64; 2]) -> Option<(f64, &Obstacle)> {
        let mut best: Option<(f64, &Obstacle)> = None;
        for o in self.active() {
            let t = match o.shape {
                Shape::Circle { center, radius_m } => {
                    let (ox, oy) = (origin[0] - center[0], origin[1] - center[1]);
                    let b = ox * dir[0] + oy * dir[1];
                    let c = ox * ox + oy * oy - radius_m * radius_m;
                    let disc = b * b - c;
                    if disc < 0.0 {
                        f64::INFINITY
                    } else {
                        let sq = disc.sqrt();
                        let t0 = -b - sq;
                        let t1 = -b + sq;
                        if t0 >= 0.0 {
                            t0
                        } else if t1 >= 0.0 {
                            0.0
                        } else {
                            f64::INFINITY
                        }
                    }
                }
                Shape::Segment { a, b } => {
                    let e = [b[0] - a[0], b[1] - a[1]];
                    let denom = dir[0] * e[1] - dir[1] * e[0];
                    if denom.abs() < 1e-12 {
                        f64::INFINITY
                    } else {
                        let w = [a[0] - origin[0], a[1] - origin[1]];
                        let t = (w[0] * e[1] - w[1] * e[0]) / denom;
                        let u = (w[0] * dir[1] - w[1] * dir[0]) / denom;
                        if t >= 0.0 && (0.0..=1.0).contains(&u) {
                            t
                        } else {
                            f64::INFINITY
                        }
                    }
                }
            };
            if t.is_finite() && best.is_none_or(|(b, _)| t < b) {
                best = Some((t, o));
            }
        }
        best
    }

    /// Smallest distance (m) between the footprint polygon (world frame) and any obstacle;
    /// 0 when they touch or overlap.
    pub fn clearance(&self, footprint_world: &[[f64; 2]]) -> f64 {
        let n = footprint_world.len();
        let edges = || (0..n).map(move |i| (footprint_world[i], footprint_world[(i + 1) % n]));
        let mut best = f64::INFINITY;
        for o in self.active() {
            let d = match o.shape {
                Shape::Circle { center, radius_m } => {
                    if point_in_convex(footprint_world, center) {
                        0.0
                    } else {
                        let d = edges()
                            .map(|(a, b)| point_segment_distance(center, a, b))
                            .fold(f64::INFINITY, f64::min);
                        (d - radius_m).max(0.0)
                    }
                }
                Shape::Segment { a, b } => {
                    if point_in_convex(footprint_world, a) || point_in_convex(footprint_world, b) {
                        0.0
                    } else {
                        edges()
                            .map(|(p, q)| segment_distance(a, b, p, q))
                            .fold(f64::INFINITY, f64::min)
                    }
                }
            };
            best = best.min(d);
        }
        best
    }
}

fn cross(o: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

fn point_in_convex(poly: &[[f64; 2]], p: [f64; 2]) -> bool {
    let n = poly.len();
    let signs = (0..n).map(|i| cross(poly[i], poly[(i + 1) % n], p));
    let (mut pos, mut neg) = (false, false);
    for s in signs {
        pos |= s > 0.0;
        neg |= s < 0.0;
    }
    !(pos && neg)
}

fn point_segment_distance(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let ab = [b[0] - a[0], b[1] - a[1]];
    let len2 = ab[0] * ab[0] + ab[1] * ab[1];
    let t = if len2 > 0.0 {
        (((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1]) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (p[0] - a[0] - t * ab[0]).hypot(p[1] - a[1] - t * ab[1])
}

fn segment_distance(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> f64 {
    let d1 = cross(a, b, c);
    let d2 = cross(a, b, d);
    let d3 = cross(c, d, a);
    let d4 = cross(c, d, b);
    if d1 * d2 < 0.0 && d3 * d4 < 0.0 {
        return 0.0;
    }
    point_segment_distance(a, c, d)
        .min(point_segment_distance(b, c, d))
        .min(point_segment_distance(c, a, b))
        .min(point_segment_distance(d, a, b))
}

/// The footprint polygon of `base` (a circle becomes its circumscribed 24-gon, so collisions are
/// reported no later than for the circle).
pub fn footprint_polygon(base: &reflex_safety::BaseConfig) -> Vec<[f64; 2]> {
    match (&base.footprint_polygon_m, base.footprint_radius_m) {
        (Some(p), _) => p.clone(),
        (None, Some(r)) => {
            let n = 24;
            let r = r / (std::f64::consts::PI / n as f64).cos();
            (0..n)
                .map(|i| {
                    let a = std::f64::consts::TAU * i as f64 / n as f64;
                    [r * a.cos(), r * a.sin()]
                })
                .collect()
        }
        (None, None) => Vec::new(),
    }
}

/// A mobile base whose drive tracks the commanded body velocity within its own limits.
#[derive(Debug, Clone)]
pub struct Plant {
    pub pose: Pose,
    /// Body-frame velocity.
    pub velocity: Twist,
    /// Drive acceleration limits (m/s², m/s², rad/s²).
    pub accel: [f64; 3],
    /// Drive braking (m/s², m/s², rad/s²); also what the brakes do with power removed.
    pub brake: [f64; 3],
}

impl Plant {
    /// At the origin, at rest, with a drive exactly as strong as `base` claims.
    pub fn for_base(base: &reflex_safety::BaseConfig) -> Self {
        Self {
            pose: Pose::default(),
            velocity: Twist::default(),
            accel: [
                base.max_accel_x_mps2,
                base.max_accel_y_mps2,
                base.max_accel_wz_radps2,
            ],
            brake: [
                base.brake_decel_mps2,
                base.brake_decel_mps2,
                base.brake_decel_wz_radps2,
            ],
        }
    }

    /// Advances by `dt_s`: velocity moves toward `command` (or brakes to zero without power),
    /// then the pose integrates the body velocity.
    pub fn step(&mut self, command: Twist, power_enabled: bool, dt_s: f64) {
        let target = if power_enabled {
            [command.vx_mps, command.vy_mps, command.wz_radps]
        } else {
            [0.0; 3]
        };
        let mut v = [
            self.velocity.vx_mps,
            self.velocity.vy_mps,
            self.velocity.wz_radps,
        ];
        for axis in 0..3 {
            let slowing = v[axis] * target[axis] >= 0.0 && target[axis].abs() <= v[axis].abs();
            let step = if slowing {
                self.brake[axis]
            } else {
                self.accel[axis]
            } * dt_s;
            v[axis] += (target[axis] - v[axis]).clamp(-step, step);
        }
        self.velocity = Twist {
            vx_mps: v[0],
            vy_mps: v[1],
            wz_radps: v[2],
        };
        let (s, c) = self.pose.yaw_rad.sin_cos();
        self.pose.x_m += (c * v[0] - s * v[1]) * dt_s;
        self.pose.y_m += (s * v[0] + c * v[1]) * dt_s;
        self.pose.yaw_rad += v[2] * dt_s;
    }
}

/// A ray-cast 2D lidar.
#[derive(Debug, Clone)]
pub struct SimLidar {
    /// Mount pose in the base frame.
    pub mount: Pose,
    pub beams: usize,
    pub angle_min_rad: f32,
    pub angle_increment_rad: f32,
    pub range_min_m: f32,
    pub range_max_m: f32,
    /// Standard deviation of range noise (m).
    pub noise_std_m: f64,
    /// Probability that a beam returns NaN.
    pub dropout: f64,
}

impl SimLidar {
    /// A 360° lidar of `beams` beams at `mount`, 1 cm noise, 0.2 % NaN dropouts, 0.05–30 m.
    pub fn full_circle(beams: usize, mount: Pose) -> Self {
        Self {
            mount,
            beams,
            angle_min_rad: -std::f32::consts::PI,
            angle_increment_rad: std::f32::consts::TAU / beams as f32,
            range_min_m: 0.05,
            range_max_m: 30.0,
            noise_std_m: 0.01,
            dropout: 0.002,
        }
    }

    /// Fills `ranges` (len `beams`) for the robot at `pose`.
    pub fn scan(&self, world: &World, pose: &Pose, rng: &mut Rng, ranges: &mut [f32]) {
        let origin = pose.transform([self.mount.x_m, self.mount.y_m]);
        for (i, out) in ranges.iter_mut().enumerate().take(self.beams) {
            let a = pose.yaw_rad
                + self.mount.yaw_rad
                + f64::from(self.angle_min_rad)
                + i as f64 * f64::from(self.angle_increment_rad);
            let r = world.raycast(origin, [a.cos(), a.sin()]) + rng.gaussian() * self.noise_std_m;
            *out = if rng.uniform() < self.dropout {
                f32::NAN
            } else if r > f64::from(self.range_max_m) {
                f32::INFINITY
            } else if r < f64::from(self.range_min_m) {
                f32::NEG_INFINITY
            } else {
                r as f32
            };
        }
    }
}

/// A pinhole-ish egocentric camera: one ray per image column; the nearest obstacle fills a
/// vertical band whose height falls with distance, over a grey floor/sky. Output is CHW u8.
#[derive(Debug, Clone)]
pub struct SimCamera {
    pub width: usize,
    pub height: usize,
    pub hfov_rad: f64,
    /// Mount pose in the base frame.
    pub mount: Pose,
}

impl Default for SimCamera {
    fn default() -> Self {
        Self {
            width: 96,
            height: 96,
            hfov_rad: 90f64.to_radians(),
            mount: Pose::default(),
        }
    }
}

impl SimCamera {
    /// Renders the view from `pose` into `image` (3 × height × width).
    pub fn render(&self, world: &World, pose: &Pose, image: &mut [u8]) {
        let (w, h) = (self.width, self.height);
        image.fill(90);
        let origin = pose.transform([self.mount.x_m, self.mount.y_m]);
        for col in 0..w {
            // Column 0 is the left edge of the view (positive angle).
            let a = pose.yaw_rad
                + self.mount.yaw_rad
                + self.hfov_rad * (0.5 - (col as f64 + 0.5) / w as f64);
            let Some((d, obstacle)) = world.raycast_hit(origin, [a.cos(), a.sin()]) else {
                continue;
            };
            let band = ((h as f64 * 0.5 / d.max(0.05)).round() as usize).min(h);
            let top = (h - band) / 2;
            for row in top..top + band {
                for (c, value) in obstacle.colour.iter().enumerate() {
                    image[c * w * h + row * w + col] = *value;
                }
            }
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so runs are reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raycast_hits_circles_and_segments() {
        let world = World {
            obstacles: vec![
                Obstacle::circle("post", [3.0, 0.0], 0.5, [0.0; 2], (0.0, f64::INFINITY)),
                Obstacle::wall("wall", [0.0, 2.0], [5.0, 2.0]),
            ],
            time_s: 0.0,
        };
        assert!((world.raycast([0.0, 0.0], [1.0, 0.0]) - 2.5).abs() < 1e-12);
        assert!((world.raycast([0.0, 0.0], [0.0, 1.0]) - 2.0).abs() < 1e-12);
        assert_eq!(world.raycast([0.0, 0.0], [-1.0, 0.0]), f64::INFINITY);
        let square = [[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]];
        assert!((world.clearance(&square) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn plant_tracks_within_its_limits() {
        let mut plant = Plant {
            pose: Pose::default(),
            velocity: Twist::default(),
            accel: [1.0; 3],
            brake: [2.0; 3],
        };
        let cmd = Twist {
            vx_mps: 1.0,
            ..Twist::default()
        };
        for _ in 0..50 {
            plant.step(cmd, true, 0.01);
        }
        assert!((plant.velocity.vx_mps - 0.5).abs() < 1e-9);
        for _ in 0..20 {
            plant.step(cmd, false, 0.01);
        }
        assert!((plant.velocity.vx_mps - 0.1).abs() < 1e-9);
    }
}

/// The safety layer in closed loop with the simulated base, world and lidar, stepped in
/// lockstep (faster than real time). Used by `reflex safety-demo` and the HIL scenarios.
#[derive(Debug)]
pub struct Lockstep {
    pub safety: reflex_safety::Safety,
    pub plant: Plant,
    pub world: World,
    pub lidar: SimLidar,
    pub rng: Rng,
    /// Footprint polygon in the base frame, for collision checks.
    pub footprint: Vec<[f64; 2]>,
    pub now: reflex_safety::Monotonic,
    pub period_ns: u64,
    /// The lidar publishes every this many ticks.
    pub scan_every_ticks: u64,
    /// Hardware E-stop input as wired: true = pressed.
    pub hardware_pressed: bool,
    /// While true the lidar driver is frozen: no new scans arrive.
    pub lidar_frozen: bool,
    /// While true the lidar returns NaN on every beam (a failing sensor that still publishes).
    pub lidar_nan: bool,
    pub reset_request_seq: u64,
    /// Capture-to-delivery latency of a scan (the data is this old when it arrives; Reflex
    /// stamps it on reception, as on a robot), ns.
    pub lidar_latency_ns: u64,
    /// Probability that a whole scan message is lost.
    pub scan_loss: f64,
    /// When set, every scan travels as a `sensor_msgs/LaserScan` through CDR and the ROS port
    /// ([`reflex_ros::port::PortState`]), its header stamped by the robot's wall clock.
    pub port: Option<Box<reflex_ros::port::PortState>>,
    /// The robot's wall clock (ns since the epoch) for message headers; scenarios jump it.
    pub wall_clock_ns: u64,
    /// Reads this thread's allocation count (a counting global allocator in the test binary);
    /// when set, allocations inside `Safety::evaluate` are added to `evaluate_allocations`.
    pub alloc_counter: Option<fn() -> u64>,
    pub evaluate_allocations: u64,
    ticks: u64,
    ranges: Vec<f32>,
    scan_stamp: reflex_safety::Monotonic,
    /// Scans captured but not yet delivered: (deliver at, ranges).
    in_flight: std::collections::VecDeque<(reflex_safety::Monotonic, Vec<f32>)>,
}

/// What one lockstep tick did.
#[derive(Debug, Clone, Copy)]
pub struct TickRecord {
    pub time_s: f64,
    pub pose: Pose,
    pub velocity: Twist,
    pub proposed: Twist,
    pub verdict: reflex_safety::Verdict,
    /// Footprint-to-obstacle distance after the tick (m).
    pub clearance_m: f64,
}

impl Lockstep {
    /// A robot at the origin facing +x, with a 360° lidar of `beams` beams at the base origin,
    /// a drive exactly as strong as the safety config claims, and fresh E-stop sources.
    pub fn new(
        config: reflex_safety::SafetyConfig,
        world: World,
        beams: usize,
        seed: u64,
    ) -> Result<Self, reflex_safety::ConfigError> {
        let base = config
            .base
            .clone()
            .ok_or_else(|| reflex_safety::ConfigError {
                key: "base".into(),
                problem: "the simulator drives a mobile base, but none is configured".into(),
                fix: "add [safety.base] and [safety.lidar]".into(),
            })?;
        let mount = config
            .lidar
            .as_ref()
            .map(|l| Pose {
                x_m: l.base_from_lidar.x_m,
                y_m: l.base_from_lidar.y_m,
                yaw_rad: l.base_from_lidar.yaw_rad,
            })
            .unwrap_or_default();
        let footprint = footprint_polygon(&base);
        let period_ns = (config.control_period_ms * 1e6).round() as u64;
        let safety = reflex_safety::Safety::new(config)?;
        Ok(Self {
            safety,
            plant: Plant::for_base(&base),
            world,
            lidar: SimLidar::full_circle(beams, mount),
            rng: Rng::new(seed),
            footprint,
            now: reflex_safety::Monotonic::from_millis(1_000),
            period_ns,
            scan_every_ticks: 4,
            hardware_pressed: false,
            lidar_frozen: false,
            lidar_nan: false,
            reset_request_seq: 0,
            lidar_latency_ns: 0,
            scan_loss: 0.0,
            port: None,
            wall_clock_ns: 1_767_225_600_000_000_000, // 2026-01-01T00:00:00Z
            alloc_counter: None,
            evaluate_allocations: 0,
            ticks: 0,
            ranges: vec![f32::INFINITY; beams],
            scan_stamp: reflex_safety::Monotonic::default(),
            in_flight: std::collections::VecDeque::new(),
        })
    }

    /// One control period: sense, evaluate `proposed` from the local policy, actuate.
    pub fn tick(&mut self, proposed: Twist) -> TickRecord {
        self.tick_with(|now| {
            reflex_safety::Command::base(
                reflex_safety::CommandSource::LocalPolicy,
                now,
                proposed.vx_mps,
                proposed.vy_mps,
                proposed.wz_radps,
            )
        })
    }

    /// One control period with the command `command(now)` builds (any source and stamp, e.g.
    /// the arbiter's choice).
    pub fn tick_with(
        &mut self,
        command: impl FnOnce(reflex_safety::Monotonic) -> reflex_safety::Command,
    ) -> TickRecord {
        use reflex_safety::{EstopReport, EstopSource, Odometry, SafetyInputs, Scan};
        let dt_s = self.period_ns as f64 * 1e-9;
        self.now = self.now.add_nanos(self.period_ns);
        self.wall_clock_ns = self.wall_clock_ns.wrapping_add(self.period_ns);
        self.world.step(dt_s);
        if self.ticks.is_multiple_of(self.scan_every_ticks) && !self.lidar_frozen {
            let mut ranges = vec![0.0f32; self.lidar.beams];
            self.lidar
                .scan(&self.world, &self.plant.pose, &mut self.rng, &mut ranges);
            if self.lidar_nan {
                ranges.fill(f32::NAN);
            }
            let lost = self.scan_loss > 0.0 && self.rng.uniform() < self.scan_loss;
            if !lost {
                self.in_flight
                    .push_back((self.now.add_nanos(self.lidar_latency_ns), ranges));
            }
        }
        while self
            .in_flight
            .front()
            .is_some_and(|(at, _)| *at <= self.now)
        {
            let (_, ranges) = self.in_flight.pop_front().expect("checked");
            self.deliver_scan(ranges);
        }
        self.ticks += 1;
        let mut estop = [EstopReport::Clear(self.now); EstopSource::COUNT];
        if self.hardware_pressed {
            estop[EstopSource::Hardware.index()] = EstopReport::Pressed(self.now);
        }
        let inputs = SafetyInputs {
            estop,
            reset_request_seq: self.reset_request_seq,
            scan: Some(Scan {
                stamp: self.scan_stamp,
                angle_min_rad: self.lidar.angle_min_rad,
                angle_increment_rad: self.lidar.angle_increment_rad,
                range_min_m: self.lidar.range_min_m,
                range_max_m: self.lidar.range_max_m,
                ranges_m: &self.ranges,
            }),
            odometry: Some(Odometry {
                stamp: self.now,
                twist: self.plant.velocity,
            }),
            joint_state: None,
        };
        let command = command(self.now);
        let proposed = command.base;
        let before = self.alloc_counter.map(|f| f());
        let verdict = self.safety.evaluate(&inputs, &command, self.now);
        if let (Some(f), Some(before)) = (self.alloc_counter, before) {
            self.evaluate_allocations += f() - before;
        }
        self.plant
            .step(verdict.command.base, verdict.power_enabled, dt_s);
        let pose = self.plant.pose;
        let world_footprint: Vec<[f64; 2]> =
            self.footprint.iter().map(|&p| pose.transform(p)).collect();
        TickRecord {
            time_s: self.world.time_s,
            pose,
            velocity: self.plant.velocity,
            proposed,
            verdict,
            clearance_m: self.world.clearance(&world_footprint),
        }
    }

    /// A scan arriving now: straight into the safety inputs, or as a ROS message through CDR
    /// and the port (stamped on reception by the port, whatever its header says).
    fn deliver_scan(&mut self, ranges: Vec<f32>) {
        let Some(port) = self.port.as_mut() else {
            self.ranges.copy_from_slice(&ranges);
            self.scan_stamp = self.now;
            return;
        };
        let msg = reflex_ros::port::LaserScan {
            header: reflex_ros::port::Header {
                stamp: reflex_ros::port::Time::from_nanos(self.wall_clock_ns),
                frame_id: "laser".into(),
            },
            angle_min: self.lidar.angle_min_rad,
            angle_max: self.lidar.angle_min_rad
                + self.lidar.angle_increment_rad * (ranges.len() as f32 - 1.0),
            angle_increment: self.lidar.angle_increment_rad,
            time_increment: 0.0,
            scan_time: (self.period_ns * self.scan_every_ticks) as f32 * 1e-9,
            range_min: self.lidar.range_min_m,
            range_max: self.lidar.range_max_m,
            ranges,
            intensities: Vec::new(),
        };
        let wire = reflex_ros::port::cdr::encode(&msg).expect("a LaserScan always encodes");
        match reflex_ros::port::cdr::decode::<reflex_ros::port::LaserScan>(&wire) {
            Ok(scan) => port.on_scan(&scan, self.now.as_nanos()),
            Err(_) => return,
        }
        let (stamp_ns, ranges) = port.latest_scan();
        if ranges.len() == self.ranges.len() {
            self.ranges.copy_from_slice(ranges);
            self.scan_stamp = reflex_safety::Monotonic::from_nanos(stamp_ns);
        }
    }

    /// The latest scan, as the safety layer saw it.
    pub fn ranges(&self) -> &[f32] {
        &self.ranges
    }
}
