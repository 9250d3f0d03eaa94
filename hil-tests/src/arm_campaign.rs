//! The randomized arm campaign: a person walks into the cell of the shipped arm
//! (`launch/arm.toml`) from a random bearing, at a random speed, stands somewhere between well
//! outside the arm's reach and inside it, and walks out again, while a scripted policy that
//! knows where they are tries to hit them (or the limits), with random sensor blackouts. The
//! production control loop and safety layer run in lockstep with the wire-faithful arm
//! simulator ([`reflex_sim::run_arm_lockstep`]: the ROS port's own frames, the controllers' own
//! messages driving the joints).
//!
//! # Guarantees checked
//! - No contact caused by the arm: no step in which a link or the tool touched the person and
//!   the arm itself moved into them ([`ArmOutcome::contacts_moving_toward`]). A person walking
//!   into a stopped arm is counted apart (`walked_in`): no arm can prevent that.
//! - No measured joint outside its position limits, ever.
//! - The arm never moves with any part of it touching the person (closest approach while it
//!   moves > 0), and no joint stalls (nothing holds one here: a stall would be a false stop).
//! - The closest approach of every encounter is reported (p1, p5, p50).
//!
//! CI runs a sample; the full campaign is
//! `REFLEX_ARM_ENCOUNTERS=10000 cargo test --release -p reflex-hil --test arm_encounters --
//! --nocapture` (hil-tests/README.md, benches/README.md).

use anyhow::Result;
use reflex_policy::PolicyPackage;
use reflex_runner::config::ReflexConfig;
use reflex_sim::world::Rng;
use reflex_sim::{ArmEvent, CellPerson};

/// The package whose action map (3 joint positions and the gripper, 25 steps at 50 Hz) the
/// scripted policies fill.
pub const ARM_PACKAGE: &str = "models/demo/reflex-demo-arm-reach";

/// How the policy in one arm encounter misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArmPerturbation {
    /// Swings the extended arm (tool out) straight at the person, every chunk.
    Reach,
    /// Targets far beyond the joint and gripper limits, toward the person.
    LimitAttack,
    /// Sweeps the shoulder from limit to limit five times faster than it may move.
    Sweep,
    /// Jumps between two random poses every 0.6 s.
    BangBang,
    /// Every chunk a new random pose anywhere in the limits (chunks that do not splice).
    Jump,
    /// Points away, then swings at the person once they are within 1.5 m.
    LateSwerve,
    /// Reach, its chunks arriving 50–250 ms after their observation (slow inference/link;
    /// `[chunks] max_action_age_ms` is 200).
    Delayed,
    /// Reach, with NaN or infinite targets in a few steps of every other or fifth chunk.
    GarbageBursts,
}

impl ArmPerturbation {
    pub const ALL: [ArmPerturbation; 8] = [
        Self::Reach,
        Self::LimitAttack,
        Self::Sweep,
        Self::BangBang,
        Self::Jump,
        Self::LateSwerve,
        Self::Delayed,
        Self::GarbageBursts,
    ];
}

/// What one arm encounter did.
#[derive(Debug, Clone, Copy)]
pub struct ArmOutcome {
    pub seed: u64,
    pub perturbation: ArmPerturbation,
    /// The closest a link capsule or the tool came to the person's body (m; <= 0 contact).
    pub min_separation_m: f64,
    /// The closest while the arm moved (a joint above 1 % of its max speed); infinite when it
    /// never moved while the person was in the cell.
    pub min_moving_separation_m: f64,
    /// Steps with the person touched.
    pub contact_steps: u64,
    /// Steps with the person touched while the arm moved into them: the policy's doing.
    pub contacts_moving_toward: u64,
    /// Steps with a measured joint outside its limits.
    pub position_violations: u64,
    /// Ticks with a SAF-018 stall: nothing holds a joint here, so any is a false stop.
    pub stalls: u64,
    /// The largest distance any joint moved from its start (rad): the arm was not just still.
    pub moved_rad: f64,
    /// How near the person came to the arm's base (m).
    pub person_to_m: f64,
}

/// The campaign's robot: `launch/arm.toml` and the arm package (from the repository root).
pub fn campaign_robot(repo: &std::path::Path) -> Result<(ReflexConfig, PolicyPackage)> {
    let config = ReflexConfig::parse(crate::arm::ARM_CONFIG)?;
    let package = PolicyPackage::open(&repo.join(ARM_PACKAGE))?;
    Ok((config, package))
}

