//! Arm scenarios as data (`hil-tests/scenarios/arm/*.toml`): the shipped `launch/arm.toml`
//! (with a scenario's `[robot]` overrides merged over it), a policy package, the simulated arm
//! of `reflex sim --robot arm` ([`reflex_sim::ArmSim`]: the ROS port's own observation
//! assembly, first-order drives, a cell scanner) in real time through the production runner,
//! faults and operator actions at times, and assertions on what the simulator measured.
//!
//! ```toml
//! name = "arm_estop_category_1"
//! description = "…"
//! covers = ["SAF-001"]
//! duration_s = 6.0
//! [policy]                     # optional: package (default models/demo/reflex-demo-arm-reach)
//! package = "models/demo/tiny-language"
//! instruction = "lower the arm"
//! [robot.safety.arm]           # optional: merged over launch/arm.toml
//! max_following_error = 0.2
//! [person]                     # optional: reflex_sim::CellPerson (bearing_rad, from_m, to_m,
//! bearing_rad = -0.6           # enter_s, stand_s, leave_s, gone_s)
//! fixtures = [{ x_m = 0.4, y_m = 0.3, radius_m = 0.03 }]  # optional (top level, before the
//! teach_background = true      # tables): static objects the scanner sees; and whether the
//! scan_noise_m = 0.01          # background is taught from the empty cell first (SAF-019);
//!                              # the scanner's range noise (uniform, m)
//! [inference]                  # optional: the model's faults (s): outputs_nan_at_s,
//! outputs_nan_at_s = 1.0       # hangs_at_s, crashes_at_s; first_inference_ms
//! [[events]]                   # reflex_sim::ArmEvent: estop_pressed/released, estop_heartbeat_
//!                              # stops/resumes, ros_estop_pressed/released, reset,
//! at_s = 1.5                   # camera_stops/resumes {camera}, joint_blocked/released {joint},
//! kind = "estop_pressed"       # joint_state_nan {joint}, joint_state_ok, joint_states_stop/
//! [[assert]]                   # resume, scan_stops/resumes, instruction {text}
//! kind = "still_after"         # see [`ArmAssert`]; `occurrence` picks which such event
//! after = "estop_pressed"
//! within_ms = 400
//! ```
//!
//! Runs on the simulator only: `reflex-hil hardware` does not take arm scenarios yet.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use reflex_sim::{ArmEvent, ArmScenario, ArmSimSummary, CellFixture, CellPerson};
use serde::Deserialize;

/// The shipped arm config.
pub const ARM_CONFIG: &str = include_str!("../../launch/arm.toml");

/// `reflex teach-background`'s default band (m).
pub const DEFAULT_TEACH_TOLERANCE_M: f64 = 0.03;

/// Below this speed ratio (measured speed / `max_velocity`) a joint counts as still.
pub const STILL_RATIO: f64 = 0.01;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmScenarioFile {
    pub name: String,
    pub description: String,
    pub covers: Vec<String>,
    pub duration_s: f64,
    #[serde(default)]
    pub policy: PolicySpec,
    /// Merged over launch/arm.toml.
    #[serde(default)]
    pub robot: toml::Table,
    pub person: Option<CellPerson>,
    /// Static objects of the cell the scanner sees (table legs, posts).
    #[serde(default)]
    pub fixtures: Vec<CellFixture>,
    /// Teach `[safety.lidar.background]` from 20 scans of the empty cell (the fixtures, nobody
    /// in it) with `reflex teach-background`'s code and tolerance, before the run (SAF-019).
    #[serde(default)]
    pub teach_background: bool,
    /// The scanner's range noise: each return off by up to this (m), uniformly.
    #[serde(default)]
    pub scan_noise_m: f64,
    /// Faults of the inference worker's model (the first worker; the supervisor's
    /// replacement is healthy).
    #[serde(default)]
    pub inference: InferenceFaults,
    #[serde(default)]
    pub events: Vec<TimedEvent>,
    #[serde(rename = "assert")]
    pub asserts: Vec<ArmAssert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default = "default_package")]
    pub package: PathBuf,
    #[serde(default)]
    pub instruction: String,
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            package: default_package(),
            instruction: String::new(),
        }
    }
}

