//! `ingress-tap block` as a command: its options, and the shell around the pure plan of
//! [`ingress_tap_core::block`]: [`run`] reads inputs and the previous state (files, or the
//! cluster with `--apply`), prints YAML or applies it through [`apply`].

pub mod apply;
mod run;

pub use run::run;

use crate::cli::block::{BlockOptions, DryRun};
use ingress_tap_core::block::targets::{CalicoSettings, TargetSettings};

impl BlockOptions {
    pub fn target_settings(&self) -> TargetSettings {
        TargetSettings {
            target: self.target,
            name: self.name.clone(),
            calico: CalicoSettings {
                selector: self.calico_selector.clone(),
                order: self.calico_order,
                tier: self.calico_tier.clone(),
                tier_order: self.calico_tier_order,
                host_endpoints: self.calico_host_endpoints,
            },
            configmap: self.configmap.clone(),
            ingresses: self.ingresses.clone(),
            namespace: self.namespace.clone(),
            nft_table: self.nft_table.clone(),
        }
    }
}
