//! OpenShift's router (HAProxy) has no denylist: only an allowlist annotation.

/// Why the target renders nothing, and where to block instead.
pub const EXPLANATION: &str = "the OpenShift router has an allowlist \
(route annotation haproxy.router.openshift.io/ip_allowlist) but no denylist, so it cannot \
block chosen addresses. Block them with --target calico where the router's pods see the \
client address as the connection's source (for example with externalTrafficPolicy: Local, or \
with --calico-host-endpoints at the nodes), or with --target nftables on the firewall in front \
of the cluster when clients are known only from X-Forwarded-For.";
