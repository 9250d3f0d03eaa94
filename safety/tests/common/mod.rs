//! Test rig: a holonomic base with a rectangular footprint, a 360-beam lidar at the base origin,
//! a 2-joint arm with gripper and workspace, five E-stop sources.
#![allow(dead_code)]

use reflex_safety::*;

pub const BEAMS: usize = 360;
pub const PERIOD_NS: u64 = 10_000_000;

pub const CONFIG: &str = r#"
control_period_ms = 10.0

[estop]
stop_category = 1
sources = [
    { name = "hardware", max_age_ms = 100.0 },
    { name = "ros_topic" },
    { name = "cloud" },
    { name = "watchdog" },
    { name = "internal" },
]

[commands]
local_policy_max_age_ms = 200.0
cloud_max_age_ms = 300.0
operator_max_age_ms = 150.0

[base]
kind = "holonomic"
max_vx_mps = 1.0
max_vy_mps = 0.5
max_wz_radps = 1.5
max_accel_x_mps2 = 10.0
max_accel_y_mps2 = 10.0
max_accel_wz_radps2 = 20.0
brake_decel_mps2 = 2.0
brake_decel_wz_radps2 = 4.0
footprint_polygon_m = [[0.3, 0.2], [-0.3, 0.2], [-0.3, -0.2], [0.3, -0.2]]

[lidar]
base_from_lidar = { x_m = 0.0, y_m = 0.0, yaw_rad = 0.0 }
max_beams = 360
max_age_ms = 100.0
reaction_time_ms = 50.0
margin_m = 0.05
slowdown_depth_m = 0.5
min_points = 2
hysteresis_m = 0.05
release_delay_ms = 200.0
max_invalid_fraction = 0.2
intrusion_speed_mps = 0.0

[arm]
state_max_age_ms = 50.0
joints = [
    { name = "shoulder", min_position = -1.0, max_position = 1.0, max_velocity = 1.0, max_acceleration = 5.0 },
    { name = "elbow", min_position = 0.0, max_position = 2.0, max_velocity = 0.5, max_acceleration = 2.0 },
]
gripper = { min_position = 0.0, max_position = 0.08 }
workspace = { min_m = [0.1, -0.5, 0.0], max_m = [0.8, 0.5, 1.0] }
"#;

pub fn config() -> SafetyConfig {
    toml::from_str(CONFIG).expect("test config parses")
}

