//! `reflex upload`: the queued flight recordings to `[recorder.upload]`, once.

use std::path::PathBuf;

use super::upload_config;
use anyhow::Result;
use reflex_runner::config::ReflexConfig;

/// Uploads the queued flight recordings of `[recorder]` to `[recorder.upload]` once, oldest
/// first (what `reflex run` does continuously), and prints what it did as JSON.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
}

pub fn exec(args: Args) -> Result<()> {
    let Args { config } = args;
    let config = ReflexConfig::load(&config)?;
    let (rec, up) = upload_config(&config)?;
    let uploader = reflex_telemetry::upload::Uploader::new(
        up,
        &rec.robot_id,
        &rec.dir.join("queue"),
        Default::default(),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(uploader.drain())?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
