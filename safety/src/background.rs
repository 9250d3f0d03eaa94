//! SAF-019: teaching a fixed cell's static scan returns (`reflex teach-background`).
//!
//! A scanner that watches an arm on a table sees the table's legs, the fence and the robot's
//! own column; to SAF-017 every one of them is a person standing there, so without a taught
//! background such a cell never moves. Teaching records, per beam, the nearest return of the
//! empty cell; the safety layer then masks returns within the band around it (see
//! [`crate::BackgroundConfig`]). Not real-time code: it runs once, off the robot's loop.

use crate::config::{BackgroundConfig, MAX_BACKGROUND_TOLERANCE_M};
use crate::types::Scan;

/// Fewest scans a teach accepts: a second of a 10 Hz scanner.
pub const MIN_TEACH_SCANS: usize = 10;
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
    /// The nearest taught return (m): nothing nearer than this is ever masked.
    pub nearest_m: f64,
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

/// Teaches the background from `scans` of the empty, still cell, with the masking band
/// `tolerance_m` (which must cover the scanner's range noise).
pub fn teach_background(scans: &[Scan<'_>], tolerance_m: f64) -> Result<Taught, TeachError> {
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
        ranges[i] = decimal(lo);
        change[i] = hi - lo;
        unsteady[i] = returns < scans.len() || hi - lo > tol;
    }
    // A run of changing beams longer than a leg's edge is something that moved.
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
        if i - start > MAX_UNSTEADY_RUN {
            let angle = |j: usize| first.angle_min_rad + j as f32 * first.angle_increment_rad;
            let most = change[start..i].iter().copied().fold(0.0f32, f32::max);
            return Err(fail(format!(
                "beams {start}..{} ({:.3} to {:.3} rad) changed during the recording (by up to {most:.3} m, or lost their return): something moved; record the cell empty and still (nobody in it), or, if this is the scanner's noise, a larger --tolerance-m (at most {MAX_BACKGROUND_TOLERANCE_M})",
                i - 1,
                angle(start),
                angle(i - 1)
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
            angle_min_rad: decimal(first.angle_min_rad),
            angle_increment_rad: decimal(first.angle_increment_rad),
            tolerance_m,
            ranges_m: ranges,
        },
        scans: scans.len(),
        taught_beams,
        unsteady_beams: (0..n).filter(|i| unsteady[*i]).collect(),
        nearest_m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(ranges: &[f32]) -> Scan<'_> {
        Scan {
            stamp: crate::Monotonic::from_nanos(0),
            angle_min_rad: -1.0,
            angle_increment_rad: 0.01,
            range_min_m: 0.05,
            range_max_m: 30.0,
            ranges_m: ranges,
        }
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
        let scans: Vec<_> = recording.iter().map(|r| scan(r)).collect();
        let taught = teach_background(&scans, 0.03).unwrap();
        let b = &taught.background.ranges_m;
        assert_eq!(b.len(), 40);
        assert!((b[10] - 0.8).abs() < 1e-6 && (b[12] - 0.81).abs() < 1e-6);
        assert_eq!(b[30], 0.0);
        assert_eq!(taught.unsteady_beams, vec![12]);
        assert_eq!(taught.taught_beams, 39);
        assert!((taught.nearest_m - 0.8).abs() < 1e-6);

        // Someone crosses beams 20..=25 in the middle of the recording.
        for r in recording.iter_mut().skip(5).take(3) {
            r[20..26].fill(1.5);
        }
        let scans: Vec<_> = recording.iter().map(|r| scan(r)).collect();
        let e = teach_background(&scans, 0.03).unwrap_err().0;
        assert!(
            e.contains("beams 20..25") && e.contains("something moved"),
            "{e}"
        );

        // Too short, a -inf beam, and another geometry are refused by name.
        let short: Vec<_> = recording.iter().take(3).map(|r| scan(r)).collect();
        assert!(
            teach_background(&short, 0.03)
                .unwrap_err()
                .0
                .contains("3 scans")
        );
        let mut touched = recording.clone();
        touched[2][7] = f32::NEG_INFINITY;
        let scans: Vec<_> = touched.iter().map(|r| scan(r)).collect();
        assert!(
            teach_background(&scans, 0.03)
                .unwrap_err()
                .0
                .contains("beam 7")
        );
        let mut scans: Vec<_> = recording.iter().map(|r| scan(r)).collect();
        scans[4].angle_increment_rad = 0.02;
        assert!(
            teach_background(&scans, 0.03)
                .unwrap_err()
                .0
                .contains("scan 4")
        );
        assert!(
            teach_background(&scans, 0.5)
                .unwrap_err()
                .0
                .contains("tolerance")
        );
    }
}
