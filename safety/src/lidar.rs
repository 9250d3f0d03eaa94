//! Lidar proximity geometry (SAF-003/004/005): beams to points, and the sweep of the convex
//! footprint along the commanded motion. All buffers are sized at construction; every pass is
//! O(beams × footprint edges) and allocation-free.

use crate::config::{LidarConfig, MAX_FOOTPRINT_VERTICES, MAX_MIN_POINTS};
use crate::types::{Reason, Scan};

/// Ranges beyond this (m) are refused as scan metadata: keeps every product finite in f32.
const MAX_RANGE_LIMIT_M: f32 = 10_000.0;
/// Below this |n·u| an edge counts as parallel to the motion.
const PARALLEL_EPS: f32 = 1e-9;

/// Beams are processed in blocks of this many; a block with no point near enough is skipped.
const BLOCK: usize = 16;
/// Where beams without a point (clear, invalid, padding) are placed: beyond every zone.
const FAR_M: f32 = 1.0e6;
/// How closely a scan's angles must match a taught background's (rad): the f32 round trip
/// through TOML is exact, so this only absorbs a driver's float formatting.
const BACKGROUND_ANGLE_EPS: f32 = 1e-6;

/// Beam classes: 0 = a point (in range, or -inf), 1 = clear (+inf), 2 = invalid. u32, not
/// u8, so the counting loops vectorise alongside the f32 lanes.
const INVALID: u32 = 2;

/// The convex footprint as outward half-planes `n·p <= c` in the base frame.
#[derive(Debug, Clone)]
pub(crate) struct Footprint {
    /// (nx, ny, c) per edge.
    edges: [[f32; 3]; MAX_FOOTPRINT_VERTICES],
    vertices: [[f32; 2]; MAX_FOOTPRINT_VERTICES],
    edge_count: usize,
    /// Largest distance of a vertex from the base origin (m).
    pub circumradius_m: f32,
}

impl Footprint {
    /// `polygon` is convex and counter-clockwise (checked by config validation).
    pub(crate) fn new(polygon: &[[f64; 2]]) -> Self {
        let mut edges = [[0.0f32; 3]; MAX_FOOTPRINT_VERTICES];
        let mut vertices = [[0.0f32; 2]; MAX_FOOTPRINT_VERTICES];
        let n = polygon.len();
        for (v, p) in vertices.iter_mut().zip(polygon) {
            *v = [p[0] as f32, p[1] as f32];
        }
        for (i, edge) in edges.iter_mut().enumerate().take(n) {
            let a = polygon[i];
            let b = polygon[(i + 1) % n];
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let len = dx.hypot(dy);
            let (nx, ny) = (dy / len, -dx / len);
            *edge = [nx as f32, ny as f32, (nx * a[0] + ny * a[1]) as f32];
        }
        let circumradius_m = polygon.iter().map(|v| v[0].hypot(v[1])).fold(0.0, f64::max) as f32;
        Self {
            edges,
            vertices,
            edge_count: n,
            circumradius_m,
        }
    }

    fn edges(&self) -> &[[f32; 3]] {
        &self.edges[..self.edge_count]
    }

    /// Extent of the footprint along `u` (front) and across it (min, max along the left
    /// normal), for the intrusion corridor.
    fn extent(&self, ux: f32, uy: f32) -> (f32, f32, f32) {
        let (mut front, mut left, mut right) = (f32::MIN, f32::MIN, f32::MAX);
        for &[x, y] in &self.vertices[..self.edge_count] {
            front = front.max(x * ux + y * uy);
            let across = -x * uy + y * ux;
            left = left.max(across);
            right = right.min(across);
        }
        (front, right, left)
    }

    /// Whether `p` lies inside or on the footprint.
    #[cfg(test)]
    pub(crate) fn contains(&self, x: f32, y: f32) -> bool {
        self.edges()
            .iter()
            .all(|&[nx, ny, c]| nx * x + ny * y - c <= 0.0)
    }
}

/// Result of the translation sweep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sweep {
    /// Travel (m) along the motion before the footprint touches the `min_points`-th nearest
    /// point; 0 when that many points are inside the footprint; `+inf` when fewer points lie
    /// anywhere along the path.
    pub kth_contact_m: f32,
    /// Invalid beams pointing into the half-plane of motion.
    pub invalid_in_direction: u32,
    /// All beams pointing into the half-plane of motion.
    pub beams_in_direction: u32,
}

