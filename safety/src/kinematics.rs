//! Forward kinematics of the arm and its zones (SAF-016): a serial chain (URDF subset) whose
//! links are capsules, checked against the workspace box and the keep-out boxes. Fixed-size,
//! no allocation, no panics.

use crate::MAX_JOINTS;
use crate::config::{JointKind, KinematicsConfig, MAX_KEEP_OUT, WorkspaceBox};

use crate::rotation::{IDENTITY, Mat3, Vec3, apply, axis_angle, mul, rpy};

fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// Where the arm is: the origin of every joint, then the tool point, in the arm's base frame.
/// Capsule `i` runs from `points[i]` to `points[i + 1]`; the last point is the tool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkPoints {
    pub points: [[f64; 3]; MAX_JOINTS + 1],
    /// Joints in the chain: `points[..=count]` are set.
    pub count: usize,
}

/// The chain, derived once from `[safety.arm.kinematics]`.
#[derive(Debug, Clone)]
pub struct Kinematics {
    count: usize,
    origin_rotation: [Mat3; MAX_JOINTS],
    origin_xyz: [Vec3; MAX_JOINTS],
    axis: [Vec3; MAX_JOINTS],
    prismatic: [bool; MAX_JOINTS],
    /// Radius of capsule `i` (the link after joint `i`); `radius[count]` is the tool sphere.
    pub(crate) radius: [f64; MAX_JOINTS + 1],
    tool_xyz: Vec3,
}

impl Kinematics {
    /// From a validated config (unit axes are renormalized).
    pub fn new(config: &KinematicsConfig) -> Self {
        let mut k = Self {
            count: config.links.len().min(MAX_JOINTS),
            origin_rotation: [IDENTITY; MAX_JOINTS],
            origin_xyz: [[0.0; 3]; MAX_JOINTS],
            axis: [[0.0, 0.0, 1.0]; MAX_JOINTS],
            prismatic: [false; MAX_JOINTS],
            radius: [0.0; MAX_JOINTS + 1],
            tool_xyz: config.tool.xyz_m,
        };
        for (i, link) in config.links.iter().take(MAX_JOINTS).enumerate() {
            k.origin_rotation[i] = rpy(&link.rpy_rad);
            k.origin_xyz[i] = link.xyz_m;
            let n = link.axis.iter().map(|a| a * a).sum::<f64>().sqrt();
            k.axis[i] = link.axis.map(|a| a / n);
            k.prismatic[i] = link.kind == JointKind::Prismatic;
            k.radius[i] = link.radius_m;
        }
        k.radius[k.count] = config.tool.radius_m;
        k
    }

    /// Joint origins and the tool point for joint positions `q` (rad or m, in chain order;
    /// missing entries count as 0).
    pub fn link_points(&self, q: &[f64]) -> LinkPoints {
        let mut out = LinkPoints {
            points: [[0.0; 3]; MAX_JOINTS + 1],
            count: self.count,
        };
        let mut rotation = IDENTITY;
        let mut at = [0.0; 3];
        for i in 0..self.count {
            at = add(at, apply(&rotation, &self.origin_xyz[i]));
            rotation = mul(&rotation, &self.origin_rotation[i]);
            let qi = q.get(i).copied().unwrap_or(0.0);
            if self.prismatic[i] {
                at = add(at, apply(&rotation, &self.axis[i].map(|a| a * qi)));
            } else {
                rotation = mul(&rotation, &axis_angle(&self.axis[i], qi));
            }
            out.points[i] = at;
        }
        out.points[self.count] = add(at, apply(&rotation, &self.tool_xyz));
        out
    }

    /// For each joint, how far (m) any link point can move per unit of that joint's motion:
    /// the chain's length beyond a revolute joint (prismatic joints beyond it at their
    /// `max_abs_position`), 1 for a prismatic joint.
    pub fn reach_bounds(&self, max_abs_position: &[f64]) -> [f64; MAX_JOINTS] {
        let norm = |v: &Vec3| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        let mut reach = [0.0; MAX_JOINTS];
        let mut beyond = norm(&self.tool_xyz);
        for j in (0..self.count).rev() {
            reach[j] = if self.prismatic[j] { 1.0 } else { beyond };
            beyond += norm(&self.origin_xyz[j]);
            if self.prismatic[j] {
                beyond += max_abs_position.get(j).copied().unwrap_or(0.0).abs();
            }
        }
        reach
    }
}

/// How deep each capsule is into each zone (m; 0 = clear): `workspace[i]` how far capsule `i`
/// (the tool sphere last) reaches outside the workspace, `keep_out[i][z]` how deep it is in
/// keep-out box `z`. Per pair, so that an arm already in one zone may not go deeper into
/// another, or put a second link into the same one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Depths {
    pub workspace: [f64; MAX_JOINTS + 1],
    pub keep_out: [[f64; MAX_KEEP_OUT]; MAX_JOINTS + 1],
}

