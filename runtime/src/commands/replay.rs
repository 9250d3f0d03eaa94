//! `reflex replay`: a flight recording through the safety layer (and the policy) again, bit for bit.

use std::path::PathBuf;

use anyhow::Result;
use reflex_policy::PolicyPackage;

/// Re-runs a flight recording's inputs through the safety layer (from the recording's own
/// config and state) and reports whether every verdict is bit-identical. Exit 1 if not.
#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    /// The policy package of the recording (its model digest must match): the recorded
    /// observations are re-run through it and each chunk compared bit for bit.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// libonnxruntime.so.1.31.1 (default: $ORT_DYLIB_PATH).
    #[arg(long)]
    ort_library: Option<PathBuf>,
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        file,
        policy,
        ort_library,
    } = args;
    let package = policy.as_deref().map(PolicyPackage::open).transpose()?;
    let backend = reflex_policy::BackendConfig {
        ort_library,
        ..Default::default()
    };
    let report = reflex_telemetry::replay::replay(&file, package.as_ref().map(|p| (p, &backend)))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.identical {
        eprintln!(
            "reflex replay: {} of {} ticks differ; first: {}",
            report.mismatches,
            report.ticks,
            report.first_mismatch.as_deref().unwrap_or("")
        );
        std::process::exit(1);
    }
    Ok(())
}
