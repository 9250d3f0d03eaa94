//! `reflex pull`: a signed artifact into the local store, every digest checked.

use std::path::PathBuf;

use super::{RegistryArgs, layout_ref, print_pulled};
use anyhow::Result;

/// Pull a policy artifact (`oci-layout:PATH:TAG` or `oci://host[:port]/repo:tag`) into the
/// local store: signature checked
/// against --trusted-keys, the artifact for this host chosen, every digest checked, the
/// package materialized atomically. Prints the package directory.
#[derive(Debug, clap::Args)]
pub struct Args {
    reference: String,
    /// The local store directory.
    #[arg(long, default_value = "/var/lib/reflex/store")]
    store: PathBuf,
    /// Directory of trusted public keys (`*.pub`).
    #[arg(long)]
    trusted_keys: Option<PathBuf>,
    /// Accept an unsigned artifact (development only; says so).
    #[arg(long)]
    allow_unsigned: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        reference,
        store,
        trusted_keys,
        allow_unsigned,
        registry,
    } = args;
    use reflex_registry::registry::Trust;
    let trust = match (&trusted_keys, allow_unsigned) {
        (Some(keys), _) => Trust::Keys(keys),
        (None, true) => {
            eprintln!(
                "reflex: warning: pulling {reference} WITHOUT a signature check (--allow-unsigned)"
            );
            Trust::AllowUnsigned
        }
        (None, false) => anyhow::bail!(
            "pulling {reference} needs --trusted-keys DIR (or --allow-unsigned for development)"
        ),
    };
    let store = reflex_registry::store::Store::open(&store)?;
    if reference.starts_with("oci://") {
        let t0 = std::time::Instant::now();
        let report = reflex_registry::registry::pull_to_store(
            &reference,
            &store,
            None,
            trust,
            &registry.options()?,
        )?;
        let secs = t0.elapsed().as_secs_f64();
        if let Some(key) = &report.key_id {
            println!("signature: ok, key {key}");
        }
        print_pulled(&report.pulled);
        println!(
            "{} blobs, {} bytes received{} in {secs:.2} s",
            report.blobs_fetched,
            report.bytes_downloaded,
            if report.bytes_resumed > 0 {
                format!(
                    ", {} bytes resumed from an interrupted pull",
                    report.bytes_resumed
                )
            } else {
                String::new()
            }
        );
        return Ok(());
    }
    let (root, tag) = layout_ref(&reference)?;
    let layout = reflex_registry::oci::Layout::open(&root)?;
    if let Trust::Keys(keys) = trust {
        let ok = reflex_registry::oci::verify_signed(&layout, &tag, keys)?;
        println!("signature: ok, key {}", ok.key_id);
    }
    print_pulled(&store.pull_layout(&layout, &tag, None)?);
    Ok(())
}
