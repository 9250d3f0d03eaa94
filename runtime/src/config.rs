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
    pub runtime: crate::rt::RtConfig,
    /// `[models]`: see `reflex_models::BackendConfig` (all keys optional).
    #[serde(default)]
    pub models: reflex_models::BackendConfig,
    /// `[updates]`: the channel `reflex run` follows (see `crate::updates::UpdatesConfig`).
    pub updates: Option<crate::updates::UpdatesConfig>,
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

    pub fn parse(text: &str) -> Result<Self> {
        let config: ReflexConfig = toml::from_str(text)?;
        config.safety.validate()?;
        config.runtime.validate().map_err(anyhow::Error::msg)?;
        if let Some(updates) = &config.updates {
            updates.validate()?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/reflex.example.toml");
        ReflexConfig::load(&path).unwrap();
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/reflex.example.toml");
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
        let text = std::fs::read_to_string(&path).unwrap() + "\n[sfety]\n";
        let err = format!("{:#}", ReflexConfig::parse(&text).unwrap_err());
        assert!(err.contains("sfety"), "{err}");
    }
}
