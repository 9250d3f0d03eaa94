//! The built-in simulator, for development, tests and demos — never production: only the CLI
//! (`reflex sim`, `reflex safety-demo`, `reflex run --io sim`), hil-tests and benches depend on
//! this crate (`runtime/tests/architecture.rs` checks that `reflex-runner` and the crates
//! below it never do).
//!
//! - [`world`]: a planar world of circles (people, posts) and segments (walls), a base whose
//!   drive tracks velocity commands within its own limits, a ray-cast lidar with noise and
//!   dropouts, a camera that renders coloured markers. Deterministic for a seed.
//! - [`lockstep`]: scenarios, the lockstep runner (the production control loop, simulated
//!   inference latency, faster than real time), [`SimSummary`].
//! - [`SimRobot`]: the simulator as a `reflex_core::RobotIo`; [`realtime`] drives it through the
//!   production runner on real threads, with injected worker faults (crash, hang) as a backend
//!   wrapper.
//! - [`arm`]: `reflex sim --robot arm`, an arm on a table (the config's `[safety.arm]`) that
//!   speaks to Reflex through the ROS port's own observation assembly, with a person entering
//!   the cell on its scanner.
//! - [`demo`]: `reflex safety-demo`; [`report`]: `--report` folders (CSV, SVG, MCAP).
//!
//! # Guarantees
//! - Deterministic in lockstep: the same seed, config and policy give the same ticks.
//! - The simulator only overrides what a run's config says (`[chunks]`, `[arbitration]`,
//!   `[runtime] period_ms`); it never loosens `[safety]`.
//!
//! # Config keys
//! None of its own; [`SimOptions`] carries the run's `[chunks]` and `[arbitration]`.
//!
//! # Example
//! ```
//! let scenario = reflex_sim::default_scenario(1);
//! assert_eq!(scenario.instruction, "go to the red marker");
//! ```

#![forbid(unsafe_code)]

pub mod arm;
pub mod demo;
pub mod lockstep;
pub mod realtime;
pub mod report;
mod sim_robot;
pub mod world;

pub use arm::{
    ArmEvent, ArmScenario, ArmSim, ArmSimSummary, ArmTick, CellFixture, CellPerson,
    ScriptedArmPolicy, cell_scan, default_arm_scenario, run_arm_lockstep, run_arm_realtime,
};
pub use lockstep::{
    Faults, Robot, Scenario, SimOptions, SimSummary, SimTick, default_scenario, run_lockstep,
    run_lockstep_with_faults,
};
pub use realtime::{run_realtime, run_sim_robot, run_with_faults};
pub use sim_robot::SimRobot;