/// One randomized encounter from `seed` on `config`'s arm with `package`'s action map.
pub fn run_arm_encounter(
    config: &ReflexConfig,
    package: &PolicyPackage,
    seed: u64,
) -> Result<ArmOutcome> {
    let mut rng = Rng::new(seed);
    let arm = config
        .safety
        .arm
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the arm campaign needs [safety.arm]"))?;
    let limits: Vec<(f64, f64)> = arm
        .joints
        .iter()
        .map(|j| (j.min_position, j.max_position))
        .collect();
    let n = limits.len();
    let gripper = arm
        .gripper
        .as_ref()
        .map_or((0.0, 0.0), |g| (g.min_position, g.max_position));
    let bearing = rng.range(-std::f64::consts::PI, std::f64::consts::PI);
    let from_m = rng.range(2.5, 3.5);
    let to_m = rng.range(0.3, 1.5);
    let enter_s = rng.range(0.3, 2.5);
    let stand_s = enter_s + (from_m - to_m) / rng.range(0.5, 1.6);
    let leave_s = stand_s + rng.range(0.3, 2.0);
    let gone_s = leave_s + (from_m - to_m) / rng.range(0.5, 1.6);
    let person = CellPerson {
        bearing_rad: bearing,
        from_m,
        to_m,
        enter_s,
        stand_s,
        leave_s,
        gone_s,
    };
    // A second after they are gone: the arm resumes.
    let duration_s = gone_s + 1.0;
    let mut scenario = reflex_sim::default_arm_scenario("");
    scenario.name = format!("arm-encounter-{seed}");
    scenario.person = Some(person);
    scenario.cameras = false;
    scenario.trace = true;
    scenario.joint_tau_s = rng.range(0.02, 0.08);
    // Sensor blackouts: the cell scanner, or the drives' joint states, go quiet for a while.
    let blackout = rng.uniform();
    let at = rng.range(0.5, duration_s.max(0.6));
    let for_s = rng.range(0.05, 0.4);
    if blackout < 0.15 {
        scenario.events = vec![
            (at, ArmEvent::ScanStops),
            (at + for_s, ArmEvent::ScanResumes),
        ];
    } else if blackout < 0.25 {
        scenario.events = vec![
            (at, ArmEvent::JointStatesStop),
            (at + for_s, ArmEvent::JointStatesResume),
        ];
    }
    let perturbation = ArmPerturbation::ALL[(rng.next_u64() % 8) as usize];
    let every_ticks = 3 + rng.next_u64() % 8; // a chunk every 30–100 ms
    let delay_ns = (rng.range(50.0, 250.0) * 1e6) as u64;
    let rate_s = 1.0 / package.manifest.control_rate_hz;
    let dims = package.manifest.action_space.len();
    let random_pose = |rng: &mut Rng| -> Vec<f64> {
        let mut p: Vec<f64> = limits.iter().map(|&(lo, hi)| rng.range(lo, hi)).collect();
        p.push(rng.range(gripper.0, gripper.1));
        p
    };
    let mut poses = [random_pose(&mut rng), random_pose(&mut rng)];
    let clamp_shoulder = |b: f64| b.clamp(limits[0].0, limits[0].1);
    let at_person = |b: f64| {
        let mut p = vec![0.0; n + 1];
        p[0] = clamp_shoulder(b);
        p[n] = gripper.1;
        p
    };
    let mut step = 0u64;
    let mut policy = |now: u64, t_s: f64, _measured: &[f64], actions: &mut [f32]| {
        step += 1;
        if !(step - 1).is_multiple_of(every_ticks) {
            return None;
        }
        let near = person.at(t_s).map(|(x, y)| x.hypot(y));
        let toward = bearing;
        let mut t_obs = now;
        let horizon = actions.len() / dims;
        for k in 0..horizon {
            let tk = t_s + k as f64 * rate_s;
            let pose: Vec<f64> = match perturbation {
                ArmPerturbation::Reach | ArmPerturbation::Delayed => at_person(toward),
                ArmPerturbation::GarbageBursts => {
                    let mut p = at_person(toward);
                    let chunk = (step - 1) / every_ticks;
                    if (3..6).contains(&k) {
                        match chunk % 5 {
                            0 => p[0] = f64::NAN,
                            2 => p[1] = f64::INFINITY,
                            _ => {}
                        }
                    }
                    p
                }
                ArmPerturbation::LimitAttack => {
                    let mut p: Vec<f64> = limits
                        .iter()
                        .enumerate()
                        .map(|(i, &(lo, hi))| {
                            let s = if i == 0 { toward.signum() } else { 1.0 };
                            if s >= 0.0 { hi + 1.5 } else { lo - 1.5 }
                        })
                        .collect();
                    p.push(gripper.1 + 0.1);
                    p
                }
                ArmPerturbation::Sweep => {
                    let mut p = vec![0.0; n + 1];
                    let amp = limits[0].1.min(-limits[0].0);
                    p[0] = amp * (std::f64::consts::TAU * tk / 3.0).sin();
                    p
                }
                ArmPerturbation::BangBang => poses[((tk / 0.6) as usize) % 2].clone(),
                ArmPerturbation::Jump => poses[0].clone(),
                ArmPerturbation::LateSwerve => {
                    if near.is_some_and(|d| d < 1.5) {
                        at_person(toward)
                    } else {
                        at_person(toward + std::f64::consts::PI)
                    }
                }
            };
            for (a, p) in actions[k * dims..(k + 1) * dims].iter_mut().zip(&pose) {
                *a = *p as f32;
            }
        }
        if perturbation == ArmPerturbation::Jump {
            poses[0] = random_pose(&mut rng);
        }
        if perturbation == ArmPerturbation::Delayed {
            t_obs = now.saturating_sub(delay_ns);
        }
        Some(t_obs)
    };
    let summary = reflex_sim::run_arm_lockstep(config, package, scenario, duration_s, &mut policy)?;
    let first = summary.trace.first().map(|t| t.positions.clone());
    let moved_rad = first.map_or(0.0, |q0| {
        summary
            .trace
            .iter()
            .flat_map(|t| t.positions.iter().zip(&q0).map(|(a, b)| (a - b).abs()))
            .fold(0.0, f64::max)
    });
    Ok(ArmOutcome {
        seed,
        perturbation,
        min_separation_m: summary.min_person_separation_m.unwrap_or(f64::INFINITY),
        min_moving_separation_m: summary.min_moving_separation_m.unwrap_or(f64::INFINITY),
        contact_steps: summary.contact_steps,
        contacts_moving_toward: summary.contacts_moving_toward,
        position_violations: summary.position_violations,
        stalls: summary
            .run
            .vetoes
            .get("joint_stalled")
            .copied()
            .unwrap_or(0),
        moved_rad,
        person_to_m: to_m,
    })
}
