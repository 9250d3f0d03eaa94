//! `reflex check-config`: validate a config file (with `--set` overrides) and print the safety config hash.

use std::path::PathBuf;

use anyhow::{Context, Result};
use reflex_runner::config::ReflexConfig;

/// Validate a config file and print the safety config hash.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// Override a key: `--set ros.topics.scan=/front/scan` (a TOML value; a bare word is a
    /// string). ROS parameters of the same dotted names do the same under the ROS adapters.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn exec(args: Args) -> Result<()> {
    let Args { config, overrides } = args;
    let path = config.display().to_string();
    let overrides = overrides
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = ReflexConfig::load_with(&config, &overrides)?;
    let safety = reflex_safety::Safety::new(config.safety)?;
    println!("{path}: ok, safety config {}", safety.config_hash_hex());
    Ok(())
}
