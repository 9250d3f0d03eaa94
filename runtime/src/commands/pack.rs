//! `reflex pack`: a package directory as an OCI 1.1 artifact in an OCI layout.

use std::path::PathBuf;

use super::layout_ref;
use anyhow::Result;
use reflex_policy::PolicyPackage;

/// Pack a policy package directory into an OCI 1.1 artifact: `--out oci-layout:PATH:TAG`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package directory (holding policy.json).
    dir: PathBuf,
    /// Destination, `oci-layout:PATH:TAG`.
    #[arg(long)]
    out: String,
    /// Share of the fleet (0-100, by robot-id hash) that takes this version, annotated on
    /// the index (`vnd.reflex.rollout.percent`; absent = everyone). Sign after packing.
    #[arg(long)]
    rollout_percent: Option<f64>,
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        dir,
        out,
        rollout_percent,
    } = args;
    let (root, tag) = layout_ref(&out)?;
    let package = PolicyPackage::open(&dir)?;
    let layout = reflex_registry::oci::Layout::open_or_create(&root)?;
    let mut desc = reflex_registry::oci::pack(&package, &layout, &tag)?;
    if let Some(percent) = rollout_percent {
        desc = reflex_registry::oci::set_rollout(&layout, &tag, percent)?;
        println!("rollout: {percent}% of the fleet (by robot-id hash)");
    }
    println!(
        "packed {} {} as {out} ({})",
        package.manifest.name, package.manifest.version, desc.digest
    );
    Ok(())
}
