//! `reflex teach-background`: a fixed cell's static scan returns, taught from a recording of
//! the empty cell, as the `[safety.lidar.background]` table (SAF-019).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use reflex_runner::config::ReflexConfig;

/// Teaches `[safety.lidar.background]` from a recording of the empty, still cell and prints it
/// (TOML, to paste under the config's `[safety.lidar]`); what it found goes to stderr.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An MCAP file of the cell's scanner: `ros2 bag record -s mcap /scan` for a few seconds
    /// with nobody in the cell and nothing moving, or a Reflex flight recording.
    #[arg(long)]
    recording: PathBuf,
    /// The sensor_msgs/msg/LaserScan topic.
    #[arg(long, default_value = "/scan")]
    topic: String,
    /// Half-width (m) of the band around each taught range that is masked: the scanner's range
    /// noise plus a little, at most 0.1.
    #[arg(long, default_value_t = 0.03)]
    tolerance_m: f64,
    /// The robot's config: its `[safety.lidar]` (the scanner's pose, which the table records,
    /// and its beams); the taught table is checked against it.
    #[arg(long)]
    config: PathBuf,
    /// List the taught objects nearer than this (m) on stderr, for the operator to confirm each
    /// is part of the cell (a person who stood still while recording would be one).
    #[arg(long, default_value_t = 2.0)]
    list_within_m: f64,
}

pub fn exec(args: Args) -> Result<()> {
    let path = &args.config;
    let mut config = ReflexConfig::load(path)?;
    let lidar = config.safety.lidar.as_mut().with_context(|| {
        format!(
            "{}: no [safety.lidar], so there is no scanner to teach a background for",
            path.display()
        )
    })?;
    let recorded = reflex_telemetry::scans::read_scans(&args.recording, &args.topic)?;
    let scans = recorded
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let stamp = s.header.stamp.as_nanos().with_context(|| {
                format!(
                    "{}: scan {k} on {} has a negative stamp ({} s)",
                    args.recording.display(),
                    args.topic,
                    s.header.stamp.sec
                )
            })?;
            Ok(reflex_safety::Scan {
                stamp: reflex_safety::Monotonic::from_nanos(stamp),
                angle_min_rad: s.angle_min,
                angle_increment_rad: s.angle_increment,
                range_min_m: s.range_min,
                range_max_m: s.range_max,
                ranges_m: &s.ranges,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let taught = reflex_safety::teach_background(&scans, args.tolerance_m, lidar.base_from_lidar)
        .with_context(|| format!("{} ({})", args.recording.display(), args.topic))?;
    lidar.background = Some(taught.background.clone());
    let hash = reflex_safety::Safety::new(config.safety)
        .map_err(|e| anyhow::anyhow!("{}: the taught background is refused: {e}", path.display()))?
        .config_hash_hex();
    let n = taught.background.ranges_m.len();
    eprintln!(
        "reflex teach-background: {} scans over {:.1} s, {n} beams: {} have a background (nearest {:.3} m; nothing nearer than that less {} m is ever masked), {} changed during the recording (edges seen on and off: points when they see past their background, invalid when they see nothing){}",
        taught.scans,
        taught.seconds,
        taught.taught_beams,
        taught.nearest_m,
        args.tolerance_m / 2.0,
        taught.unsteady_beams.len(),
        if taught.unsteady_beams.is_empty() {
            String::new()
        } else {
            format!(": beams {:?}", taught.unsteady_beams)
        }
    );
    let objects = taught.objects_within(args.list_within_m);
    eprintln!(
        "reflex teach-background: {} taught objects nearer than {} m; confirm each is part of the cell (nobody stood still there while recording):",
        objects.len(),
        args.list_within_m
    );
    for o in &objects {
        eprintln!(
            "    beams {}..{} ({:.3} to {:.3} rad), nearest {:.3} m",
            o.first_beam, o.last_beam, o.from_rad, o.to_rad, o.nearest_m
        );
    }
    eprintln!(
        "reflex teach-background: {} accepts it; its safety config hash becomes {hash}",
        path.display()
    );
    print!("{}", background_toml(&taught.background));
    Ok(())
}

/// The `[safety.lidar.background]` table, ten ranges a line.
fn background_toml(b: &reflex_safety::BackgroundConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# SAF-019: taught by reflex teach-background; re-teach whenever the scanner or the cell moves.\n[safety.lidar.background]\nbase_from_lidar = {{ x_m = {:?}, y_m = {:?}, yaw_rad = {:?} }}\nangle_min_rad = {:?}\nangle_increment_rad = {:?}\ntolerance_m = {:?}\nranges_m = [",
        b.base_from_lidar.x_m,
        b.base_from_lidar.y_m,
        b.base_from_lidar.yaw_rad,
        b.angle_min_rad,
        b.angle_increment_rad,
        b.tolerance_m
    );
    for line in b.ranges_m.chunks(10) {
        let items: Vec<String> = line.iter().map(|r| format!("{r:?}")).collect();
        let _ = writeln!(out, "    {},", items.join(", "));
    }
    out.push_str("]\n");
    out
}
