//! `reflex push`: an artifact and its signature from an OCI layout to a registry.

use super::{RegistryArgs, layout_ref};
use anyhow::Result;

/// Push an artifact from `oci-layout:PATH:TAG` to a registry `oci://host[:port]/repo:tag`
/// (with its signature referrer). HTTPS, or plain HTTP toward loopback only.
/// Credentials: REFLEX_REGISTRY_USERNAME/PASSWORD or REFLEX_REGISTRY_TOKEN.
#[derive(Debug, clap::Args)]
pub struct Args {
    source: String,
    destination: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        source,
        destination,
        registry,
    } = args;
    let (root, tag) = layout_ref(&source)?;
    let layout = reflex_registry::oci::Layout::open(&root)?;
    let digest =
        reflex_registry::registry::push(&layout, &tag, &destination, &registry.options()?)?;
    println!("pushed {source} to {destination} ({digest})");
    Ok(())
}
