//! `reflex status`: a store's activation record, as JSON.

use std::path::PathBuf;

use anyhow::Result;

/// The activation record of a store (after crash recovery), as JSON.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "/var/lib/reflex/store")]
    store: PathBuf,
}

pub fn exec(args: Args) -> Result<()> {
    let Args { store } = args;
    println!(
        "{}",
        serde_json::to_string_pretty(&reflex_runner::updates::status(&store)?)?
    );
    Ok(())
}