/// Scan processing state: beam trigonometry cache and per-beam scratch buffers.
#[derive(Debug, Clone)]
pub(crate) struct Lidar {
    origin_x: f32,
    origin_y: f32,
    yaw: f32,
    max_beams: usize,
    min_points: usize,
    /// Beam directions in the base frame, cached for one scan geometry.
    cos: Vec<f32>,
    sin: Vec<f32>,
    cache_key: Option<(u32, u32, usize)>,
    /// Per-beam scratch, padded to whole blocks: point in the base frame (`FAR_M` when the
    /// beam has none), class, sweep interval.
    x: Vec<f32>,
    y: Vec<f32>,
    class: Vec<u32>,
    /// Beam ranges `[start, end)` made of whole blocks with a point within `near_r2` of the
    /// origin, adjacent blocks merged (see `select_near`).
    runs: Vec<(u32, u32)>,
    run_count: usize,
    near_r2: f32,
    lo: Vec<f32>,
    hi: Vec<f32>,
    beams: usize,
    invalid_total: u32,
    angle_min: f32,
    angle_increment: f32,
    /// SAF-019: per-beam background range (0: none; always 0 without a taught background, so
    /// the masking pass is the same branch-free code either way) and its band.
    background: Vec<f32>,
    /// The band: this much nearer (half the tolerance) to this much farther (the tolerance).
    background_near: f32,
    background_far: f32,
    /// The taught geometry (angle_min, increment, beams) a scan must match.
    background_geometry: Option<(f32, f32, usize)>,
    /// More taught beams than this not seeing their background (nor anything nearer): the
    /// cell or the scanner moved.
    background_max_unseen: u32,
}

impl Lidar {
    pub(crate) fn new(cfg: &LidarConfig) -> Self {
        let n = cfg.max_beams;
        let padded = n.div_ceil(BLOCK) * BLOCK;
        Self {
            origin_x: cfg.base_from_lidar.x_m as f32,
            origin_y: cfg.base_from_lidar.y_m as f32,
            yaw: cfg.base_from_lidar.yaw_rad as f32,
            max_beams: n,
            min_points: cfg.min_points.min(MAX_MIN_POINTS) as usize,
            cos: vec![0.0; n],
            sin: vec![0.0; n],
            cache_key: None,
            x: vec![FAR_M; padded],
            y: vec![FAR_M; padded],
            class: vec![INVALID; n],
            runs: vec![(0, 0); padded / BLOCK],
            run_count: 0,
            near_r2: 0.0,
            lo: vec![0.0; padded],
            hi: vec![0.0; padded],
            beams: 0,
            invalid_total: 0,
            angle_min: 0.0,
            angle_increment: 0.0,
            background: {
                let mut ranges = vec![0.0; n];
                if let Some(bg) = &cfg.background {
                    for (slot, r) in ranges.iter_mut().zip(&bg.ranges_m) {
                        *slot = *r as f32;
                    }
                }
                ranges
            },
            background_near: cfg
                .background
                .as_ref()
                .map_or(0.0, |b| (b.tolerance_m / 2.0) as f32),
            background_far: cfg
                .background
                .as_ref()
                .map_or(0.0, |b| b.tolerance_m as f32),
            background_max_unseen: cfg.background.as_ref().map_or(u32::MAX, |b| {
                let taught = b.ranges_m.iter().filter(|r| **r > 0.0).count();
                (cfg.max_invalid_fraction * taught as f64).floor() as u32
            }),
            background_geometry: cfg.background.as_ref().map(|b| {
                (
                    b.angle_min_rad as f32,
                    b.angle_increment_rad as f32,
                    b.ranges_m.len(),
                )
            }),
        }
    }

