//! `reflex sign`: a release signature for an artifact, as a referrer.

use std::path::PathBuf;

use super::{RegistryArgs, layout_ref};
use anyhow::Result;

/// Sign the artifact REF (`oci-layout:PATH:TAG`, or `oci://host/repo:tag` in place in the
/// registry) with a secret key from `reflex keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    reference: String,
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        reference,
        key,
        registry,
    } = args;
    if reference.starts_with("oci://") {
        let (digest, sig) =
            reflex_registry::registry::sign_remote(&reference, &key, &registry.options()?)?;
        println!("signed {reference} ({digest}): signature {sig}");
        return Ok(());
    }
    let (root, tag) = layout_ref(&reference)?;
    let layout = reflex_registry::oci::Layout::open(&root)?;
    let desc = reflex_registry::oci::sign(&layout, &tag, &key)?;
    println!("signed {reference}: signature {}", desc.digest);
    Ok(())
}