/// `[inference]`: times (s from the first inference) at which the model goes wrong.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceFaults {
    /// From then on every chunk it makes is NaN.
    pub outputs_nan_at_s: Option<f64>,
    /// It blocks (alive, silent) until the run ends.
    pub hangs_at_s: Option<f64>,
    /// Its inference returns an error (the worker thread ends).
    pub crashes_at_s: Option<f64>,
    /// Its first inference in service takes this long (ms): the first chunk arrives late.
    pub first_inference_ms: Option<f64>,
}

fn first_occurrence() -> usize {
    1
}

fn default_package() -> PathBuf {
    "models/demo/reflex-demo-arm-reach".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct TimedEvent {
    pub at_s: f64,
    #[serde(flatten)]
    pub event: ArmEvent,
}

/// What a scenario asserts, on the simulator's own measurements.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum ArmAssert {
    /// Every joint still (speed ratio < [`STILL_RATIO`]) from `within_ms` after the
    /// `occurrence`-th (default first) event of kind `after` until the next event (or the end).
    StillAfter {
        after: String,
        within_ms: f64,
        #[serde(default = "first_occurrence")]
        occurrence: usize,
    },
    /// Every joint still between `from_s` and `to_s` (s from the start).
    StillBetween { from_s: f64, to_s: f64 },
    /// Every joint still for at least `ms` in a row somewhere between `from_s` and `to_s` (it
    /// stopped, when exactly depends on the host: a worker's replacement, a model load).
    StillFor { from_s: f64, to_s: f64, ms: f64 },
    /// After the `occurrence`-th event of kind `after`, some joint moves at least `rad` from
    /// where it was then; with `joint` (index) and `direction` (+1 or -1), that joint, that way.
    MovedAfter {
        after: String,
        rad: f64,
        #[serde(default = "first_occurrence")]
        occurrence: usize,
        joint: Option<usize>,
        direction: Option<f64>,
    },
    /// At `at_s` some joint is further than `by` from `positions` (the arm was held short).
    ShortOf {
        at_s: f64,
        positions: Vec<f64>,
        by: f64,
    },
    /// The person never came nearer than `m` to a link capsule or the tool (no contact: > 0).
    SeparationAbove { m: f64 },
    /// The final joint positions within `tolerance` of `positions`.
    Reaches { positions: Vec<f64>, tolerance: f64 },
    /// The safety layer gave `reason` (a slow or stop reason) in at least one tick.
    Vetoed { reason: String },
    /// No measured joint outside its `[safety.arm]` position limits, ever.
    NoLimitViolations,
    /// The measured speed ratio never above `ratio`.
    NeverFasterThan { ratio: f64 },
    /// Joint `joint` (by index) stays within [`min`, `max`] throughout (and, with
    /// `ends_beyond`, ends further from 0 than it: it was pushed to the limit, not left short).
    StaysWithin {
        joint: usize,
        min: f64,
        max: f64,
        ends_beyond: Option<f64>,
    },
    /// The measured gripper stays within [`min`, `max`] throughout and ends at least at
    /// `reaches_m` (it was driven there, not left shut).
    GripperWithin { min: f64, max: f64, reaches_m: f64 },
}

/// One assertion's outcome.
#[derive(Debug, Clone)]
pub struct ArmCheck {
    pub what: String,
    pub passed: bool,
    pub detail: String,
}

