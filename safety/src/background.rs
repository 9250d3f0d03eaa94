//! SAF-019: teaching a fixed cell's static scan returns (`reflex teach-background`).
//!
//! A scanner that watches an arm on a table sees the table's legs, the fence and the robot's
//! own column; to SAF-017 every one of them is a person standing there, so without a taught
//! background such a cell never moves. Teaching records, per beam, the nearest return of the
//! empty cell; the safety layer then masks returns within the band around it (see
//! [`crate::BackgroundConfig`]). Not real-time code: it runs once, off the robot's loop.

use crate::config::{BackgroundConfig, MAX_BACKGROUND_TOLERANCE_M, Pose2};
use crate::types::Scan;

/// Fewest scans a teach accepts.
pub const MIN_TEACH_SCANS: usize = 10;
/// Shortest recording a teach accepts (s, first to last scan stamp): someone who stands still
/// for a moment is less likely to stand still for this long.
pub const MIN_TEACH_SECONDS: f64 = 3.0;
/// Adjacent beams that may change during the recording (the edge of a leg, seen on and off):
/// a longer run is something that moved (a person), and the teach is refused.
pub const MAX_UNSTEADY_RUN: usize = 2;

/// What a teach found.
#[derive(Debug, Clone, PartialEq)]
pub struct Taught {
    pub background: BackgroundConfig,
    pub scans: usize,
    /// Beams with a background.
    pub taught_beams: usize,
    /// Beams that changed by more than the tolerance or lost their return during the
    /// recording (each in a run of at most [`MAX_UNSTEADY_RUN`]); taught at their nearest return,
    /// so when they see past it live they count as invalid beams.
    pub unsteady_beams: Vec<usize>,
    /// The nearest taught return (m); nothing nearer than it less half the tolerance is ever
    /// masked.
    pub nearest_m: f64,
    /// The seconds the recording spans.
    pub seconds: f64,
}

/// A run of adjacent taught beams nearer than some distance: one object, for the operator to
/// confirm it is part of the cell (a person standing still while teaching would be one).
#[derive(Debug, Clone, PartialEq)]
pub struct TaughtObject {
    pub first_beam: usize,
    pub last_beam: usize,
    pub from_rad: f64,
    pub to_rad: f64,
    pub nearest_m: f64,
}

impl Taught {
    /// The taught objects nearer than `within_m`, in beam order.
    pub fn objects_within(&self, within_m: f64) -> Vec<TaughtObject> {
        let b = &self.background;
        let near = |i: usize| b.ranges_m[i] > 0.0 && b.ranges_m[i] < within_m;
        let angle = |i: usize| b.angle_min_rad + i as f64 * b.angle_increment_rad;
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.ranges_m.len() {
            if !near(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.ranges_m.len() && near(i) {
                i += 1;
            }
            out.push(TaughtObject {
                first_beam: start,
                last_beam: i - 1,
                from_rad: angle(start),
                to_rad: angle(i - 1),
                nearest_m: b.ranges_m[start..i]
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min),
            });
        }
        out
    }
}

/// Why a recording cannot be taught; the message names the scan or beams and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TeachError(pub String);

/// `x` as the shortest decimal that reads back as the same f32 (0.8, not 0.800000011920929):
/// the printed table stays readable and the layer's f32 is exactly the taught one.
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

fn fail(message: impl Into<String>) -> TeachError {
    TeachError(message.into())
}

