//! `reflex keygen`: an ed25519 key pair for signing policy artifacts.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Make an ed25519 key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    out: PathBuf,
}

pub fn exec(args: Args) -> Result<()> {
    let Args { out } = args;
    let secret = out.with_extension("key");
    let public = out.with_extension("pub");
    anyhow::ensure!(
        !secret.exists() && !public.exists(),
        "{} or {} exists already; choose another --out (keys are never overwritten)",
        secret.display(),
        public.display()
    );
    let (s, p) = reflex_registry::oci::keygen()?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .with_context(|| format!("cannot create {}", secret.display()))?;
    std::io::Write::write_all(&mut f, s.as_bytes())?;
    std::fs::write(&public, &p).with_context(|| format!("cannot write {}", public.display()))?;
    println!(
        "wrote {} (secret, 0600) and {}",
        secret.display(),
        public.display()
    );
    Ok(())
}
