//! Local mode: what a user needs to call a webhook that generated its own CA.
//!
//! Only the CA certificate and a sample review are written; the private keys stay in memory,
//! so nothing secret is left on disk or printed.

use anyhow::Context;
use base64::Engine;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A sample AdmissionReview for an ingress-nginx controller pod that opted in.
pub const SAMPLE_REVIEW: &str = include_str!("../../examples/admission-review.json");

/// Writes `ca.pem` and `review.json` into `dir` (a new temp dir when `None`) and returns the
/// text to print: where the webhook listens, the caBundle, and a curl command that succeeds.
pub fn write_and_describe(
    dir: Option<PathBuf>,
    ca_pem: &str,
    addr: SocketAddr,
    health_addr: SocketAddr,
) -> anyhow::Result<String> {
    let dir = match dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("ingress-tap-webhook-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca_path = dir.join("ca.pem");
    let review_path = dir.join("review.json");
    std::fs::write(&ca_path, ca_pem)
        .with_context(|| format!("cannot write {}", ca_path.display()))?;
    std::fs::write(&review_path, SAMPLE_REVIEW)
        .with_context(|| format!("cannot write {}", review_path.display()))?;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        addr.ip().to_string()
    };
    let url = format!("https://{host}:{}/mutate", addr.port());
    Ok(format!(
        "ingress-tap webhook is serving {url} with a certificate from a CA it generated (local mode).\n\
         \n\
         CA bundle (PEM):     {ca}\n\
         caBundle (base64):   {ca_bundle}\n\
         Health and metrics:  http://{health_addr}/healthz  /readyz  /metrics\n\
         \n\
         Post a sample AdmissionReview (an ingress-nginx controller pod that opted in):\n\
         \n\
         \x20 curl -sS --fail --cacert {ca} -H 'Content-Type: application/json' --data @{review} {url}\n\
         \n\
         The answer carries a base64 JSON patch (response.patch). Stop with Ctrl-C.",
        ca = ca_path.display(),
        review = review_path.display(),
    ))
}
