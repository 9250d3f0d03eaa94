//! Rotations of the arm's kinematic chain: 3×3 matrices, URDF `rpy` and axis-angle. A leaf
//! module: `config` validates link origins with it and `kinematics` walks the chain with it.

pub(crate) type Vec3 = [f64; 3];
pub(crate) type Mat3 = [[f64; 3]; 3];

pub(crate) const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

pub(crate) fn mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, cell) in row.iter_mut().enumerate() {
            *cell = a[r][0] * b[0][c] + a[r][1] * b[1][c] + a[r][2] * b[2][c];
        }
    }
    out
}

pub(crate) fn apply(a: &Mat3, v: &Vec3) -> Vec3 {
    [
        a[0][0] * v[0] + a[0][1] * v[1] + a[0][2] * v[2],
        a[1][0] * v[0] + a[1][1] * v[1] + a[1][2] * v[2],
        a[2][0] * v[0] + a[2][1] * v[1] + a[2][2] * v[2],
    ]
}

/// Rotation by `angle` about the unit `axis` (Rodrigues).
pub(crate) fn axis_angle(axis: &Vec3, angle: f64) -> Mat3 {
    let (s, c) = angle.sin_cos();
    let t = 1.0 - c;
    let [x, y, z] = *axis;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
}

/// URDF `rpy`: fixed-axis roll (x), then pitch (y), then yaw (z): R = Rz·Ry·Rx.
pub(crate) fn rpy(r: &Vec3) -> Mat3 {
    let rx = axis_angle(&[1.0, 0.0, 0.0], r[0]);
    let ry = axis_angle(&[0.0, 1.0, 0.0], r[1]);
    let rz = axis_angle(&[0.0, 0.0, 1.0], r[2]);
    mul(&rz, &mul(&ry, &rx))
}