    /// Checks the scan's metadata and turns its ranges into points in the base frame.
    pub(crate) fn prepare(&mut self, scan: &Scan<'_>) -> Result<(), Reason> {
        let n = scan.ranges_m.len();
        let meta_ok = n > 0
            && n <= self.max_beams
            && scan.angle_min_rad.is_finite()
            && scan.angle_increment_rad.is_finite()
            && scan.angle_increment_rad != 0.0
            && (scan.angle_increment_rad.abs() * (n - 1) as f32)
                <= 2.0 * std::f32::consts::PI + 1e-3
            && scan.range_min_m.is_finite()
            && scan.range_max_m.is_finite()
            && scan.range_min_m >= 0.0
            && scan.range_max_m > scan.range_min_m
            && scan.range_max_m <= MAX_RANGE_LIMIT_M;
        if !meta_ok {
            self.beams = 0;
            return Err(Reason::ScanInvalid);
        }
        if let Some((angle_min, increment, beams)) = self.background_geometry {
            // SAF-019: the taught ranges belong to these beams only; another geometry (a
            // reconfigured or replaced scanner) would mask the wrong directions.
            let matches = n == beams
                && (scan.angle_min_rad - angle_min).abs() <= BACKGROUND_ANGLE_EPS
                && (scan.angle_increment_rad - increment).abs() <= BACKGROUND_ANGLE_EPS;
            if !matches {
                self.beams = 0;
                return Err(Reason::ScanBackgroundMismatch);
            }
        }
        let key = (
            scan.angle_min_rad.to_bits(),
            scan.angle_increment_rad.to_bits(),
            n,
        );
        if self.cache_key != Some(key) {
            // Rare: only when the scan geometry changes. f64 trig keeps the table exact.
            for i in 0..n {
                let a = f64::from(self.yaw)
                    + f64::from(scan.angle_min_rad)
                    + i as f64 * f64::from(scan.angle_increment_rad);
                self.cos[i] = a.cos() as f32;
                self.sin[i] = a.sin() as f32;
            }
            self.cache_key = Some(key);
        }
        self.beams = n;
        self.angle_min = scan.angle_min_rad;
        self.angle_increment = scan.angle_increment_rad;
        let (rmin, rmax) = (scan.range_min_m, scan.range_max_m);
        let (ox, oy) = (self.origin_x, self.origin_y);
        let mut invalid = 0u32;
        // Branch-free (`&`/`|`, selects, arithmetic class) so it vectorises. REP 117: -inf =
        // object closer than range_min (placed at the sensor: worst case), +inf = no return
        // (clear), NaN or outside [range_min, range_max] = invalid.
        let ranges = &scan.ranges_m[..n];
        let (cos, sin) = (&self.cos[..n], &self.sin[..n]);
        let (xs, ys, classes) = (&mut self.x[..n], &mut self.y[..n], &mut self.class[..n]);
        let background = &self.background[..n];
        let (near, far) = (self.background_near, self.background_far);
        let mut unseen = 0u32;
        for i in 0..n {
            let r = ranges[i];
            let in_range = (r >= rmin) & (r <= rmax);
            // SAF-019: within the band of the beam's taught background it is that object (no
            // return). Nearer or farther is a point as ever (someone in front of it; or it is
            // gone and what is behind shows); no return where it stood cannot be trusted
            // (invalid); -inf is never masked. A taught beam that sees neither its object nor
            // anything nearer is unseen.
            let b = background[i];
            let taught = b > 0.0;
            let masked = taught & in_range & (r >= b - near) & (r <= b + far);
            let gone = taught & (r == f32::INFINITY);
            let point = (in_range & !masked) | (r == f32::NEG_INFINITY);
            let clear = ((r == f32::INFINITY) & !gone) | masked;
            let nearer = in_range & (r < b - near);
            unseen += u32::from(taught & !masked & !nearer & (r != f32::NEG_INFINITY));
            let range = if in_range { r } else { 0.0 };
            let range = if point { range } else { FAR_M };
            // VALID 0, CLEAR 1, INVALID 2.
            let class = u32::from(!point) * (1 + u32::from(!clear));
            classes[i] = class;
            invalid += u32::from(class == INVALID);
            xs[i] = ox + range * cos[i];
            ys[i] = oy + range * sin[i];
        }
        self.invalid_total = invalid;
        let padded = n.div_ceil(BLOCK) * BLOCK;
        self.x[n..padded].fill(FAR_M);
        self.y[n..padded].fill(FAR_M);
        self.run_count = 0;
        if unseen > self.background_max_unseen {
            // The points stay: the stop this reason makes still sees them.
            return Err(Reason::ScanBackgroundMismatch);
        }
        Ok(())
    }

