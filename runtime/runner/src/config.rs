//! The one TOML config file of `reflex`, parsed (stage 1) then validated (stage 2) with errors
//! that name the file, the key and the fix.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// The whole config file. Later sections (runtime, models, ports) join this struct.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReflexConfig {
    /// `[safety]`: see `reflex_safety::SafetyConfig`.
    pub safety: reflex_safety::SafetyConfig,
    /// `[runtime]`: the RT thread (period, SCHED_FIFO, mlockall, affinity, overruns).
    #[serde(default)]
    pub runtime: reflex_rt::ticker::RtConfig,
    /// `[models]`: see `reflex_policy::BackendConfig` (all keys optional).
    #[serde(default)]
    pub models: reflex_policy::BackendConfig,
    /// `[updates]`: the channel `reflex run` follows (see `crate::updates::UpdatesConfig`).
    pub updates: Option<crate::updates::UpdatesConfig>,
    /// `[ros]`: the ROS 2 port (node, topics, the E-stop source it feeds).
    #[serde(default)]
    pub ros: reflex_ros::RosConfig,
    /// `[telemetry]`: the metrics endpoint (see `reflex_telemetry::metrics::TelemetryConfig`).
    #[serde(default)]
    pub telemetry: reflex_telemetry::metrics::TelemetryConfig,
    /// `[recorder]`: the flight recorder (see `reflex_telemetry::recorder::RecorderConfig`); absent = off.
    pub recorder: Option<reflex_telemetry::recorder::RecorderConfig>,
    /// `[cloud]`: a remote policy server (openpi protocol) as a command source; absent = off.
    pub cloud: Option<reflex_cloud::CloudConfig>,
    /// `[chunks]`: merge strategy and action age limit (see `reflex_rt::chunks::ChunksConfig`).
    #[serde(default)]
    pub chunks: reflex_rt::chunks::ChunksConfig,
    /// `[arbitration]`: command source priority and freshness (see
    /// `reflex_rt::arbiter::ArbiterConfig`).
    #[serde(default)]
    pub arbitration: reflex_rt::arbiter::ArbiterConfig,
    /// `[robot]`: how `reflex run` reaches the robot (`io`); `--io` overrides it. Absent and no
    /// `--io`: `reflex run` refuses to start (it never drives the simulator by default).
    pub robot: Option<RobotConfig>,
}

/// `[robot]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    /// `dds` (ROS 2 topics over a pure-Rust DDS), `ros2` (rcl via r2r) or `sim` (the built-in
    /// simulator: development only).
    pub io: RobotIoKind,
}

/// How `reflex run` reaches the robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RobotIoKind {
    Dds,
    Ros2,
    Sim,
}

impl RobotIoKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dds => "dds",
            Self::Ros2 => "ros2",
            Self::Sim => "sim",
        }
    }

    /// `--io NAME`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "dds" => Ok(Self::Dds),
            "ros2" => Ok(Self::Ros2),
            "sim" => Ok(Self::Sim),
            other => anyhow::bail!("--io {other:?}: use dds, ros2 or sim"),
        }
    }
}