/// `CONFIG` with one `key = value` line replaced (or appended to `[table]` when absent).
pub fn config_with(table: &str, key: &str, value: &str) -> SafetyConfig {
    let mut out = String::new();
    let mut current = String::new();
    let mut done = false;
    let mut skipping = false;
    for line in CONFIG.lines() {
        let trimmed = line.trim();
        if skipping {
            skipping = trimmed != "]";
            continue;
        }
        if trimmed.starts_with('[') && !trimmed.starts_with("[[") && trimmed.ends_with(']') {
            if current == table && !done {
                out.push_str(&format!("{key} = {value}\n"));
                done = true;
            }
            current = trimmed.trim_matches(|c| c == '[' || c == ']').to_string();
        }
        if current == table && trimmed.starts_with(&format!("{key} =")) {
            out.push_str(&format!("{key} = {value}\n"));
            done = true;
            skipping = trimmed.ends_with('[');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !done {
        assert_eq!(current, table, "table {table} must exist");
        out.push_str(&format!("{key} = {value}\n"));
    }
    toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

/// A rig around one `Safety`, advancing 10 ms per step, feeding fresh inputs.
pub struct Rig {
    pub safety: Safety,
    /// Everything the safety layer reads; separate so `w.inputs()` and `safety` borrow apart.
    pub w: World,
}

impl std::ops::Deref for Rig {
    type Target = World;
    fn deref(&self) -> &World {
        &self.w
    }
}

impl std::ops::DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.w
    }
}

pub struct World {
    pub now: Monotonic,
    pub ranges: Vec<f32>,
    pub angle_min: f32,
    pub angle_increment: f32,
    pub estop: [EstopReport; EstopSource::COUNT],
    pub reset_seq: u64,
    pub positions: Vec<f64>,
    pub velocities: Vec<f64>,
    pub scan_present: bool,
    pub joints_present: bool,
    /// How old the joint state is when the layer reads it (ns).
    pub joint_age_ns: u64,
    pub scan_age_ns: u64,
}

impl Rig {
    /// A rig whose safety layer has seen every source clear and one reset: ready to move.
    pub fn started(config: SafetyConfig) -> Self {
        let mut rig = Self::unstarted(config);
        rig.all_sources_clear();
        rig.reset();
        let v = rig.step(Command::default());
        assert!(!rig.safety.is_latched(), "rig must start unlatched: {v:?}");
        rig
    }

    pub fn unstarted(config: SafetyConfig) -> Self {
        Self {
            safety: Safety::new(config).expect("valid config"),
            w: World {
                now: Monotonic::from_millis(1_000),
                ranges: vec![f32::INFINITY; BEAMS],
                angle_min: -std::f32::consts::PI,
                angle_increment: std::f32::consts::TAU / BEAMS as f32,
                estop: [EstopReport::Unknown; EstopSource::COUNT],
                reset_seq: 0,
                positions: vec![0.0, 1.0],
                velocities: vec![0.0, 0.0],
                scan_present: true,
                joints_present: true,
                joint_age_ns: 0,
                scan_age_ns: 0,
            },
        }
    }

    /// Advances 10 ms, refreshes the hardware heartbeat if it is clear, evaluates `command`
    /// (its stamp is set to the new `now` when it is the default stamp).
    pub fn step(&mut self, mut command: Command) -> Verdict {
        self.now = self.now.add_nanos(PERIOD_NS);
        let hw = EstopSource::Hardware.index();
        if matches!(self.estop[hw], EstopReport::Clear(_)) {
            self.estop[hw] = EstopReport::Clear(self.now);
        }
        if command.stamp == Monotonic::default() {
            command.stamp = self.now;
        }
        let inputs = self.w.inputs();
        self.safety.evaluate(&inputs, &command, self.w.now)
    }

    pub fn drive(&mut self, vx: f64, vy: f64, wz: f64) -> Verdict {
        self.step(Command::base(
            CommandSource::LocalPolicy,
            Monotonic::default(),
            vx,
            vy,
            wz,
        ))
    }

    /// Drives with the same command for `ticks` ticks and returns the last verdict.
    pub fn drive_for(&mut self, ticks: usize, vx: f64, vy: f64, wz: f64) -> Verdict {
        let mut last = self.drive(vx, vy, wz);
        for _ in 1..ticks {
            last = self.drive(vx, vy, wz);
        }
        last
    }
}

impl World {
    pub fn all_sources_clear(&mut self) {
        for source in EstopSource::ALL {
            self.estop[source.index()] = EstopReport::Clear(self.now);
        }
    }

    pub fn press(&mut self, source: EstopSource) {
        self.estop[source.index()] = EstopReport::Pressed(self.now);
    }

    pub fn release(&mut self, source: EstopSource) {
        self.estop[source.index()] = EstopReport::Clear(self.now);
    }

    pub fn reset(&mut self) {
        self.reset_seq += 1;
    }

    pub fn inputs(&self) -> SafetyInputs<'_> {
        SafetyInputs {
            estop: self.estop,
            reset_request_seq: self.reset_seq,
            scan: self.scan_present.then(|| Scan {
                stamp: Monotonic::from_nanos(self.now.as_nanos().saturating_sub(self.scan_age_ns)),
                angle_min_rad: self.angle_min,
                angle_increment_rad: self.angle_increment,
                range_min_m: 0.05,
                range_max_m: 30.0,
                ranges_m: &self.ranges,
            }),
            odometry: None,
            joint_state: self.joints_present.then(|| JointState {
                stamp: Monotonic::from_nanos(self.now.as_nanos().saturating_sub(self.joint_age_ns)),
                positions: &self.positions,
                velocities: &self.velocities,
            }),
        }
    }

    pub fn clear_scan(&mut self) {
        self.ranges.fill(f32::INFINITY);
    }

    /// Beam index whose direction is closest to `angle_rad`.
    pub fn beam(&self, angle_rad: f32) -> usize {
        let i = ((angle_rad - self.angle_min) / self.angle_increment).round() as i64;
        i.rem_euclid(BEAMS as i64) as usize
    }

    /// A straight wall perpendicular to `direction_rad`, `distance_m` from the lidar, seen
    /// within ±`half_width_deg` degrees of that direction.
    pub fn wall(&mut self, direction_rad: f32, distance_m: f32, half_width_deg: i32) {
        for d in -half_width_deg..=half_width_deg {
            let off = (d as f32).to_radians();
            let i = self.beam(direction_rad + off);
            self.ranges[i] = distance_m / off.cos();
        }
    }

    /// A small obstacle of `beams` adjacent beams at `range_m` around `direction_rad`.
    pub fn obstacle(&mut self, direction_rad: f32, range_m: f32, beams: usize) {
        let first = self.beam(direction_rad) as i64 - (beams as i64 / 2);
        for k in 0..beams as i64 {
            self.ranges[(first + k).rem_euclid(BEAMS as i64) as usize] = range_m;
        }
    }
}

/// A local-policy command at the rig's next tick moving only the arm.
pub fn arm_command(positions: [Option<f64>; 2], velocities: [Option<f64>; 2]) -> Command {
    let mut c = Command {
        source: CommandSource::LocalPolicy,
        ..Command::default()
    };
    for i in 0..2 {
        c.joints[i] = JointTarget {
            position: positions[i],
            velocity: velocities[i],
        };
    }
    c
}