    /// Marks the blocks holding a point within `radius_m` of the base origin for `sweep` and
    /// `rotation_hits`. A point farther than the footprint's circumradius plus every zone depth
    /// cannot be in any zone, and scans are spatially coherent, so most blocks are skipped.
    pub(crate) fn select_near(&mut self, radius_m: f32) {
        let r2 = radius_m * radius_m;
        let blocks = self.beams.div_ceil(BLOCK);
        let mut count = 0usize;
        for b in 0..blocks {
            let xs = &self.x[b * BLOCK..][..BLOCK];
            let ys = &self.y[b * BLOCK..][..BLOCK];
            let near = xs
                .iter()
                .zip(ys)
                .fold(false, |any, (x, y)| any | (x * x + y * y <= r2));
            if near {
                let (start, end) = ((b * BLOCK) as u32, ((b + 1) * BLOCK) as u32);
                if count > 0 && self.runs[count - 1].1 == start {
                    self.runs[count - 1].1 = end;
                } else {
                    self.runs[count] = (start, end);
                    count += 1;
                }
            }
        }
        self.run_count = count;
        self.near_r2 = r2;
    }

    /// Whether direction `(ux, uy)` (base frame, unit) lies inside the scan's field of view.
    pub(crate) fn observes(&self, ux: f32, uy: f32) -> bool {
        let span = self.angle_increment.abs() * (self.beams.saturating_sub(1)) as f32;
        if span >= 2.0 * std::f32::consts::PI - 2.0 * self.angle_increment.abs() {
            return true;
        }
        let start = if self.angle_increment > 0.0 {
            self.angle_min
        } else {
            self.angle_min - span
        };
        let direction_in_lidar = uy.atan2(ux) - self.yaw;
        let offset = (direction_in_lidar - start).rem_euclid(2.0 * std::f32::consts::PI);
        offset <= span
    }

    /// Sweeps the footprint from its current pose along unit direction `(ux, uy)`. Points ahead
    /// of the front within `intrusion_m` of the swept corridor's sides count as on the path,
    /// at their distance ahead of the front (someone who can step in before the robot stops).
    pub(crate) fn sweep(
        &mut self,
        footprint: &Footprint,
        ux: f32,
        uy: f32,
        intrusion_m: f32,
    ) -> Sweep {
        let n = self.beams;
        let (x, y) = (&self.x, &self.y);
        let (lo, hi) = (&mut self.lo, &mut self.hi);
        let runs = &self.runs[..self.run_count];
        for &(a, b) in runs {
            let (a, b) = (a as usize, b as usize);
            lo[a..b].fill(0.0);
            hi[a..b].fill(f32::INFINITY);
        }
        // Point p is hit after travelling t when n·(p - t·u) <= c for every edge. Edge-major
        // passes over runs of beams keep each inner loop branch-free so it vectorises
        // (`if a > b` selects compile to packed max/min).
        for &[nx, ny, c] in footprint.edges() {
            let k = nx * ux + ny * uy;
            let inv = 1.0 / k;
            for &(a, b) in runs {
                let (a, b) = (a as usize, b as usize);
                let (xs, ys) = (&x[a..b], &y[a..b]);
                let (los, his) = (&mut lo[a..b], &mut hi[a..b]);
                if k > PARALLEL_EPS {
                    for ((l, &x), &y) in los.iter_mut().zip(xs).zip(ys) {
                        let t = (nx * x + ny * y - c) * inv;
                        *l = if t > *l { t } else { *l };
                    }
                } else if k < -PARALLEL_EPS {
                    for ((h, &x), &y) in his.iter_mut().zip(xs).zip(ys) {
                        let t = (nx * x + ny * y - c) * inv;
                        *h = if t < *h { t } else { *h };
                    }
                } else {
                    for ((h, &x), &y) in his.iter_mut().zip(xs).zip(ys) {
                        let outside = nx * x + ny * y - c > 0.0;
                        *h = if outside { -1.0 } else { *h };
                    }
                }
            }
        }
        let (front, right, left) = footprint.extent(ux, uy);
        let r2 = self.near_r2;
        let mut nearest = KNearest::new(self.min_points);
        for &(a, b) in runs {
            let (a, b) = (a as usize, b as usize);
            let (xs, ys) = (&x[a..b], &y[a..b]);
            let (los, his) = (&mut lo[a..b], &hi[a..b]);
            // Contact per beam (into `lo`), branch-free.
            for (((l, &h), &x), &y) in los.iter_mut().zip(his).zip(xs).zip(ys) {
                let swept = if *l <= h { *l } else { f32::INFINITY };
                let ahead = x * ux + y * uy - front;
                let across = y * ux - x * uy;
                let outside = (right - across).max(across - left);
                let intruding = (ahead > 0.0) & (outside <= intrusion_m);
                let contact = if intruding && ahead < swept {
                    ahead
                } else {
                    swept
                };
                *l = if x * x + y * y <= r2 {
                    contact
                } else {
                    f32::INFINITY
                };
            }
            for &contact in los.iter() {
                nearest.insert(contact);
            }
        }
        let mut invalid_in_direction = 0u32;
        let mut beams_in_direction = 0u32;
        // Without invalid beams the fraction is 0 whatever the direction: skip the pass.
        let classes = if self.invalid_total == 0 { 0 } else { n };
        for ((&c, &s), &class) in self.cos[..classes]
            .iter()
            .zip(&self.sin[..classes])
            .zip(&self.class[..classes])
        {
            let in_direction = c * ux + s * uy > 0.0;
            beams_in_direction += u32::from(in_direction);
            invalid_in_direction += u32::from(in_direction & (class == INVALID));
        }
        Sweep {
            kth_contact_m: nearest.kth(),
            invalid_in_direction,
            beams_in_direction,
        }
    }