/// Teaches the background from `scans` (stamped) of the empty, still cell seen by a scanner at
/// `base_from_lidar`, with the masking band `tolerance_m` (which must cover the scanner's range
/// noise).
pub fn teach_background(
    scans: &[Scan<'_>],
    tolerance_m: f64,
    base_from_lidar: Pose2,
) -> Result<Taught, TeachError> {
    if !(tolerance_m.is_finite() && tolerance_m > 0.0 && tolerance_m <= MAX_BACKGROUND_TOLERANCE_M)
    {
        return Err(fail(format!(
            "the tolerance must be in (0, {MAX_BACKGROUND_TOLERANCE_M}] m, got {tolerance_m}; set the scanner's range noise plus a little, e.g. 0.03"
        )));
    }
    if scans.len() < MIN_TEACH_SCANS {
        return Err(fail(format!(
            "{} scans recorded, at least {MIN_TEACH_SCANS} are needed; record the empty cell for a few seconds",
            scans.len()
        )));
    }
    let (t0, t1) = scans.iter().fold((u64::MAX, 0u64), |(lo, hi), s| {
        (lo.min(s.stamp.as_nanos()), hi.max(s.stamp.as_nanos()))
    });
    let seconds = t1.saturating_sub(t0) as f64 * 1e-9;
    if seconds < MIN_TEACH_SECONDS {
        return Err(fail(format!(
            "the recording spans {seconds:.2} s of scan stamps; at least {MIN_TEACH_SECONDS} s are needed; record the empty, still cell for longer"
        )));
    }
    let first = &scans[0];
    let n = first.ranges_m.len();
    if n == 0 {
        return Err(fail(
            "the first scan has no beams; record the cell's scanner",
        ));
    }
    for (k, s) in scans.iter().enumerate() {
        if s.ranges_m.len() != n
            || s.angle_min_rad.to_bits() != first.angle_min_rad.to_bits()
            || s.angle_increment_rad.to_bits() != first.angle_increment_rad.to_bits()
        {
            return Err(fail(format!(
                "scan {k} has {} beams from {} rad by {} rad, the first has {n} from {} rad by {} rad; record one scanner in one configuration",
                s.ranges_m.len(),
                s.angle_min_rad,
                s.angle_increment_rad,
                first.angle_min_rad,
                first.angle_increment_rad
            )));
        }
    }
    let tol = tolerance_m as f32;
    let mut ranges = vec![0.0f64; n];
    let mut unsteady = vec![false; n];
    let mut change = vec![0.0f32; n];
    for i in 0..n {
        let (mut lo, mut hi, mut returns) = (f32::INFINITY, f32::NEG_INFINITY, 0usize);
        for (k, s) in scans.iter().enumerate() {
            let r = s.ranges_m[i];
            if r == f32::NEG_INFINITY {
                return Err(fail(format!(
                    "beam {i} reads nearer than range_min (-inf) in scan {k}: something touches the scanner's window; clear it and record again"
                )));
            }
            if r >= s.range_min_m && r <= s.range_max_m {
                lo = lo.min(r);
                hi = hi.max(r);
                returns += 1;
            }
        }
        if returns == 0 {
            continue;
        }
        if f64::from(lo) <= tolerance_m {
            return Err(fail(format!(
                "beam {i} returns at {lo} m, inside the {tolerance_m} m band itself: something is on or against the scanner; clear it and record again"
            )));
        }
        ranges[i] = decimal(lo);
        change[i] = hi - lo;
        unsteady[i] = returns < scans.len() || hi - lo > tol;
    }
    // A run of changing beams longer than a leg's edge is something that moved; on a full
    // circle the last beam and the first are neighbours.
    let full_circle = f64::from(first.angle_increment_rad.abs()) * n as f64
        >= std::f64::consts::TAU - 0.5 * f64::from(first.angle_increment_rad.abs());
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < n {
        if !unsteady[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && unsteady[i] {
            i += 1;
        }
        runs.push((start, i));
    }
    if full_circle && runs.len() > 1 && runs[0].0 == 0 && runs[runs.len() - 1].1 == n {
        let (_, end) = runs.remove(0);
        let last = runs.len() - 1;
        runs[last].1 = n + end;
    }
    for &(start, end) in &runs {
        if end - start > MAX_UNSTEADY_RUN {
            let angle = |j: usize| first.angle_min_rad + (j % n) as f32 * first.angle_increment_rad;
            let most = (start..end).map(|j| change[j % n]).fold(0.0f32, f32::max);
            return Err(fail(format!(
                "beams {start}..{} ({:.3} to {:.3} rad) changed during the recording (by up to {most:.3} m, or lost their return): something moved; record the cell empty and still (nobody in it), or, if this is the scanner's noise, a larger --tolerance-m (at most {MAX_BACKGROUND_TOLERANCE_M})",
                (end - 1) % n,
                angle(start),
                angle(end - 1)
            )));
        }
    }
    let taught_beams = ranges.iter().filter(|r| **r > 0.0).count();
    if taught_beams == 0 {
        return Err(fail(
            "no beam returned in the recording, so there is nothing to mask; a cell that needs no background needs no [safety.lidar.background]",
        ));
    }
    let nearest_m = ranges
        .iter()
        .copied()
        .filter(|r| *r > 0.0)
        .fold(f64::INFINITY, f64::min);
    Ok(Taught {
        background: BackgroundConfig {
            base_from_lidar,
            angle_min_rad: decimal(first.angle_min_rad),
            angle_increment_rad: decimal(first.angle_increment_rad),
            tolerance_m,
            ranges_m: ranges,
        },
        scans: scans.len(),
        taught_beams,
        unsteady_beams: (0..n).filter(|i| unsteady[*i]).collect(),
        nearest_m,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: Pose2 = Pose2 {
        x_m: 0.0,
        y_m: 0.0,
        yaw_rad: 0.0,
    };

    /// Scan `k` of a recording at 3 Hz, 40 beams of 0.01 rad.
    fn scan(k: usize, ranges: &[f32]) -> Scan<'_> {
        Scan {
            stamp: crate::Monotonic::from_nanos(k as u64 * 333_000_000),
            angle_min_rad: -1.0,
            angle_increment_rad: 0.01,
            range_min_m: 0.05,
            range_max_m: 30.0,
            ranges_m: ranges,
        }
    }

    fn scans(recording: &[Vec<f32>]) -> Vec<Scan<'_>> {
        recording
            .iter()
            .enumerate()
            .map(|(k, r)| scan(k, r))
            .collect()
    }

    fn refusal(recording: &[Vec<f32>]) -> String {
        teach_background(&scans(recording), 0.03, ORIGIN)
            .unwrap_err()
            .0
    }

    /// The nearest return of each beam is taught; a flapping edge is allowed and reported; a
    /// walking person (many adjacent beams changing) is refused, naming the beams.
    #[test]
    fn the_empty_cell_is_taught_and_a_moving_person_is_refused() {
        let mut recording: Vec<Vec<f32>> = Vec::new();
        for k in 0..12 {
            let mut r = vec![4.0f32; 40];
            r[10] = 0.8;
            r[11] = 0.8;
            // The leg's edge: on the leg one scan, past it the next.
            r[12] = if k % 2 == 0 { 0.81 } else { 4.0 };
            r[30] = f32::INFINITY;
            recording.push(r);
        }
        let taught = teach_background(&scans(&recording), 0.03, ORIGIN).unwrap();
        let b = &taught.background.ranges_m;
        assert_eq!(b.len(), 40);
        assert!((b[10] - 0.8).abs() < 1e-6 && (b[12] - 0.81).abs() < 1e-6);
        assert_eq!(b[30], 0.0);
        assert_eq!(taught.unsteady_beams, vec![12]);
        assert_eq!(taught.taught_beams, 39);
        assert!((taught.nearest_m - 0.8).abs() < 1e-6);
        assert!((taught.seconds - 3.663).abs() < 1e-9);
        // The leg, for the operator to confirm.
        let objects = taught.objects_within(2.0);
        assert_eq!(objects.len(), 1);
        assert_eq!((objects[0].first_beam, objects[0].last_beam), (10, 12));
        assert!((objects[0].from_rad + 0.9).abs() < 1e-6);

        // Someone crosses beams 20..=25 in the middle of the recording.
        let mut walked = recording.clone();
        for r in walked.iter_mut().skip(5).take(3) {
            r[20..26].fill(1.5);
        }
        let e = refusal(&walked);
        assert!(
            e.contains("beams 20..25") && e.contains("something moved"),
            "{e}"
        );

        // Too few scans, too short a recording, a -inf beam, another geometry, too wide a
        // band: refused by name.
        assert!(refusal(&recording[..3]).contains("3 scans"));
        let mut quick = scans(&recording);
        for (k, s) in quick.iter_mut().enumerate() {
            s.stamp = crate::Monotonic::from_nanos(k as u64 * 100_000_000);
        }
        let e = teach_background(&quick, 0.03, ORIGIN).unwrap_err().0;
        assert!(e.contains("1.10 s"), "{e}");
        let mut touched = recording.clone();
        touched[2][7] = f32::NEG_INFINITY;
        assert!(refusal(&touched).contains("beam 7"));
        let mut other = scans(&recording);
        other[4].angle_increment_rad = 0.02;
        let e = teach_background(&other, 0.03, ORIGIN).unwrap_err().0;
        assert!(e.contains("scan 4"), "{e}");
        let e = teach_background(&scans(&recording), 0.5, ORIGIN)
            .unwrap_err()
            .0;
        assert!(e.contains("tolerance"), "{e}");
    }

    /// On a full circle the last beam and the first are neighbours: a person standing across
    /// the seam is one run, not two short ones.
    #[test]
    fn a_person_across_the_seam_of_a_full_circle_is_refused() {
        let n = 360;
        let recording: Vec<Vec<f32>> = (0..12)
            .map(|k| {
                let mut r = vec![4.0f32; n];
                if k >= 6 {
                    for i in [n - 2, n - 1, 0, 1] {
                        r[i] = 1.0;
                    }
                }
                r
            })
            .collect();
        let circle = |recording: &[Vec<f32>], inc: f32| -> Result<Taught, TeachError> {
            let scans: Vec<_> = recording
                .iter()
                .enumerate()
                .map(|(k, r)| Scan {
                    angle_min_rad: -std::f32::consts::PI,
                    angle_increment_rad: inc,
                    ..scan(k, r)
                })
                .collect();
            teach_background(&scans, 0.03, ORIGIN)
        };
        let e = circle(&recording, std::f32::consts::TAU / n as f32)
            .unwrap_err()
            .0;
        assert!(e.contains("beams 358..1"), "{e}");
        // Over half a circle the ends are not neighbours: two runs of two (leg edges).
        circle(&recording, std::f32::consts::PI / n as f32).unwrap();
    }
}
