//! `reflex inspect`: everything a policy package declares, as text or JSON.

use std::path::PathBuf;

use anyhow::Result;
use reflex_policy::PolicyPackage;

/// Print everything a policy package declares: inputs, outputs, action space and units,
/// normalization, control rate and horizon, safety envelope, targets, golden pairs.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package directory (holding policy.json).
    path: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn exec(args: Args) -> Result<()> {
    let Args { path, json } = args;
    let package = PolicyPackage::open(&path)?;
    if json {
        let mut value = serde_json::to_value(&package.manifest)?;
        value["package_dir"] = path.display().to_string().into();
        value["horizon_steps"] = package.manifest.horizon_steps().into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", crate::inspect::describe(&package));
    }
    Ok(())
}