impl ReflexConfig {
    /// Reads and checks `path`. A safety config the safety layer would refuse is refused here.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "config: cannot read {}; pass an existing file with --config (see launch/reflex.example.toml)",
                path.display()
            )
        })?;
        Self::parse(&text).with_context(|| format!("config: {} is invalid", path.display()))
    }

    /// Reads `path` with `overrides` applied: `(dotted.key, TOML value)` pairs, as ROS
    /// parameters or `--set` give them. An unknown key is an error naming it. Each applied
    /// override is logged.
    ///
    /// SAF-014: launch-time overrides cannot widen safety. An override of `safety.*` is refused
    /// unless the file itself pins `[safety] expected_hash` and the result hashes to it (so the
    /// launch file can only select the reviewed config, never loosen one); `safety.expected_hash`
    /// itself can never come from an override.
    pub fn load_with(path: &Path, overrides: &[(String, String)]) -> Result<Self> {
        if overrides.is_empty() {
            return Self::load(path);
        }
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "config: cannot read {}; pass an existing file with --config (see launch/reflex.example.toml)",
                path.display()
            )
        })?;
        let mut table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("config: {} is invalid", path.display()))?;
        let pinned = table
            .get("safety")
            .and_then(|s| s.get("expected_hash"))
            .is_some();
        let safety_keys: Vec<&str> = overrides
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k == "safety" || k.starts_with("safety."))
            .collect();
        // Keys outside [safety] that decide how the robot stops: never from a launch parameter.
        const GUARDED: [&str; 10] = [
            "runtime.require_rt",
            "runtime.stall_estop_ms",
            "runtime.max_consecutive_misses",
            "ros.estop_devices",
            "ros.reset_from",
            "ros.start_from",
            // Which inputs count as fresh, and what the drive's command timeout measures from.
            "ros.max_stamp_age_ms",
            "ros.odom_timeout_ms",
            "ros.camera_timeout_ms",
            "ros.cmd_vel_stamp",
        ];
        if let Some((key, _)) = overrides
            .iter()
            .find(|(k, _)| GUARDED.contains(&k.as_str()) || k == "runtime" || k == "ros")
        {
            anyhow::bail!(
                "config: override {key} refused (SAF-014): it decides how the robot stops; fix: set it in {} itself",
                path.display()
            );
        }
        if let Some(key) = safety_keys
            .iter()
            .find(|k| **k == "safety.expected_hash" || **k == "safety")
        {
            anyhow::bail!(
                "config: override {key} refused (SAF-014): the safety pin can only be set in {} itself",
                path.display()
            );
        }
        if !safety_keys.is_empty() && !pinned {
            anyhow::bail!(
                "config: override {} refused (SAF-014): launch-time parameters cannot change the safety config of {}; fix: put the value in the TOML file, or pin [safety] expected_hash there to the hash of the intended result (`reflex check-config` prints it)",
                safety_keys.join(", "),
                path.display()
            );
        }
        for (key, value) in overrides {
            set_dotted(&mut table, key, value)
                .with_context(|| format!("config: override {key} = {value}"))?;
        }
        let config: ReflexConfig = table
            .try_into()
            .with_context(|| format!("config: {} with overrides is invalid", path.display()))?;
        config
            .check()
            .with_context(|| format!("config: {} is invalid", path.display()))?;
        if !safety_keys.is_empty() {
            // The pin decides: Safety::new refuses a config that does not hash to it.
            reflex_safety::Safety::new(config.safety.clone()).with_context(|| {
                format!(
                    "config: overrides {} of {} (SAF-014)",
                    safety_keys.join(", "),
                    path.display()
                )
            })?;
        }
        for (key, value) in overrides {
            eprintln!(
                "reflex: config override {key} = {value} (over {})",
                path.display()
            );
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let config: ReflexConfig = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    /// [`Self::parse`] for an already parsed TOML table (e.g. a base config with a scenario's
    /// overrides merged in).
    pub fn from_table(table: toml::Table) -> Result<Self> {
        let config: ReflexConfig = table.try_into()?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let config = self;
        config.safety.validate()?;
        config.runtime.validate().map_err(anyhow::Error::msg)?;
        config.chunks.validate().map_err(anyhow::Error::msg)?;
        // The loop decays to a stop before the safety layer's staleness veto would fire.
        let (age, limit) = (
            config.chunks.max_action_age_ms,
            config.safety.commands.local_policy_max_age_ms,
        );
        anyhow::ensure!(
            age <= limit,
            "chunks.max_action_age_ms = {age} is above safety.commands.local_policy_max_age_ms = {limit}: \
             the safety layer would veto those actions as stale instead of the loop decaying to a \
             stop; fix: chunks.max_action_age_ms <= {limit}"
        );
        config.arbitration.validate().map_err(anyhow::Error::msg)?;
        if let Some(updates) = &config.updates {
            updates.validate()?;
        }
        config.ros.validate().map_err(anyhow::Error::msg)?;
        // Every E-stop device feeds a source the safety layer waits for (a device on an
        // unlisted source would be ignored until it reports, and a press on it only latches).
        for (i, d) in config.ros.estop_devices.iter().enumerate() {
            anyhow::ensure!(
                config
                    .safety
                    .estop
                    .sources
                    .iter()
                    .any(|s| s.name == d.source),
                "ros.estop_devices[{i}] feeds the `{}` source, which [safety.estop] sources does not list; fix: add {{ name = \"{}\" }} (with max_age_ms for a heartbeat) to sources",
                d.source.name(),
                d.source.name()
            );
        }
        config.telemetry.bind_addr()?;
        if let Some(r) = &config.recorder {
            r.validate()?;
        }
        if let Some(c) = &config.cloud {
            c.validate()?;
        }
        anyhow::ensure!(
            config.ros.namespace.starts_with('/'),
            "ros.namespace = {:?}: must start with '/'; fix: e.g. \"/\" or \"/robot1\"",
            config.ros.namespace
        );
        Ok(())
    }
}

