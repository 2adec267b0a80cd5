//! Calico: a GlobalNetworkSet holding the list and a GlobalNetworkPolicy denying ingress from
//! sources the set's label selects.
//!
//! Calico drops traffic at the end of a tier when a policy of that tier selected the endpoint
//! but no rule matched. A policy holding only a Deny rule would therefore turn every endpoint
//! it selects into default-deny. So by default the policy lives in a tier of its own, placed
//! before the `default` tier, and ends with a `Pass` rule: blocked sources are denied,
//! everything else goes on to the user's own policies exactly as before.
//!
//! The host-endpoint variant denies at the nodes, before kube-proxy's DNAT (`preDNAT: true`,
//! `applyOnForward: true`), which sees the client address of traffic arriving on NodePorts and
//! external IPs. Pre-DNAT policy has no end-of-tier drop for unmatched traffic, so it needs no
//! tier and no Pass rule; it does need host endpoints for the nodes (Calico's auto host
//! endpoints carry no `kubernetes-host` label unless configured; see docs/block.md).

use super::{list_annotations, list_of, ObjectRef, Slot, SlotKind, TargetError, TargetSettings};
use crate::block::merge::Blocklist;
use serde_json::{json, Value};

pub const API_VERSION: &str = "projectcalico.org/v3";
/// Label on the GlobalNetworkSet that the policy's source selector matches.
pub const BLOCKLIST_LABEL: &str = "ingress-tap.io/blocklist";
/// Host endpoints Calico's documentation labels for node protection.
pub const HOST_ENDPOINT_SELECTOR: &str = "has(kubernetes-host)";

fn object_name(settings: &TargetSettings) -> String {
    format!("ingress-tap-{}", settings.name)
}

/// Policies outside the default tier are named `TIER.NAME`.
fn policy_name(settings: &TargetSettings) -> String {
    if settings.calico.host_endpoints {
        object_name(settings)
    } else {
        format!("{}.{}", settings.calico.tier, settings.name)
    }
}

/// Whole orders print as integers (`10`, not `10.0`), as people write them.
fn number(value: f64) -> Value {
    const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() < EXACT_INTEGERS {
        json!(value as i64)
    } else {
        json!(value)
    }
}

pub fn slot(settings: &TargetSettings) -> Slot {
    Slot {
        object: ObjectRef::cluster(API_VERSION, "GlobalNetworkSet", &object_name(settings)),
        kind: SlotKind::CalicoNetworkSet,
    }
}

/// Selector expression matching the set, quoted the way Calico's selector grammar wants.
pub fn source_selector(name: &str) -> String {
    format!("{BLOCKLIST_LABEL} == '{name}'")
}

pub fn render(
    settings: &TargetSettings,
    lists: &[(Slot, Blocklist)],
) -> Result<Vec<Value>, TargetError> {
    let list = list_of(lists, SlotKind::CalicoNetworkSet);
    let calico = &settings.calico;
    let network_set = json!({
        "apiVersion": API_VERSION,
        "kind": "GlobalNetworkSet",
        "metadata": {
            "name": object_name(settings),
            "labels": { BLOCKLIST_LABEL: settings.name },
            "annotations": list_annotations(&list)?,
        },
        "spec": { "nets": list.cidrs() },
    });
    let deny = json!({
        "action": "Deny",
        "source": { "selector": source_selector(&settings.name) },
    });
    let mut objects = Vec::with_capacity(3);
    let policy_spec = if calico.host_endpoints {
        json!({
            "order": number(calico.order),
            "selector": calico.selector.clone().unwrap_or_else(|| HOST_ENDPOINT_SELECTOR.to_owned()),
            "types": ["Ingress"],
            "preDNAT": true,
            "applyOnForward": true,
            "ingress": [deny],
        })
    } else {
        objects.push(json!({
            "apiVersion": API_VERSION,
            "kind": "Tier",
            "metadata": { "name": calico.tier },
            "spec": { "order": number(calico.tier_order) },
        }));
        json!({
            "tier": calico.tier,
            "order": number(calico.order),
            "selector": calico.selector.clone().unwrap_or_else(|| "all()".to_owned()),
            "types": ["Ingress"],
            "ingress": [deny, { "action": "Pass" }],
        })
    };
    objects.push(network_set);
    objects.push(json!({
        "apiVersion": API_VERSION,
        "kind": "GlobalNetworkPolicy",
        "metadata": { "name": policy_name(settings) },
        "spec": policy_spec,
    }));
    Ok(objects)
}
