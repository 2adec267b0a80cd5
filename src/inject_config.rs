//! The injection config file, read the same way by the webhook (and its hot reload) and by the
//! offline `inject` command.

use std::path::PathBuf;

use anyhow::Context;

use ingress_tap_core::inject::InjectConfig;

/// Loads the injection config file, or the defaults when none is given.
pub fn load(path: Option<&PathBuf>) -> anyhow::Result<InjectConfig> {
    match path {
        None => Ok(InjectConfig::default()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read injection config {}", path.display()))?;
            InjectConfig::from_yaml(&text)
                .with_context(|| format!("invalid injection config {}", path.display()))
        }
    }
}