impl Default for Depths {
    fn default() -> Self {
        Self {
            workspace: [0.0; MAX_JOINTS + 1],
            keep_out: [[0.0; MAX_KEEP_OUT]; MAX_JOINTS + 1],
        }
    }
}

impl Depths {
    /// Pair by pair, the deeper of the two.
    pub fn deepen(&mut self, other: &Depths) {
        for (a, b) in self.workspace.iter_mut().zip(&other.workspace) {
            *a = a.max(*b);
        }
        for (row, other_row) in self.keep_out.iter_mut().zip(&other.keep_out) {
            for (a, b) in row.iter_mut().zip(other_row) {
                *a = a.max(*b);
            }
        }
    }

    /// Whether any pair is deeper than in `before` by more than `eps`: (workspace, keep-out).
    pub fn deeper_than(&self, before: &Depths, eps: f64) -> (bool, bool) {
        let outside = self
            .workspace
            .iter()
            .zip(&before.workspace)
            .any(|(a, b)| *a > b + eps);
        let inside = self
            .keep_out
            .iter()
            .zip(&before.keep_out)
            .any(|(row, before_row)| row.iter().zip(before_row).any(|(a, b)| *a > b + eps));
        (outside, inside)
    }

    /// The deepest pair of each kind: (workspace, keep-out).
    #[cfg(test)]
    pub fn deepest(&self) -> (f64, f64) {
        let ws = self.workspace.iter().copied().fold(0.0, f64::max);
        let ko = self.keep_out.iter().flatten().copied().fold(0.0, f64::max);
        (ws, ko)
    }
}

/// The workspace box and keep-out boxes, checked against the chain's capsules.
#[derive(Debug, Clone)]
pub(crate) struct Zones {
    pub kinematics: Kinematics,
    /// [`Kinematics::reach_bounds`] at the joints' position limits.
    pub reach: [f64; MAX_JOINTS],
    workspace: Option<WorkspaceBox>,
    keep_out: [WorkspaceBox; MAX_KEEP_OUT],
    keep_out_count: usize,
}

impl Zones {
    pub fn new(
        kinematics: &KinematicsConfig,
        max_abs_position: &[f64],
        workspace: Option<WorkspaceBox>,
        keep_out: &[WorkspaceBox],
    ) -> Self {
        let empty = WorkspaceBox {
            min_m: [0.0; 3],
            max_m: [0.0; 3],
        };
        let mut boxes = [empty; MAX_KEEP_OUT];
        for (slot, b) in boxes.iter_mut().zip(keep_out) {
            *slot = *b;
        }
        let chain = Kinematics::new(kinematics);
        Self {
            reach: chain.reach_bounds(max_abs_position),
            kinematics: chain,
            workspace,
            keep_out: boxes,
            keep_out_count: keep_out.len().min(MAX_KEEP_OUT),
        }
    }

    /// How deep each capsule of the arm at joint positions `q` is outside the workspace (its
    /// furthest point) and inside each keep-out box (its deepest point into the box grown by
    /// the capsule's radius on every side: conservative at the box's edges and corners).
    /// Every radius is grown by `inflate_m` (how far a link may move between checked poses).
    pub fn depths(&self, q: &[f64], inflate_m: f64, out: &mut Depths) {
        let p = self.kinematics.link_points(q);
        *out = Depths::default();
        let radius = &self.kinematics.radius;
        for (i, link_radius) in radius.iter().enumerate().take(p.count + 1) {
            let a = p.points[i];
            let b = p.points[(i + 1).min(p.count)];
            let r = link_radius + inflate_m;
            if let Some(ws) = &self.workspace {
                for point in [a, b] {
                    for (axis, x) in point.iter().enumerate() {
                        let below = ws.min_m[axis] + r - x;
                        let above = x - (ws.max_m[axis] - r);
                        // `max` keeps the larger: NaN never hides a violation here because
                        // the inputs are checked finite before kinematics run.
                        out.workspace[i] = out.workspace[i].max(below).max(above);
                    }
                }
            }
            for (z, k) in self.keep_out[..self.keep_out_count].iter().enumerate() {
                out.keep_out[i][z] = segment_depth(a, b, k, r);
            }
        }
    }
}

