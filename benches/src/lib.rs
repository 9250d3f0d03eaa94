//! Benchmarks of Reflex: shared set-ups for the criterion micro-benches (`benches/`) and the
//! latency harness (`reflex-bench`), so both measure exactly the same work.
//!
//! # Guarantees
//! - Every measured call is a full `Safety::evaluate` on fresh inputs one control period
//!   later, as in the control loop; nothing is cached between calls that the loop would not
//!   cache.
//! - The harness reports the median and the full tail (p99, p99.9, max) of the whole sample.
//!
//! # Example
//! ```
//! let mut bench = reflex_benches::SafetyBench::new(360, reflex_benches::ScanCase::Protective);
//! let verdict = bench.tick();
//! assert_eq!(verdict.action, reflex_safety::Action::Stop);
//! ```

#![forbid(unsafe_code)]

pub mod fleet;
pub mod infer;
pub mod looping;
pub mod updates;

use reflex_safety::{
    Command, CommandSource, EstopReport, EstopSource, Monotonic, Safety, SafetyConfig,
    SafetyInputs, Scan, Verdict,
};

/// What the scan shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanCase {
    /// Nothing in range (all +inf).
    Clear,
    /// A room: walls 3-6 m away, outside every zone.
    OutOfZones,
    /// A wall 0.2 m ahead of the footprint: inside the protective zone.
    Protective,
}

impl ScanCase {
    pub const ALL: [ScanCase; 3] = [Self::Clear, Self::OutOfZones, Self::Protective];
    pub fn name(self) -> &'static str {
        match self {
            Self::Clear => "clear",
            Self::OutOfZones => "out_of_zones",
            Self::Protective => "in_protective_zone",
        }
    }
}

/// The safety config of the benchmarks: the demo robot with a lidar of up to 2048 beams.
pub fn bench_config() -> SafetyConfig {
    let text = include_str!("../../launch/reflex.example.toml");
    #[derive(serde::Deserialize)]
    struct File {
        safety: SafetyConfig,
    }
    let mut config = toml::from_str::<File>(text)
        .expect("launch/reflex.example.toml parses")
        .safety;
    config.lidar.as_mut().expect("lidar").max_beams = 2048;
    config
}

/// One safety layer, started and moving, fed a scan of `beams` beams every call.
#[derive(Debug)]
pub struct SafetyBench {
    pub safety: Safety,
    ranges: Vec<f32>,
    now: Monotonic,
    angle_increment: f32,
}

impl SafetyBench {
    pub fn new(beams: usize, case: ScanCase) -> Self {
        let angle_increment = std::f32::consts::TAU / beams as f32;
        let ranges = (0..beams)
            .map(|i| {
                let a = -std::f32::consts::PI + i as f32 * angle_increment;
                match case {
                    ScanCase::Clear => f32::INFINITY,
                    // A 6 m × 8 m room around the robot.
                    ScanCase::OutOfZones => (3.0 / a.cos().abs()).min(4.0 / a.sin().abs()),
                    // A wall 0.55 m ahead of the centre (0.2 m from the front), a room elsewhere.
                    ScanCase::Protective => {
                        if a.cos() > 0.3 {
                            0.55 / a.cos()
                        } else {
                            (3.0 / a.cos().abs()).min(4.0 / a.sin().abs())
                        }
                    }
                }
            })
            .collect();
        let mut bench = Self {
            safety: Safety::new(bench_config()).expect("bench config is valid"),
            ranges,
            now: Monotonic::from_millis(1_000),
            angle_increment,
        };
        // Start: every source clear, one reset, then ramp up to speed.
        bench.evaluate(1, 0.0);
        for _ in 0..200 {
            bench.evaluate(1, 0.8);
        }
        bench
    }

    fn evaluate(&mut self, reset_seq: u64, vx: f64) -> Verdict {
        self.now = self.now.add_nanos(10_000_000);
        let inputs = SafetyInputs {
            estop: [EstopReport::Clear(self.now); EstopSource::COUNT],
            reset_request_seq: reset_seq,
            scan: Some(Scan {
                stamp: self.now,
                angle_min_rad: -std::f32::consts::PI,
                angle_increment_rad: self.angle_increment,
                range_min_m: 0.05,
                range_max_m: 30.0,
                ranges_m: &self.ranges,
            }),
            odometry: None,
            joint_state: None,
        };
        // Translation and rotation together: both sweeps run.
        let command = Command::base(CommandSource::LocalPolicy, self.now, vx, 0.1, 0.3);
        self.safety.evaluate(&inputs, &command, self.now)
    }

    /// One control tick: a full evaluate on a scan stamped now.
    pub fn tick(&mut self) -> Verdict {
        self.evaluate(1, 0.8)
    }
}

/// Percentiles of a sample of nanosecond timings (whole sample, nothing filtered).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Tail {
    pub samples: usize,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Tail {
    pub fn of(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            samples: samples.len(),
            p50_ns: at(0.5),
            p99_ns: at(0.99),
            p999_ns: at(0.999),
            max_ns: *samples.last().unwrap_or(&0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_cases_do_what_they_say() {
        for beams in [360, 1081, 2048] {
            let mut clear = SafetyBench::new(beams, ScanCase::Clear);
            let v = clear.tick();
            assert_eq!(v.action, reflex_safety::Action::Pass, "{beams}: {v:?}");
            let mut room = SafetyBench::new(beams, ScanCase::OutOfZones);
            let v = room.tick();
            assert_eq!(v.action, reflex_safety::Action::Pass, "{beams}: {v:?}");
            let mut wall = SafetyBench::new(beams, ScanCase::Protective);
            assert_eq!(wall.tick().action, reflex_safety::Action::Stop, "{beams}");
        }
    }

    #[test]
    fn tail_uses_the_whole_sample() {
        let mut s: Vec<u64> = (1..=1000).collect();
        let t = Tail::of(&mut s);
        assert_eq!((t.p50_ns, t.p99_ns, t.max_ns), (501, 990, 1000));
    }
}