    /// Number of points the footprint touches while rotating by `angle_rad` (signed, CCW
    /// positive) about the base origin. The arc of each point is replaced by its chord, which
    /// lies closer to the origin and so is hit whenever the arc is (the footprint is convex and
    /// contains the origin); for |angle| >= π every point within the circumradius counts.
    pub(crate) fn rotation_hits(&self, footprint: &Footprint, angle_rad: f32) -> u32 {
        let r2 = footprint.circumradius_m * footprint.circumradius_m;
        let full_turn = angle_rad.abs() >= std::f32::consts::PI;
        // Relative to the robot, a point turns by -angle.
        let (s, c) = (-angle_rad).sin_cos();
        let mut hits = 0u32;
        let points = self.runs[..self.run_count].iter().flat_map(|&(a, b)| {
            let (a, b) = (a as usize, b as usize);
            self.x[a..b].iter().zip(&self.y[a..b])
        });
        for (&px, &py) in points {
            if px * px + py * py > r2 {
                continue;
            }
            if full_turn {
                hits += 1;
                continue;
            }
            let (dx, dy) = (c * px - s * py - px, s * px + c * py - py);
            let (mut t_lo, mut t_hi) = (0.0f32, 1.0f32);
            for &[nx, ny, off] in footprint.edges() {
                let e = nx * px + ny * py - off;
                let k = nx * dx + ny * dy;
                if k > PARALLEL_EPS {
                    t_hi = t_hi.min(-e / k);
                } else if k < -PARALLEL_EPS {
                    t_lo = t_lo.max(-e / k);
                } else if e > 0.0 {
                    t_hi = -1.0;
                }
            }
            hits += u32::from(t_lo <= t_hi);
        }
        hits
    }