/// The rig's arm with a kinematic chain: shoulder yaw at (0, 0, 0.2), elbow pitch 0.3 m out,
/// the tool 0.3 m further; a post (keep-out) beside it at about +0.5 rad of yaw, the table
/// (workspace floor) at z = 0.
pub const ZONED: &str = r#"workspace = { min_m = [-0.2, -0.7, 0.0], max_m = [0.8, 0.7, 1.0] }
keep_out = [{ min_m = [0.4, 0.25, 0.0], max_m = [0.6, 0.45, 0.5] }]
kinematics = { tool = { xyz_m = [0.3, 0.0, 0.0], radius_m = 0.05 }, links = [
    { joint = "shoulder", xyz_m = [0.0, 0.0, 0.2], axis = [0.0, 0.0, 1.0], radius_m = 0.05 },
    { joint = "elbow", xyz_m = [0.3, 0.0, 0.0], axis = [0.0, 1.0, 0.0], radius_m = 0.05 },
] }
"#;

pub fn zoned(keep_out: bool) -> SafetyConfig {
    let workspace = "workspace = { min_m = [0.1, -0.5, 0.0], max_m = [0.8, 0.5, 1.0] }\n";
    assert!(CONFIG.contains(workspace));
    let mut zoned = ZONED.to_string();
    if !keep_out {
        zoned = zoned.replace("keep_out", "# keep_out");
    }
    toml::from_str(&CONFIG.replace(workspace, &zoned)).expect("zoned config parses")
}

/// Distance (sampled, exact enough for a test) from the arm's links at `q` to `zone` minus
/// each link's radius: < 0 means a link is in it. Independent of the layer's slab clipping.
pub fn clearance(k: &Kinematics, q: &[f64], zone: ([f64; 3], [f64; 3])) -> f64 {
    let p = k.link_points(q);
    // Every link and the tool of ZONED are 0.05 m capsules.
    let radius = 0.05;
    let mut best = f64::INFINITY;
    for i in 0..=p.count {
        let (a, b) = (p.points[i], p.points[(i + 1).min(p.count)]);
        for s in 0..=200 {
            let t = s as f64 / 200.0;
            let d2: f64 = (0..3)
                .map(|ax| {
                    let x = a[ax] + t * (b[ax] - a[ax]);
                    let out = (zone.0[ax] - x).max(x - zone.1[ax]).max(0.0);
                    out * out
                })
                .sum();
            best = best.min(d2.sqrt() - radius);
        }
    }
    best
}

/// The zoned rig's post (keep-out) and workspace.
pub const POST: ([f64; 3], [f64; 3]) = ([0.4, 0.25, 0.0], [0.6, 0.45, 0.5]);
pub const ZONED_WORKSPACE: ([f64; 3], [f64; 3]) = ([-0.2, -0.7, 0.0], [0.8, 0.7, 1.0]);

/// How far inside the zoned workspace every link is (m; < 0: a link is outside).
pub fn workspace_margin(k: &Kinematics, q: &[f64]) -> f64 {
    let p = k.link_points(q);
    let mut best = f64::INFINITY;
    for point in &p.points[..=p.count] {
        for (ax, x) in point.iter().enumerate() {
            best = best
                .min(x - ZONED_WORKSPACE.0[ax] - 0.05)
                .min(ZONED_WORKSPACE.1[ax] - x - 0.05);
        }
    }
    best
}

/// The zoned rig's chain.
pub fn zoned_kinematics() -> Kinematics {
    Kinematics::new(
        zoned(true)
            .arm
            .as_ref()
            .unwrap()
            .kinematics
            .as_ref()
            .unwrap(),
    )
}

/// SAF-017's settings on the zoned rig (no keep-out box): the arm's base at the lidar.
pub const SEPARATION: SeparationConfig = SeparationConfig {
    base_from_arm: Pose2 {
        x_m: 0.0,
        y_m: 0.0,
        yaw_rad: 0.0,
    },
    human_speed_mps: 1.6,
    reaction_time_ms: 50.0,
    margin_m: 0.2,
};

/// The zoned rig (no keep-out box) with speed and separation monitoring; `arm_only` drops the
/// base, so the lidar serves the arm alone.
pub fn separated(arm_only: bool) -> SafetyConfig {
    let mut c = zoned(false);
    c.arm.as_mut().unwrap().separation = Some(SEPARATION);
    if arm_only {
        c.base = None;
    }
    c
}

/// Horizontal distance (sampled, independent of the layer's geometry) from a person standing
/// at `person` (base frame; the arm's base is at the origin) to the zoned arm's capsules at
/// `q`, minus their 0.05 m radius.
pub fn person_separation(k: &Kinematics, q: &[f64], person: [f64; 2]) -> f64 {
    let p = k.link_points(q);
    let mut best = f64::INFINITY;
    for i in 0..=p.count {
        let (a, b) = (p.points[i], p.points[(i + 1).min(p.count)]);
        for s in 0..=200 {
            let t = s as f64 / 200.0;
            let x = a[0] + t * (b[0] - a[0]);
            let y = a[1] + t * (b[1] - a[1]);
            best = best.min((x - person[0]).hypot(y - person[1]) - 0.05);
        }
    }
    best
}

impl World {
    /// A person (three adjacent beams) standing at `xy` in the base frame (the lidar's).
    pub fn person_at(&mut self, xy: [f64; 2]) {
        self.clear_scan();
        self.obstacle(xy[1].atan2(xy[0]) as f32, xy[0].hypot(xy[1]) as f32, 3);
    }
}
