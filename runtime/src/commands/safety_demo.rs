//! `reflex safety-demo`: the safety layer against an adversarial policy on the simulator.

use std::path::PathBuf;

use anyhow::Result;
use reflex_runner::config::ReflexConfig;

/// Drive the built-in simulator's robot with an adversarial policy through a scripted day
/// (pedestrian, E-stop, frozen lidar, end wall) and print the safety layer's verdicts.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Reflex TOML config; its [safety] section is what gets enforced.
    #[arg(long, default_value = "launch/reflex.example.toml")]
    config: PathBuf,
    /// Simulated seconds to run.
    #[arg(long, default_value_t = 14.0)]
    seconds: f64,
    /// Print a line at least this often (ms of simulated time), and at every change.
    #[arg(long, default_value_t = 250)]
    print_every_ms: u64,
    /// Seed of the lidar noise.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        config,
        seconds,
        print_every_ms,
        seed,
    } = args;
    anyhow::ensure!(
        seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0,
        "--seconds must be in (0, 3600], got {seconds}"
    );
    let config = ReflexConfig::load(&config)?;
    let summary = reflex_sim::demo::run(
        &config.safety,
        seconds,
        print_every_ms,
        seed,
        &mut std::io::stdout().lock(),
    )?;
    anyhow::ensure!(
        summary.collisions == 0,
        "the simulated robot collided {} times: the safety config does not protect this robot",
        summary.collisions
    );
    Ok(())
}