/// The deepest point of segment `a`–`b` inside `zone` grown by `r` on every side (its distance to
/// the nearest face), or 0 when the segment misses it.
fn segment_depth(a: Vec3, b: Vec3, zone: &WorkspaceBox, r: f64) -> f64 {
    let lo = zone.min_m.map(|x| x - r);
    let hi = zone.max_m.map(|x| x + r);
    // Slab clipping of a + t(b - a), t in [0, 1].
    let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
    for axis in 0..3 {
        let d = b[axis] - a[axis];
        if d.abs() < 1e-15 {
            if a[axis] < lo[axis] || a[axis] > hi[axis] {
                return 0.0;
            }
        } else {
            let (mut u0, mut u1) = ((lo[axis] - a[axis]) / d, (hi[axis] - a[axis]) / d);
            if u0 > u1 {
                std::mem::swap(&mut u0, &mut u1);
            }
            t0 = t0.max(u0);
            t1 = t1.min(u1);
            if t0 > t1 {
                return 0.0;
            }
        }
    }
    // Depth along the clipped part is a minimum of affine functions of t (concave): a
    // ternary search finds its maximum.
    let depth = |t: f64| {
        let mut d = f64::INFINITY;
        for axis in 0..3 {
            let x = a[axis] + t * (b[axis] - a[axis]);
            d = d.min(x - lo[axis]).min(hi[axis] - x);
        }
        d.max(0.0)
    };
    let (mut l, mut h) = (t0, t1);
    for _ in 0..60 {
        let m1 = l + (h - l) / 3.0;
        let m2 = h - (h - l) / 3.0;
        if depth(m1) < depth(m2) {
            l = m1;
        } else {
            h = m2;
        }
    }
    // Never report a touching segment as clear.
    depth((l + h) / 2.0)
        .max(depth(t0))
        .max(depth(t1))
        .max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LinkConfig, ToolConfig};

    fn planar() -> KinematicsConfig {
        // Yaw at the base, then two pitch joints; links 0.3 and 0.2 m long along x.
        let link = |joint: &str, xyz: Vec3, axis: Vec3| LinkConfig {
            joint: joint.into(),
            kind: JointKind::Revolute,
            xyz_m: xyz,
            rpy_rad: [0.0; 3],
            axis,
            radius_m: 0.05,
        };
        KinematicsConfig {
            links: vec![
                link("yaw", [0.0, 0.0, 0.1], [0.0, 0.0, 1.0]),
                link("pitch1", [0.0, 0.0, 0.2], [0.0, 1.0, 0.0]),
                link("pitch2", [0.3, 0.0, 0.0], [0.0, 1.0, 0.0]),
            ],
            tool: ToolConfig {
                xyz_m: [0.2, 0.0, 0.0],
                radius_m: 0.04,
            },
        }
    }

    fn close(a: Vec3, b: Vec3) -> bool {
        (0..3).all(|i| (a[i] - b[i]).abs() < 1e-12)
    }

    #[test]
    fn forward_kinematics_places_every_joint_and_the_tool() {
        let k = Kinematics::new(&planar());
        let p = k.link_points(&[0.0, 0.0, 0.0]);
        assert!(close(p.points[0], [0.0, 0.0, 0.1]));
        assert!(close(p.points[1], [0.0, 0.0, 0.3]));
        assert!(close(p.points[2], [0.3, 0.0, 0.3]));
        assert!(close(p.points[3], [0.5, 0.0, 0.3]));
        // Yaw a quarter turn: the arm points along +y. A positive pitch about +y lowers x.
        let half = std::f64::consts::FRAC_PI_2;
        let p = k.link_points(&[half, 0.0, half]);
        assert!(close(p.points[2], [0.0, 0.3, 0.3]), "{:?}", p.points[2]);
        assert!(close(p.points[3], [0.0, 0.3, 0.1]), "{:?}", p.points[3]);
    }

    #[test]
    fn urdf_rpy_and_prismatic_joints() {
        let mut c = planar();
        // The second joint's frame yawed a quarter turn: its x is the base's y.
        c.links[1].rpy_rad = [0.0, 0.0, std::f64::consts::FRAC_PI_2];
        c.links[2].kind = JointKind::Prismatic;
        c.links[2].axis = [0.0, 0.0, 1.0];
        let k = Kinematics::new(&c);
        let p = k.link_points(&[0.0, 0.0, 0.1]);
        assert!(close(p.points[2], [0.0, 0.3, 0.4]), "{:?}", p.points[2]);
        assert!(close(p.points[3], [0.0, 0.5, 0.4]), "{:?}", p.points[3]);
    }

    #[test]
    fn rpy_is_urdf_fixed_axis_roll_then_pitch_then_yaw() {
        // URDF: R = Rz(yaw)·Ry(pitch)·Rx(roll). With roll = yaw = 90°, x goes to y and y to z;
        // the other order (Rx·Ry·Rz) would send y to -x.
        let half = std::f64::consts::FRAC_PI_2;
        let r = rpy(&[half, 0.0, half]);
        assert!(close(apply(&r, &[1.0, 0.0, 0.0]), [0.0, 1.0, 0.0]));
        assert!(close(apply(&r, &[0.0, 1.0, 0.0]), [0.0, 0.0, 1.0]));
        // A value from the URDF convention with all three angles (roll 0.3, pitch 0.5, yaw
        // 0.7): the first column is (cos p cos y, cos p sin y, -sin p).
        let r = rpy(&[0.3, 0.5, 0.7]);
        let (p, y) = (0.5_f64, 0.7_f64);
        let col = [r[0][0], r[1][0], r[2][0]];
        assert!(
            close(col, [p.cos() * y.cos(), p.cos() * y.sin(), -p.sin()]),
            "{col:?}"
        );
    }

    #[test]
    fn reach_bounds_cover_the_chain_beyond_each_joint() {
        let k = Kinematics::new(&planar());
        let r = k.reach_bounds(&[3.0; 3]);
        assert!(
            (r[2] - 0.2).abs() < 1e-12 && (r[1] - 0.5).abs() < 1e-12,
            "{r:?}"
        );
        assert!((r[0] - 0.7).abs() < 1e-12, "{r:?}");
    }

    #[test]
    fn a_capsule_near_a_box_is_inside_it_and_one_beyond_its_radius_is_not() {
        let zone = WorkspaceBox {
            min_m: [0.0, 0.0, 0.0],
            max_m: [1.0, 1.0, 1.0],
        };
        // Passing 0.04 above the top face with radius 0.05: 0.01 deep.
        let d = segment_depth([-1.0, 0.5, 1.04], [2.0, 0.5, 1.04], &zone, 0.05);
        assert!((d - 0.01).abs() < 1e-9, "{d}");
        assert_eq!(
            segment_depth([-1.0, 0.5, 1.06], [2.0, 0.5, 1.06], &zone, 0.05),
            0.0
        );
        // Through the middle: half the grown box's width deep.
        let d = segment_depth([0.5, 0.5, -3.0], [0.5, 0.5, 3.0], &zone, 0.0);
        assert!((d - 0.5).abs() < 1e-9, "{d}");
        // A point (the tool sphere) inside, and one outside.
        assert!(segment_depth([0.5, 0.9, 0.5], [0.5, 0.9, 0.5], &zone, 0.0) > 0.09);
        assert_eq!(
            segment_depth([0.5, 1.2, 0.5], [0.5, 1.2, 0.5], &zone, 0.1),
            0.0
        );
    }

    #[test]
    fn zones_measure_how_deep_each_link_is() {
        let c = planar();
        let ws = WorkspaceBox {
            min_m: [-0.6, -0.6, 0.0],
            max_m: [0.6, 0.6, 1.0],
        };
        let post = WorkspaceBox {
            min_m: [0.3, -0.1, 0.0],
            max_m: [0.5, 0.1, 0.2],
        };
        let zones = Zones::new(&c, &[3.0; 3], Some(ws), &[post]);
        let depths = |q: &[f64]| {
            let mut d = Depths::default();
            zones.depths(q, 0.0, &mut d);
            d
        };
        // Stretched out horizontally at z = 0.3: clear of the post (its top 0.2 + radius 0.05).
        assert_eq!(depths(&[0.0, 0.0, 0.0]), Depths::default());
        // The tool pitched down onto the post: inside it, the last link and the tool sphere.
        let d = depths(&[0.0, 0.0, 1.2]);
        assert!(d.deepest().1 > 0.0 && d.deepest().0 == 0.0, "{d:?}");
        assert!(d.keep_out[2][0] > 0.0 && d.keep_out[0][0] == 0.0, "{d:?}");
        // Turned away from the post, the same pose is clear.
        assert_eq!(depths(&[2.0, 0.0, 1.2]).deepest().1, 0.0);
        // Pitched down through the table (z < 0 + tool radius): outside the workspace.
        let d = depths(&[2.0, 1.0, 0.5]);
        assert!(d.deepest().0 > 0.0, "{d:?}");
        // Pair by pair: the post's depth of one link never stands in for another's.
        let (mut a, mut b) = (Depths::default(), Depths::default());
        a.keep_out[2][0] = 0.05;
        b.keep_out[1][0] = 0.01;
        assert_eq!(b.deeper_than(&a, 1e-9), (false, true));
        b.deepen(&a);
        assert_eq!((b.keep_out[1][0], b.keep_out[2][0]), (0.01, 0.05));
        assert_eq!(a.deeper_than(&b, 1e-9), (false, false));
    }
}