    /// SAF-017: the `min_points`-th smallest distance (m) from a point of the last prepared
    /// scan to any of `capsules` ((a, b, radius), base frame), in the horizontal plane: each
    /// point stands for a vertical line, a person at any height. Only points within `cull_m`
    /// of `center` are measured; +inf when fewer than `min_points` are. Negative inside a
    /// capsule. Every capsule lies within `extent_m` of `center`, so a point whose distance
    /// to that circle is already no nearer than the k-th nearest so far cannot change the
    /// result and is not measured against each capsule (the same value, less work).
    pub(crate) fn kth_separation(
        &self,
        capsules: &[([f32; 2], [f32; 2], f32)],
        center: [f32; 2],
        extent_m: f32,
        cull_m: f32,
    ) -> f32 {
        let r2 = cull_m * cull_m;
        let mut nearest = KNearest::new(self.min_points);
        // Beams without a point lie at FAR_M: culled here.
        for (&x, &y) in self.x[..self.beams].iter().zip(&self.y[..self.beams]) {
            let (cx, cy) = (x - center[0], y - center[1]);
            let c2 = cx * cx + cy * cy;
            if c2 > r2 {
                continue;
            }
            // A lower bound of the point's distance to every capsule (NaN: measured below).
            if c2.sqrt() - extent_m >= nearest.kth() {
                continue;
            }
            let mut best = f32::INFINITY;
            for &(a, b, r) in capsules {
                let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
                let (px, py) = (x - a[0], y - a[1]);
                let len2 = ex * ex + ey * ey;
                let t = if len2 > 0.0 {
                    ((px * ex + py * ey) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (qx, qy) = (px - t * ex, py - t * ey);
                let d = (qx * qx + qy * qy).sqrt() - r;
                // Not finite (geometry out of range): as if someone stood on the arm.
                best = if d.is_nan() {
                    f32::NEG_INFINITY
                } else {
                    best.min(d)
                };
            }
            nearest.insert(best);
        }
        nearest.kth()
    }

    /// Invalid beams and all beams of the last prepared scan.
    pub(crate) fn invalid_fraction_inputs(&self) -> (u32, u32) {
        (self.invalid_total, self.beams as u32)
    }
}

/// The k smallest values seen, in a fixed array (k <= MAX_MIN_POINTS).
struct KNearest {
    best: [f32; MAX_MIN_POINTS as usize],
    k: usize,
}

impl KNearest {
    fn new(k: usize) -> Self {
        Self {
            best: [f32::INFINITY; MAX_MIN_POINTS as usize],
            k: k.clamp(1, MAX_MIN_POINTS as usize),
        }
    }

    fn insert(&mut self, value: f32) {
        let k = self.k;
        if value.is_nan() || value >= self.best[k - 1] {
            return;
        }
        let mut j = k - 1;
        while j > 0 && self.best[j - 1] > value {
            self.best[j] = self.best[j - 1];
            j -= 1;
        }
        self.best[j] = value;
    }

    fn kth(&self) -> f32 {
        self.best[self.k - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(half: f64) -> Footprint {
        Footprint::new(&[[-half, -half], [half, -half], [half, half], [-half, half]])
    }

    /// The pruned k-th separation equals the brute-force one: a point skipped by the
    /// bounding circle could not have changed it.
    #[test]
    fn kth_separation_prunes_without_changing_the_result() {
        let mut lidar = Lidar::new(&LidarConfig {
            base_from_lidar: crate::config::Pose2 {
                x_m: 0.0,
                y_m: 0.0,
                yaw_rad: 0.0,
            },
            max_beams: 720,
            max_age_ms: 100.0,
            reaction_time_ms: 0.0,
            margin_m: 0.05,
            slowdown_depth_m: 0.5,
            min_points: 3,
            hysteresis_m: 0.0,
            release_delay_ms: 0.0,
            max_invalid_fraction: 0.2,
            intrusion_speed_mps: 0.0,
            background: None,
        });
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for _ in 0..50 {
            let beams = 720;
            lidar.beams = beams;
            for i in 0..beams {
                let (r, a) = (0.2 + 5.0 * next(), std::f32::consts::TAU * next());
                lidar.x[i] = r * a.cos();
                lidar.y[i] = r * a.sin();
            }
            let capsules: Vec<_> = (0..6)
                .map(|_| {
                    let p = |n: &mut dyn FnMut() -> f32| [0.8 * n() - 0.4, 0.8 * n() - 0.4];
                    (p(&mut next), p(&mut next), 0.05)
                })
                .collect();
            // Every capsule within 0.4·√2 + 0.05 of the centre.
            let extent = 0.62;
            let got = lidar.kth_separation(&capsules, [0.0, 0.0], extent, 100.0);
            let mut all: Vec<f32> = (0..beams)
                .map(|i| {
                    capsules
                        .iter()
                        .map(|&(a, b, r)| {
                            let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
                            let (px, py) = (lidar.x[i] - a[0], lidar.y[i] - a[1]);
                            let t = ((px * ex + py * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
                            (px - t * ex).hypot(py - t * ey) - r
                        })
                        .fold(f32::INFINITY, f32::min)
                })
                .collect();
            all.sort_by(f32::total_cmp);
            assert!((got - all[2]).abs() < 1e-5, "{got} vs {}", all[2]);
        }
    }

    #[test]
    fn k_nearest_keeps_the_kth_smallest() {
        let mut k = KNearest::new(3);
        for v in [5.0, 1.0, 4.0, 2.0, 3.0, f32::INFINITY] {
            k.insert(v);
        }
        assert_eq!(k.kth(), 3.0);
    }

    #[test]
    fn footprint_contains_its_inside_only() {
        let f = square(0.5);
        assert!(f.contains(0.0, 0.0));
        assert!(f.contains(0.5, 0.5));
        assert!(!f.contains(0.51, 0.0));
        assert!((f.circumradius_m - 0.5f32.hypot(0.5)).abs() < 1e-6);
    }

    fn lidar_with(ranges: &[f32], angle_min: f32, inc: f32) -> Lidar {
        let cfg = LidarConfig {
            base_from_lidar: crate::config::Pose2 {
                x_m: 0.0,
                y_m: 0.0,
                yaw_rad: 0.0,
            },
            max_beams: 64,
            max_age_ms: 100.0,
            reaction_time_ms: 0.0,
            margin_m: 0.05,
            slowdown_depth_m: 0.5,
            min_points: 1,
            hysteresis_m: 0.0,
            release_delay_ms: 0.0,
            max_invalid_fraction: 0.2,
            intrusion_speed_mps: 0.0,
            background: None,
        };
        let mut lidar = Lidar::new(&cfg);
        let scan = Scan {
            stamp: crate::Monotonic::from_nanos(0),
            angle_min_rad: angle_min,
            angle_increment_rad: inc,
            range_min_m: 0.05,
            range_max_m: 30.0,
            ranges_m: ranges,
        };
        lidar.prepare(&scan).unwrap();
        lidar.select_near(100.0);
        lidar
    }

    #[test]
    fn sweep_measures_travel_to_contact() {
        // One beam straight ahead at 2 m; the square's front edge is at 0.5 m.
        let mut lidar = lidar_with(&[2.0], 0.0, 0.1);
        let sweep = lidar.sweep(&square(0.5), 1.0, 0.0, 0.0);
        assert!((sweep.kth_contact_m - 1.5).abs() < 1e-6);
        // Moving backwards never reaches it.
        assert_eq!(
            lidar.sweep(&square(0.5), -1.0, 0.0, 0.0).kth_contact_m,
            f32::INFINITY
        );
        // Sideways: the point is not on the path of the square.
        assert_eq!(
            lidar.sweep(&square(0.5), 0.0, 1.0, 0.0).kth_contact_m,
            f32::INFINITY
        );
    }

    #[test]
    fn intrusion_corridor_counts_people_beside_the_path_ahead() {
        // A point 1 m ahead of the centre, 0.8 m to the left: 0.3 m outside the corridor.
        let r = 1.0f32.hypot(0.8);
        let a = 0.8f32.atan2(1.0);
        let mut lidar = lidar_with(&[r], a, 0.1);
        assert_eq!(
            lidar.sweep(&square(0.5), 1.0, 0.0, 0.2).kth_contact_m,
            f32::INFINITY
        );
        let c = lidar.sweep(&square(0.5), 1.0, 0.0, 0.35).kth_contact_m;
        assert!((c - 0.5).abs() < 1e-5, "{c}");
        // Not when it is beside the robot rather than ahead of its front.
        let mut lidar = lidar_with(&[0.8], std::f32::consts::FRAC_PI_2, 0.1);
        assert_eq!(
            lidar.sweep(&square(0.5), 1.0, 0.0, 1.0).kth_contact_m,
            f32::INFINITY
        );
    }

    #[test]
    fn rotation_chord_hits_a_point_near_a_corner() {
        // A point just outside the front edge, within the circumradius, left of centre.
        let lidar = lidar_with(&[0.55], 0.3, 0.1);
        let f = square(0.5);
        // Turning CCW by 1 rad carries the point (relative to the robot) to -0.7 rad, inside
        // the square; 0.01 rad leaves it outside the front edge.
        assert_eq!(lidar.rotation_hits(&f, 1.0), 1);
        assert_eq!(lidar.rotation_hits(&f, 0.01), 0);
    }

    /// SAF-019: a return in its beam's taught band is no return; one nearer or farther is a
    /// point; none where the object stood is invalid; -inf is never masked; an untaught beam is
    /// unchanged; too many taught beams not seeing their background, or another scan geometry,
    /// is refused.
    #[test]
    fn a_taught_background_masks_only_its_own_returns() {
        let origin = crate::config::Pose2 {
            x_m: 0.0,
            y_m: 0.0,
            yaw_rad: 0.0,
        };
        let mut cfg = LidarConfig {
            base_from_lidar: origin,
            max_beams: 8,
            max_age_ms: 100.0,
            reaction_time_ms: 0.0,
            margin_m: 0.05,
            slowdown_depth_m: 0.5,
            min_points: 1,
            hysteresis_m: 0.0,
            release_delay_ms: 0.0,
            max_invalid_fraction: 0.5,
            intrusion_speed_mps: 0.0,
            background: Some(crate::config::BackgroundConfig {
                base_from_lidar: origin,
                angle_min_rad: 0.0,
                angle_increment_rad: 0.1,
                tolerance_m: 0.04,
                ranges_m: vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
            }),
        };
        fn scan(ranges: &[f32], inc: f32) -> Scan<'_> {
            Scan {
                stamp: crate::Monotonic::from_nanos(0),
                angle_min_rad: 0.0,
                angle_increment_rad: inc,
                range_min_m: 0.05,
                range_max_m: 30.0,
                ranges_m: ranges,
            }
        }
        let mut lidar = Lidar::new(&cfg);
        let ranges: &[f32] = &[
            1.03,
            0.985,
            0.9,
            1.2,
            f32::INFINITY,
            1.0,
            f32::NEG_INFINITY,
            1.0,
        ];
        lidar.prepare(&scan(ranges, 0.1)).unwrap();
        // masked (far side), masked (near side), point (nearer), point (farther: the object
        // is gone), invalid (no return where it stood), untaught point, -inf point, masked.
        assert_eq!(lidar.class[..8], [1, 1, 0, 0, 2, 0, 0, 1]);
        assert_eq!(lidar.invalid_total, 1);
        assert_eq!(lidar.x[0], FAR_M);
        assert!((lidar.x[2] - 0.9 * 0.2f32.cos()).abs() < 1e-6);
        assert!((lidar.x[3] - 1.2 * 0.3f32.cos()).abs() < 1e-6);
        // The near side of the band is half the tolerance: 0.975 is a point.
        let mut r = ranges.to_vec();
        r[1] = 0.975;
        lidar.prepare(&scan(&r, 0.1)).unwrap();
        assert_eq!(lidar.class[1], 0);
        // Of 7 taught beams, 3 may not see their background (0.5 of 7); a fourth is refused.
        let r = [1.3, 1.3, f32::INFINITY, 1.0, 1.0, 1.0, 1.0, 1.0];
        lidar.prepare(&scan(&r, 0.1)).unwrap();
        let r = [1.3, 1.3, f32::INFINITY, f32::NAN, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(
            lidar.prepare(&scan(&r, 0.1)),
            Err(Reason::ScanBackgroundMismatch)
        );
        // Someone in front of every taught beam is not a moved cell.
        lidar.prepare(&scan(&[0.5; 8], 0.1)).unwrap();
        // The taught beams are these eight at these angles: another geometry is refused.
        assert_eq!(
            lidar.prepare(&scan(ranges, 0.2)),
            Err(Reason::ScanBackgroundMismatch)
        );
        assert_eq!(
            lidar.prepare(&scan(&[1.0; 7], 0.1)),
            Err(Reason::ScanBackgroundMismatch)
        );
        // Without a background the same returns are all points, or clear, as before.
        cfg.background = None;
        let mut plain = Lidar::new(&cfg);
        plain.prepare(&scan(ranges, 0.1)).unwrap();
        assert_eq!(plain.class[..8], [0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn field_of_view_is_respected() {
        // A front-only scan from -90° to +90°.
        let ranges = [1.0f32; 19];
        let lidar = lidar_with(
            &ranges,
            -std::f32::consts::FRAC_PI_2,
            std::f32::consts::PI / 18.0,
        );
        assert!(lidar.observes(1.0, 0.0));
        assert!(lidar.observes(0.0, 1.0));
        assert!(!lidar.observes(-1.0, 0.0));
    }
}
