//! `ingress-tap block`: inputs, target, safety limits and how the result is written.

use ingress_tap_core::block::input::InputFormat;
use ingress_tap_core::block::safety::{
    DEFAULT_MAX_ADDRESSES, DEFAULT_MAX_ENTRIES, DEFAULT_MIN_PREFIX_V4, DEFAULT_MIN_PREFIX_V6,
};
use ingress_tap_core::block::targets::{NamespacedName, TargetKind};
use ingress_tap_core::block::{
    parse_cidr, parse_list_name, parse_namespace, parse_nft_table, parse_selector, parse_tier,
    parse_timestamp, parse_ttl,
};
use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};
use std::path::PathBuf;

/// Command-line options of `ingress-tap block`.
#[derive(Debug, Clone, clap::Args)]
pub struct BlockOptions {
    /// IPs or CIDRs to block.
    #[arg(value_name = "IP|CIDR")]
    pub addresses: Vec<String>,
    /// Read entries from a threat list, collector events (JSON lines) or a /suspicious
    /// document; `-` is standard input. Repeatable. A document naming nothing to block is an
    /// error (a broken feed) unless --allow-empty.
    #[arg(long = "from", value_name = "FILE")]
    pub from: Vec<PathBuf>,
    /// Accept --from documents that name nothing to block (an empty feed is a quiet day).
    #[arg(long)]
    pub allow_empty: bool,
    /// How to read --from documents.
    #[arg(long, value_enum, default_value_t)]
    pub format: InputFormat,
    /// Also take this many addresses from each ranking of a /suspicious document.
    #[arg(long, default_value_t = 0)]
    pub top: usize,
    /// Also block addresses the collector took from X-Forwarded-For / X-Real-IP with no
    /// trusted proxy vouching for them (provenance `claimed`), and read the claimed lists of a
    /// /suspicious document. Any client can write any address in those headers: this lets a
    /// client get someone else blocked.
    #[arg(long)]
    pub trust_spoofable_headers: bool,
    /// Reason recorded for the addresses given as arguments.
    #[arg(long)]
    pub reason: Option<String>,
    /// How long a block lasts, from the event's time (or now): e.g. 4h, 30m, 2d, 1h30m.
    #[arg(long, default_value = "4h", value_parser = parse_ttl)]
    pub ttl: SignedDuration,
    /// The current time (RFC 3339); defaults to the system clock.
    #[arg(long, value_parser = parse_timestamp)]
    pub now: Option<Timestamp>,
    /// Where to enforce the blocks.
    #[arg(long, value_enum)]
    pub target: TargetKind,
    /// Name of the blocklist: label value, part of object and set names.
    #[arg(long, default_value = "blocklist", value_parser = parse_list_name)]
    pub name: String,
    /// A proxy or load balancer in front of the ingress; never blocked. Repeatable.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr)]
    pub trusted_proxies: Vec<IpNet>,
    /// A pod, service or node CIDR; never blocked. Repeatable.
    #[arg(long = "cluster-range", value_name = "CIDR", value_parser = parse_cidr)]
    pub cluster_ranges: Vec<IpNet>,
    /// Most entries one blocklist may hold without --force.
    #[arg(long, default_value_t = DEFAULT_MAX_ENTRIES)]
    pub max_entries: usize,
    /// Narrowest IPv4 prefix an entry may have without --force (16: nothing wider than a /16).
    #[arg(long, default_value_t = DEFAULT_MIN_PREFIX_V4,
          value_parser = clap::value_parser!(u8).range(0..=32))]
    pub min_prefix_v4: u8,
    /// Narrowest IPv6 prefix an entry may have without --force.
    #[arg(long, default_value_t = DEFAULT_MIN_PREFIX_V6,
          value_parser = clap::value_parser!(u8).range(0..=128))]
    pub min_prefix_v6: u8,
    /// Most addresses one run may block without --force: IPv4 addresses plus IPv6 /48
    /// networks (docs/block.md says why /48).
    #[arg(long, default_value_t = DEFAULT_MAX_ADDRESSES)]
    pub max_addresses: u64,
    /// Allow more than --max-entries entries, entries wider than --min-prefix-v4/-v6, and more
    /// than --max-addresses addresses. Never lifts the protected ranges or the claimed rule.
    #[arg(long)]
    pub force: bool,
    /// The previously generated output (YAML or nftables) to merge into, for GitOps.
    #[arg(long, value_name = "FILE", conflicts_with = "apply")]
    pub existing: Option<PathBuf>,
    /// Remove entries whose expiry has passed.
    #[arg(long)]
    pub prune: bool,
    /// Unblock: remove this network and every entry inside it. Repeatable. When a wider
    /// entry still holds it, the run fails naming that entry, unless --split.
    #[arg(long = "remove", value_name = "CIDR", value_parser = parse_cidr)]
    pub remove: Vec<IpNet>,
    /// With --remove: split every wider entry holding the removed network into the networks
    /// around it, so that exactly the removed network is unblocked.
    #[arg(long, requires = "remove")]
    pub split: bool,
    /// Apply to the cluster with server-side apply instead of printing YAML.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: `server` asks the API server to validate without persisting.
    #[arg(long, value_enum, default_value_t, requires = "apply")]
    pub dry_run: DryRun,
    /// With --apply: take over fields another manager owns (e.g. block-cidrs set by Helm).
    #[arg(long, requires = "apply")]
    pub force_conflicts: bool,
    /// Calico: selector of the endpoints the deny applies to (default all() for workloads,
    /// has(kubernetes-host) with --calico-host-endpoints).
    #[arg(long, value_parser = parse_selector)]
    pub calico_selector: Option<String>,
    /// Calico: order of the policy within its tier.
    #[arg(long, default_value_t = 10.0)]
    pub calico_order: f64,
    /// Calico: tier holding the policy; it must come before the tier of your allow policies.
    #[arg(long, default_value = "ingress-tap", value_parser = parse_tier)]
    pub calico_tier: String,
    /// Calico: order of that tier (Calico's default tier comes at 1,000,000).
    #[arg(long, default_value_t = 100.0)]
    pub calico_tier_order: f64,
    /// Calico: deny at the nodes' host endpoints before DNAT (preDNAT, applyOnForward).
    #[arg(long)]
    pub calico_host_endpoints: bool,
    /// ingress-nginx: the controller ConfigMap (NAMESPACE/NAME).
    #[arg(long, default_value = "ingress-nginx/ingress-nginx-controller")]
    pub configmap: NamespacedName,
    /// ingress-nginx: annotate this Ingress instead of the ConfigMap; nginx-inc: attach the
    /// Policy to it. NAMESPACE/NAME, repeatable.
    #[arg(long = "ingress", value_name = "NAMESPACE/NAME")]
    pub ingresses: Vec<NamespacedName>,
    /// nginx-inc: namespace of the Policy.
    #[arg(long, default_value = "default", value_parser = parse_namespace)]
    pub namespace: String,
    /// nftables: table name.
    #[arg(long, default_value = "ingress_tap", value_parser = parse_nft_table)]
    pub nft_table: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DryRun {
    #[default]
    None,
    Server,
}
