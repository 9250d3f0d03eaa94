//! `reflex`: the on-robot runtime's command line. This file only parses and dispatches; each
//! subcommand lives in `commands/<name>.rs` with its `Args` and `exec`.

use clap::{Parser, Subcommand};

mod commands;
mod inspect;
mod jetson;

/// Reflex: a learned policy beside a real-time loop, behind a safety layer that can always veto.
#[derive(Debug, Parser)]
#[command(name = "reflex", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Drive the built-in simulator's robot with an adversarial policy through a scripted day
    /// (pedestrian, E-stop, frozen lidar, end wall) and print the safety layer's verdicts.
    SafetyDemo(commands::safety_demo::Args),
    /// Print everything a policy package declares: inputs, outputs, action space and units,
    /// normalization, control rate and horizon, safety envelope, targets, golden pairs.
    Inspect(commands::inspect::Args),
    /// Pack a policy package directory into an OCI 1.1 artifact: `--out oci-layout:PATH:TAG`.
    Pack(commands::pack::Args),
    /// Push an artifact from `oci-layout:PATH:TAG` to a registry `oci://host[:port]/repo:tag`
    /// (with its signature referrer). HTTPS, or plain HTTP toward loopback only.
    /// Credentials: REFLEX_REGISTRY_USERNAME/PASSWORD or REFLEX_REGISTRY_TOKEN.
    Push(commands::push::Args),
    /// Pull a policy artifact (`oci-layout:PATH:TAG` or `oci://host[:port]/repo:tag`) into the
    /// local store: signature checked
    /// against --trusted-keys, the artifact for this host chosen, every digest checked, the
    /// package materialized atomically. Prints the package directory.
    Pull(commands::pull::Args),
    /// Make an ed25519 key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen(commands::keygen::Args),
    /// Sign the artifact REF (`oci-layout:PATH:TAG`, or `oci://host/repo:tag` in place in the
    /// registry) with a secret key from `reflex keygen`.
    Sign(commands::sign::Args),
    /// Verify a policy package. A directory: schema, every file's sha256, the model's real
    /// inputs and outputs against policy.json, and the golden pairs within tolerance.
    /// `oci-layout:PATH:TAG` or `oci://…`: every blob's digest (for a registry: of this host's
    /// artifact) and a signature from a key in --trusted-keys.
    Verify(commands::verify::Args),
    /// What this host offers Reflex: ONNX Runtime, GPUs (CUDA driver, SM, memory).
    Preflight(commands::preflight::Args),
    /// Closed loop on the built-in simulator: the demo policy (ONNX Runtime), the action-chunk
    /// queue and the safety layer drive a robot to the goal the instruction names, past a
    /// pedestrian. Lockstep (deterministic, faster than real time) by default; `--realtime` runs
    /// the production thread topology (RT thread, inference worker, supervisor) on the real clock.
    Sim(commands::sim::Args),
    /// Uploads the queued flight recordings of `[recorder]` to `[recorder.upload]` once, oldest
    /// first (what `reflex run` does continuously), and prints what it did as JSON.
    Upload(commands::upload::Args),
    /// Re-runs a flight recording's inputs through the safety layer (from the recording's own
    /// config and state) and reports whether every verdict is bit-identical. Exit 1 if not.
    Replay(commands::replay::Args),
    /// The runtime: the policy the store's activation record names (first boot: installed from
    /// `[updates] channel`), the RT loop, and the model manager following the channel (signed
    /// packages only, transactional hot-swap with a health window and automatic rollback).
    /// The robot I/O must be named (`--io` or `[robot] io`): `reflex run` never falls back to
    /// the simulator. Prints a JSON summary.
    Run(commands::run::Args),
    /// The activation record of a store (after crash recovery), as JSON.
    Status(commands::status::Args),
    /// Validate a config file and print the safety config hash.
    CheckConfig(commands::check_config::Args),
    /// Teach a fixed cell's static scan returns (table legs, fences) from a recording of the
    /// empty cell and print the `[safety.lidar.background]` table (SAF-019).
    TeachBackground(commands::teach_background::Args),
}

fn main() {
    let result = match Cli::parse().command {
        Cmd::SafetyDemo(args) => commands::safety_demo::exec(args),
        Cmd::Inspect(args) => commands::inspect::exec(args),
        Cmd::Pack(args) => commands::pack::exec(args),
        Cmd::Push(args) => commands::push::exec(args),
        Cmd::Pull(args) => commands::pull::exec(args),
        Cmd::Keygen(args) => commands::keygen::exec(args),
        Cmd::Sign(args) => commands::sign::exec(args),
        Cmd::Verify(args) => commands::verify::exec(args),
        Cmd::Preflight(args) => commands::preflight::exec(args),
        Cmd::Sim(args) => commands::sim::exec(args),
        Cmd::Upload(args) => commands::upload::exec(args),
        Cmd::Replay(args) => commands::replay::exec(args),
        Cmd::Run(args) => commands::run::exec(args),
        Cmd::Status(args) => commands::status::exec(args),
        Cmd::CheckConfig(args) => commands::check_config::exec(args),
        Cmd::TeachBackground(args) => commands::teach_background::exec(args),
    };
    if let Err(err) = result {
        eprintln!("reflex: error: {err:#}");
        std::process::exit(1);
    }
}