/// Sets `a.b.c = value` (a TOML literal; a bare word is taken as a string) in `table`.
fn set_dotted(table: &mut toml::Table, key: &str, value: &str) -> Result<()> {
    let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").expect("just parsed"),
        Err(_) => toml::Value::String(value.to_string()),
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|k| !k.is_empty()).context("empty key")?;
    let mut node = table;
    for part in parts {
        node = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("{part} is not a table"))?;
    }
    node.insert(last.to_string(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../launch/reflex.example.toml");
        ReflexConfig::load(&path).unwrap();
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../launch/reflex.example.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("brake_decel_mps2 = 1.5", "brake_decel_mps2 = -1.5");
        let err = format!("{:#}", ReflexConfig::parse(&text).unwrap_err());
        assert!(err.contains("safety.base.brake_decel_mps2"), "{err}");
        assert!(err.contains("fix:"), "{err}");
        let err = format!(
            "{:#}",
            ReflexConfig::load(Path::new("/nonexistent/reflex.toml")).unwrap_err()
        );
        assert!(
            err.contains("/nonexistent/reflex.toml") && err.contains("--config"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            ReflexConfig::load_with(&path, &[("ros.topics.scann".into(), "\"/x\"".into())])
                .unwrap_err()
        );
        assert!(err.contains("scann"), "{err}");
        let ok =
            ReflexConfig::load_with(&path, &[("ros.topics.scan".into(), "/front/scan".into())])
                .unwrap();
        assert_eq!(ok.ros.topics.scan, "/front/scan");
        for (key, value, named) in [
            (
                "chunks.max_action_age_ms",
                "-5.0",
                "chunks.max_action_age_ms",
            ),
            ("chunks.crossfade_steps", "0", "chunks.crossfade_steps"),
            ("arbitration.priority", "[]", "arbitration.priority"),
            (
                "arbitration.priority",
                "[\"cloud\", \"cloud\"]",
                "arbitration.priority",
            ),
            (
                "arbitration.cloud_max_age_ms",
                "nan",
                "arbitration.cloud_max_age_ms",
            ),
        ] {
            let err = format!(
                "{:#}",
                ReflexConfig::load_with(&path, &[(key.into(), value.into())]).unwrap_err()
            );
            assert!(
                err.contains(named) && err.contains("fix:"),
                "{key} = {value}: {err}"
            );
        }
        let ok = ReflexConfig::load_with(
            &path,
            &[
                ("chunks.max_action_age_ms".into(), "50.0".into()),
                ("chunks.strategy".into(), "ensemble".into()),
                ("robot.io".into(), "dds".into()),
            ],
        )
        .unwrap();
        assert_eq!(ok.chunks.max_action_age_ms, 50.0);
        assert_eq!(
            ok.chunks.strategy,
            reflex_rt::chunks::MergeStrategy::Ensemble
        );
        assert_eq!(ok.robot.map(|r| r.io), Some(RobotIoKind::Dds));
        let text = std::fs::read_to_string(&path).unwrap() + "\n[sfety]\n";
        let err = format!("{:#}", ReflexConfig::parse(&text).unwrap_err());
        assert!(err.contains("sfety"), "{err}");
    }

    #[test]
    fn saf_014_launch_overrides_cannot_change_safety_unless_pinned_and_matching() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../launch/reflex.example.toml");
        // Loosening (or any change) without a pin: refused, naming the key and the fix.
        for (key, value) in [
            ("safety.base.max_vx_mps", "5.0"),
            ("safety.lidar.max_age_ms", "100.0"),
            ("safety.estop.sources", "[]"),
            ("runtime.require_rt", "false"),
            ("runtime.stall_estop_ms", "10000.0"),
            ("ros.reset_from", "[\"topic\"]"),
            ("ros.max_stamp_age_ms", "60000.0"),
            ("ros.odom_timeout_ms", "60000.0"),
            ("ros.camera_timeout_ms", "60000.0"),
            ("ros.cmd_vel_stamp", "\"send_time\""),
        ] {
            let err = format!(
                "{:#}",
                ReflexConfig::load_with(&path, &[(key.into(), value.into())]).unwrap_err()
            );
            assert!(
                err.contains("SAF-014") && err.contains(key) && err.contains("fix:"),
                "{err}"
            );
        }
        // The pin itself never comes from a parameter.
        let err = format!(
            "{:#}",
            ReflexConfig::load_with(
                &path,
                &[("safety.expected_hash".into(), "\"sha256:00\"".into())]
            )
            .unwrap_err()
        );
        assert!(err.contains("SAF-014"), "{err}");
        // A file that pins the hash of the result: the override selects exactly that config.
        let base = ReflexConfig::load(&path).unwrap();
        let mut narrowed = base.safety.clone();
        narrowed.base.as_mut().unwrap().max_vx_mps = 0.5;
        let hash = reflex_safety::Safety::new(narrowed)
            .unwrap()
            .config_hash_hex();
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "[safety]\n",
            &format!("[safety]\nexpected_hash = \"{hash}\"\n"),
            1,
        );
        let dir = std::env::temp_dir().join(format!("reflex-saf014-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pinned = dir.join("pinned.toml");
        std::fs::write(&pinned, text).unwrap();
        let ok =
            ReflexConfig::load_with(&pinned, &[("safety.base.max_vx_mps".into(), "0.5".into())])
                .unwrap();
        assert_eq!(ok.safety.base.as_ref().unwrap().max_vx_mps, 0.5);
        // Any other value does not match the pin: refused.
        let err = format!(
            "{:#}",
            ReflexConfig::load_with(&pinned, &[("safety.base.max_vx_mps".into(), "0.9".into())])
                .unwrap_err()
        );
        assert!(
            err.contains("expected_hash") && err.contains("SAF-014"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