impl ArmScenarioFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let s: Self =
            toml::from_str(&text).with_context(|| format!("scenario {}", path.display()))?;
        anyhow::ensure!(
            s.duration_s.is_finite() && s.duration_s > 0.0 && s.duration_s <= 60.0,
            "{}: duration_s must be in (0, 60]",
            s.name
        );
        anyhow::ensure!(
            s.events.windows(2).all(|w| w[0].at_s <= w[1].at_s),
            "{}: events must be in time order",
            s.name
        );
        for a in &s.asserts {
            if let ArmAssert::StillAfter {
                after, occurrence, ..
            }
            | ArmAssert::MovedAfter {
                after, occurrence, ..
            } = a
            {
                let n = s.events.iter().filter(|e| e.event.kind() == after).count();
                anyhow::ensure!(
                    *occurrence >= 1 && *occurrence <= n,
                    "{}: an assertion is about occurrence {occurrence} of event {after:?}, which the scenario has {n} of",
                    s.name
                );
            }
        }
        Ok(s)
    }

    /// launch/arm.toml with `[robot]` merged over it.
    pub fn config(&self) -> Result<reflex_runner::config::ReflexConfig> {
        let mut base: toml::Table = toml::from_str(ARM_CONFIG)?;
        crate::scenario::merge(&mut base, &self.robot);
        let mut config = reflex_runner::config::ReflexConfig::from_table(base)
            .with_context(|| format!("{}: launch/arm.toml with [robot] merged", self.name))?;
        if self.teach_background {
            // 4 s of the empty cell at the scanner's 20 Hz.
            let recording: Vec<_> = (0..80u64)
                .map(|k| {
                    reflex_sim::cell_scan(None, &self.fixtures, self.scan_noise_m, k * 50_000_000)
                })
                .collect();
            let scans: Vec<_> = recording
                .iter()
                .map(|s| reflex_safety::Scan {
                    stamp: reflex_safety::Monotonic::from_nanos(
                        s.header.stamp.as_nanos().unwrap_or(0),
                    ),
                    angle_min_rad: s.angle_min,
                    angle_increment_rad: s.angle_increment,
                    range_min_m: s.range_min,
                    range_max_m: s.range_max,
                    ranges_m: &s.ranges,
                })
                .collect();
            let lidar =
                config.safety.lidar.as_mut().with_context(|| {
                    format!("{}: teach_background needs [safety.lidar]", self.name)
                })?;
            let taught = reflex_safety::teach_background(
                &scans,
                DEFAULT_TEACH_TOLERANCE_M,
                lidar.base_from_lidar,
            )
            .with_context(|| format!("{}: teaching the cell's background", self.name))?;
            lidar.background = Some(taught.background);
            config.safety.validate().map_err(|e| {
                anyhow::anyhow!("{}: the taught background is refused: {e}", self.name)
            })?;
        }
        Ok(config)
    }

    /// Runs the scenario in real time (about `duration_s`): what the simulator saw, and the
    /// watchdog trips of the run (the host starved the RT thread past the config's bounds).
    pub fn run(&self, repo: &Path) -> Result<(ArmSimSummary, u64)> {
        let config = self.config()?;
        let package = reflex_policy::PolicyPackage::open(&repo.join(&self.policy.package))?;
        let backend = reflex_policy::BackendConfig {
            ort_library: Some(reflex_policy::ort_library_or_venv(repo)),
            ..reflex_policy::BackendConfig::default()
        };
        let mut scenario = reflex_sim::default_arm_scenario(&self.policy.instruction);
        scenario.name = self.name.clone();
        scenario.person = self.person;
        scenario.fixtures = self.fixtures.clone();
        scenario.scan_noise_m = self.scan_noise_m;
        scenario.events = self
            .events
            .iter()
            .map(|e| (e.at_s, e.event.clone()))
            .collect();
        scenario.trace = true;
        let options = reflex_sim::SimOptions {
            duration_s: self.duration_s,
            period_ms: config.runtime.period_ms,
            chunks: config.chunks,
            arbitration: config.arbitration.clone(),
            nan_output_at_s: self.inference.outputs_nan_at_s,
            kill_inference_at_s: self.inference.hangs_at_s,
            crash_inference_at_s: self.inference.crashes_at_s,
            first_inference_ms: self.inference.first_inference_ms,
            ..Default::default()
        };
        let (summary, report) = run(&config, &package, &backend, scenario, &options)?;
        Ok((summary, report.watchdog_trips))
    }

    /// Every assertion on `summary`.
    pub fn check(&self, summary: &ArmSimSummary) -> Vec<ArmCheck> {
        let trace = &summary.trace;
        let nth = |kind: &str, occurrence: usize| {
            self.events
                .iter()
                .enumerate()
                .filter(|(_, e)| e.event.kind() == kind)
                .nth(occurrence.saturating_sub(1))
                .map(|(i, e)| (e.at_s, self.events.get(i + 1).map(|e| e.at_s)))
        };
        self.asserts
            .iter()
            .map(|a| match a {
                ArmAssert::StillAfter {
                    after,
                    within_ms,
                    occurrence,
                } => {
                    let (at, next) = nth(after, *occurrence).unwrap_or((f64::INFINITY, None));
                    let from = at + within_ms / 1000.0;
                    let until = next.unwrap_or(f64::INFINITY);
                    let window: Vec<_> = trace
                        .iter()
                        .filter(|t| t.t_s >= from && t.t_s < until)
                        .collect();
                    let peak = window.iter().map(|t| t.speed_ratio).fold(0.0, f64::max);
                    ArmCheck {
                        what: format!("still {within_ms} ms after {after}"),
                        passed: !window.is_empty() && peak < STILL_RATIO,
                        detail: format!(
                            "peak speed ratio {peak:.4} over {} steps from {from:.2} s",
                            window.len()
                        ),
                    }
                }
                ArmAssert::StillBetween { from_s, to_s } => {
                    let window: Vec<_> = trace
                        .iter()
                        .filter(|t| t.t_s >= *from_s && t.t_s < *to_s)
                        .collect();
                    let peak = window.iter().map(|t| t.speed_ratio).fold(0.0, f64::max);
                    ArmCheck {
                        what: format!("still from {from_s} s to {to_s} s"),
                        passed: !window.is_empty() && peak < STILL_RATIO,
                        detail: format!("peak speed ratio {peak:.4} over {} steps", window.len()),
                    }
                }
                ArmAssert::StillFor { from_s, to_s, ms } => {
                    let mut run_start: Option<f64> = None;
                    let mut longest = 0.0f64;
                    for t in trace.iter().filter(|t| t.t_s >= *from_s && t.t_s < *to_s) {
                        if t.speed_ratio < STILL_RATIO {
                            let s0 = *run_start.get_or_insert(t.t_s);
                            longest = longest.max(t.t_s - s0);
                        } else {
                            run_start = None;
                        }
                    }
                    ArmCheck {
                        what: format!("still for {ms} ms between {from_s} s and {to_s} s"),
                        passed: longest * 1000.0 >= *ms,
                        detail: format!("longest still {:.0} ms", longest * 1000.0),
                    }
                }
                ArmAssert::MovedAfter {
                    after,
                    rad,
                    occurrence,
                    joint,
                    direction,
                } => {
                    let (at, _) = nth(after, *occurrence).unwrap_or((f64::INFINITY, None));
                    let start = trace.iter().find(|t| t.t_s >= at);
                    let sign = direction.unwrap_or(1.0).signum();
                    let moved = start.map_or(0.0, |s| {
                        trace
                            .iter()
                            .filter(|t| t.t_s >= at)
                            .flat_map(|t| {
                                t.positions.iter().zip(&s.positions).enumerate().filter_map(
                                    |(k, (a, b))| match joint {
                                        Some(j) if *j != k => None,
                                        Some(_) if direction.is_some() => Some((a - b) * sign),
                                        _ => Some((a - b).abs()),
                                    },
                                )
                            })
                            .fold(0.0, f64::max)
                    });
                    let which = match (joint, direction) {
                        (Some(j), Some(d)) => format!("joint {j} by {d:+}·"),
                        (Some(j), None) => format!("joint {j} "),
                        _ => String::new(),
                    };
                    ArmCheck {
                        what: format!("moved {which}{rad} rad after {after} #{occurrence}"),
                        passed: moved >= *rad,
                        detail: format!("moved {moved:.3} rad"),
                    }
                }
                ArmAssert::ShortOf {
                    at_s,
                    positions,
                    by,
                } => {
                    let at = trace.iter().find(|t| t.t_s >= *at_s);
                    let off = at.map_or(0.0, |t| {
                        t.positions
                            .iter()
                            .zip(positions)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0.0, f64::max)
                    });
                    ArmCheck {
                        what: format!("short of {positions:?} at {at_s} s"),
                        passed: at.is_some() && off > *by,
                        detail: format!(
                            "at {:?}",
                            at.map(|t| rounded(&t.positions)).unwrap_or_default()
                        ),
                    }
                }
                ArmAssert::SeparationAbove { m } => {
                    let d = summary.min_person_separation_m.unwrap_or(f64::NAN);
                    ArmCheck {
                        what: format!("the person never nearer than {m} m"),
                        passed: d > *m,
                        detail: format!("closest {d:.3} m"),
                    }
                }
                ArmAssert::Reaches {
                    positions,
                    tolerance,
                } => {
                    let err = summary
                        .final_positions
                        .iter()
                        .zip(positions)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    ArmCheck {
                        what: format!("reaches {positions:?}"),
                        passed: positions.len() == summary.final_positions.len()
                            && err <= *tolerance,
                        detail: format!("final {:?}", rounded(&summary.final_positions)),
                    }
                }
                ArmAssert::Vetoed { reason } => {
                    let n = summary.run.vetoes.get(reason).copied().unwrap_or(0);
                    ArmCheck {
                        what: format!("vetoed {reason}"),
                        passed: n > 0,
                        detail: format!("{n} ticks; vetoes {:?}", summary.run.vetoes),
                    }
                }
                ArmAssert::NoLimitViolations => ArmCheck {
                    what: "no joint outside its limits".into(),
                    passed: summary.position_violations == 0,
                    detail: format!("{} steps outside", summary.position_violations),
                },
                ArmAssert::NeverFasterThan { ratio } => ArmCheck {
                    what: format!("never faster than {ratio} of max_velocity"),
                    passed: summary.peak_speed_ratio <= *ratio,
                    detail: format!("peak {:.3}", summary.peak_speed_ratio),
                },
                ArmAssert::StaysWithin {
                    joint,
                    min,
                    max,
                    ends_beyond,
                } => {
                    let (lo, hi) = trace
                        .iter()
                        .filter_map(|t| t.positions.get(*joint))
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                            (lo.min(*x), hi.max(*x))
                        });
                    let last = trace
                        .last()
                        .and_then(|t| t.positions.get(*joint))
                        .copied()
                        .unwrap_or(f64::NAN);
                    let ends_ok = ends_beyond.is_none_or(|e| last.abs() >= e);
                    ArmCheck {
                        what: format!("joint {joint} within [{min}, {max}]"),
                        passed: !trace.is_empty() && lo >= *min && hi <= *max && ends_ok,
                        detail: format!("range [{lo:.3}, {hi:.3}], final {last:.3}"),
                    }
                }
                ArmAssert::GripperWithin {
                    min,
                    max,
                    reaches_m,
                } => {
                    let (lo, hi) = trace
                        .iter()
                        .map(|t| t.gripper_m)
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                            (lo.min(x), hi.max(x))
                        });
                    let last = trace.last().map_or(f64::NAN, |t| t.gripper_m);
                    ArmCheck {
                        what: format!("gripper within [{min}, {max}], reaching {reaches_m}"),
                        passed: !trace.is_empty() && lo >= *min && hi <= *max && last >= *reaches_m,
                        detail: format!("range [{lo:.4}, {hi:.4}], final {last:.4}"),
                    }
                }
            })
            .collect()
    }
}

fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}

fn run(
    config: &reflex_runner::config::ReflexConfig,
    package: &reflex_policy::PolicyPackage,
    backend: &reflex_policy::BackendConfig,
    scenario: ArmScenario,
    options: &reflex_sim::SimOptions,
) -> Result<(ArmSimSummary, reflex_runner::run::RealtimeReport)> {
    reflex_sim::run_arm_realtime(
        config,
        package,
        backend,
        scenario,
        options,
        &std::sync::Arc::new(reflex_runner::swap::SwapPort::default()),
    )
}

/// `hil-tests/scenarios/arm/*.toml`, sorted.
pub fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/arm");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    files
}
