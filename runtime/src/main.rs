//! `reflex`: the on-robot runtime's command line.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use reflex_runtime::{config::ReflexConfig, demo};

/// Reflex: a learned policy beside a real-time loop, behind a safety layer that can always veto.
#[derive(Debug, Parser)]
#[command(name = "reflex", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Drive the built-in simulator's robot with an adversarial policy through a scripted day
    /// (pedestrian, E-stop, frozen lidar, end wall) and print the safety layer's verdicts.
    SafetyDemo {
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
    },
    /// Validate a config file and print the safety config hash.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("reflex: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::SafetyDemo {
            config,
            seconds,
            print_every_ms,
            seed,
        } => {
            anyhow::ensure!(
                seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0,
                "--seconds must be in (0, 3600], got {seconds}"
            );
            let config = ReflexConfig::load(&config)?;
            let summary = demo::run(
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
        Cmd::CheckConfig { config } => {
            let path = config.display().to_string();
            let config = ReflexConfig::load(&config)?;
            let safety = reflex_safety::Safety::new(config.safety)?;
            println!("{path}: ok, safety config {}", safety.config_hash_hex());
            Ok(())
        }
    }
}
