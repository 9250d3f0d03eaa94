//! `reflex-hil`: run scenario files on the built-in simulator (`run`), or on a real robot
//! through the ROS 2 port (`hardware`). See hil-tests/README.md.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use reflex_hil::scenario::{Check, Scenario};

#[derive(Parser)]
#[command(
    name = "reflex-hil",
    about = "Reflex scenarios: simulated, or on a robot through ROS 2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs scenario files on the built-in simulator (lockstep or real time, as each says) and
    /// prints a summary table; exit 1 when an assertion fails.
    Run {
        /// Scenario files (default: every hil-tests/scenarios/*.toml).
        scenarios: Vec<PathBuf>,
        /// Write a report folder per scenario here (ticks.csv, trajectory.svg, checks.txt).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Runs one scenario on a robot through the ROS 2 port with the real loop: prompts people
    /// for the E-stop and obstacles (lines starting with PROMPT), injects the faults it can,
    /// checks the assertions from what the robot reported. Exit 1 when one fails.
    Hardware {
        scenario: PathBuf,
        /// The robot's Reflex config (safety limits, topics, E-stop sources).
        #[arg(long)]
        config: PathBuf,
        /// `dds` (pure-Rust DDS, build with --features dds) or `ros2` (r2r, --features ros2).
        #[arg(long, default_value = "dds")]
        io: String,
        /// Policy package for VLA scenarios (default: the demo policy).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// `stdin`: wait for Enter after the set-up; `auto`: start at once (a harness or a
        /// person answers the prompts as they come).
        #[arg(long, default_value = "stdin")]
        operator: String,
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("reflex-hil: error: {e:#}");
        std::process::exit(2);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Run { scenarios, report } => {
            let files = if scenarios.is_empty() {
                let dir = repo().join("hil-tests/scenarios");
                let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .with_context(|| format!("cannot list {}", dir.display()))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                    .collect();
                files.sort();
                files
            } else {
                scenarios
            };
            println!(
                "{:<42} {:<7} {:>6} {:>9} {:>9}  covers",
                "scenario", "result", "ticks", "min_clr_m", "max_v"
            );
            let mut failed = 0;
            for file in &files {
                let s = Scenario::load(file)?;
                let r = s.run(&s.safety_config()?)?;
                let checks = s.check(&r);
                if let Some(dir) = &report {
                    s.write_report(&dir.join(&s.name), &r, &checks)?;
                }
                let ok = checks.iter().all(|c| c.passed);
                failed += usize::from(!ok);
                println!(
                    "{:<42} {:<7} {:>6} {:>9.3} {:>9.3}  {}",
                    s.name,
                    if ok { "pass" } else { "FAIL" },
                    r.ticks,
                    r.min_clearance_m,
                    r.max_speed_mps,
                    s.covers.join(" ")
                );
                print_failures(&checks);
            }
            if failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Hardware {
            scenario,
            config,
            io,
            policy,
            operator,
            report,
        } => {
            let s = Scenario::load(&scenario)?;
            reflex_hil::hardware::check_supported(&s)?;
            let config = reflex_runner::config::ReflexConfig::load(&config)?;
            let package_dir = policy.unwrap_or_else(|| repo().join("models/demo/reflex-demo-vla"));
            let package = reflex_policy::PolicyPackage::open(&package_dir)?;
            let backend = reflex_policy::BackendConfig {
                ort_library: config
                    .models
                    .ort_library
                    .clone()
                    .or_else(|| Some(reflex_policy::ort_library_or_venv(&repo()))),
                ..config.models.clone()
            };
            let mut wait: Box<dyn FnMut() -> Result<()>> = match operator.as_str() {
                "auto" => Box::new(|| Ok(())),
                "stdin" => Box::new(|| {
                    println!("Build the set-up above, then press Enter to start.");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    Ok(())
                }),
                other => anyhow::bail!("--operator {other:?}: use stdin or auto"),
            };
            let mut robot = robot(&io, &config, &package)?;
            let (r, realized) = reflex_hil::hardware::run(
                &s,
                &config,
                &package,
                &backend,
                robot.as_mut(),
                Box::new(std::io::stdout()),
                &mut *wait,
            )?;
            let checks = realized.check(&r);
            if let Some(dir) = &report {
                realized.write_report(dir, &r, &checks)?;
            }
            for c in &checks {
                println!(
                    "CHECK {} {} — {}",
                    if c.passed { "PASS" } else { "FAIL" },
                    c.assertion,
                    c.detail
                );
            }
            println!(
                "RESULT {} {} ticks={} deadline_misses={} host_latches={} min_clearance_m={:.3}",
                s.name,
                if checks.iter().all(|c| c.passed) {
                    "pass"
                } else {
                    "FAIL"
                },
                r.ticks,
                r.deadline_misses,
                r.host_latches,
                r.min_clearance_m
            );
            if !checks.iter().all(|c| c.passed) {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn print_failures(checks: &[Check]) {
    for c in checks.iter().filter(|c| !c.passed) {
        println!("    FAIL {} — {}", c.assertion, c.detail);
    }
}

/// The robot behind the ROS 2 port.
#[allow(unused_variables)]
fn robot(
    io: &str,
    config: &reflex_runner::config::ReflexConfig,
    package: &reflex_policy::PolicyPackage,
) -> Result<Box<dyn reflex_core::RobotIo>> {
    let beams = config.safety.lidar.as_ref().map_or(0, |l| l.max_beams);
    let status = std::sync::Arc::new(reflex_core::LoopStatus::default());
    match io {
        #[cfg(feature = "dds")]
        "dds" => Ok(Box::new(reflex_ros::dds::DdsRobot::new(
            &config.ros,
            beams,
            &config.safety,
            &package.manifest,
            status,
        )?)),
        #[cfg(not(feature = "dds"))]
        "dds" => anyhow::bail!(
            "--io dds: this reflex-hil was built without the dds adapter; rebuild with \
             `cargo build -p reflex-hil --features dds`"
        ),
        #[cfg(feature = "ros2")]
        "ros2" => {
            let (node, overrides) = reflex_ros::ros2::node_and_overrides(&config.ros)?;
            if !overrides.is_empty() {
                let keys: Vec<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
                eprintln!(
                    "reflex-hil: ROS parameters not applied (the scenario runs --config as it is): {}",
                    keys.join(", ")
                );
            }
            Ok(Box::new(reflex_ros::ros2::Ros2Robot::new(
                node,
                &config.ros,
                beams,
                &config.safety,
                &package.manifest,
                status,
            )?))
        }
        #[cfg(not(feature = "ros2"))]
        "ros2" => anyhow::bail!(
            "--io ros2: this reflex-hil was built without the r2r adapter; on the robot, \
             `source /opt/ros/<distro>/setup.bash && cargo build --release -p reflex-hil \
             --features ros2`"
        ),
        other => anyhow::bail!("--io {other:?}: use dds or ros2"),
    }
}
