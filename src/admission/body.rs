//! Request bodies read under a deadline, a size limit and a byte budget shared by all
//! requests.
//!
//! Bodies are what a client can make the webhook hold in memory: every connection may be
//! sending one, and HTTP/2 multiplies that by its streams. The budget bounds their sum, so
//! that many bodies sent slowly, or never finished, end in 503 (with `Retry-After`) for the
//! bodies past the budget, never in an OOM kill. A body's bytes are reserved before they are
//! read: all of them at once when the request declares its length (so an oversized claim is
//! refused before any byte is read), chunk by chunk otherwise. One address may hold at most
//! half of the budget (never less than one largest body), so one client cannot take it all.
//! Reservations are released when the answer is written.

use super::metrics::WebhookMetrics;
use crate::serve::{Peer, RequestDeadline};
use axum::body::Body;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The budget when the container has no memory limit and none is given.
pub const DEFAULT_BUDGET: usize = 32 * 1024 * 1024;

/// The share of the container's memory limit that bodies may take. The rest is the process
/// itself (a few MiB), connection buffers (TLS and HTTP, bounded by the connection limits), the
/// answers, and the allocator's slack.
pub const MEMORY_LIMIT_SHARE: usize = 4;

/// The body budget: `configured`, else a quarter of the container's memory limit, else
/// [`DEFAULT_BUDGET`]; never less than one largest body.
pub fn budget_size(
    configured: Option<usize>,
    memory_limit: Option<usize>,
    max_body: usize,
) -> usize {
    configured
        .or_else(|| memory_limit.map(|limit| limit / MEMORY_LIMIT_SHARE))
        .unwrap_or(DEFAULT_BUDGET)
        .max(max_body)
}

/// Bytes of request bodies held at once, in total and per address.
pub struct BodyBudget {
    total: usize,
    per_peer: usize,
    held: Mutex<Held>,
    metrics: Arc<WebhookMetrics>,
}

#[derive(Default)]
struct Held {
    total: usize,
    peers: HashMap<IpAddr, usize>,
}

impl BodyBudget {
    /// A budget of `total` bytes for bodies of at most `max_body` bytes each.
    pub fn new(total: usize, max_body: usize, metrics: Arc<WebhookMetrics>) -> Arc<Self> {
        let total = total.max(max_body);
        metrics
            .body_budget_bytes
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        Arc::new(Self {
            total,
            per_peer: (total / 2).max(max_body).min(total),
            held: Mutex::new(Held::default()),
            metrics,
        })
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    fn take(&self, peer: IpAddr, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let by_peer = held.peers.get(&peer).copied().unwrap_or(0);
        if held.total + bytes > self.total || by_peer + bytes > self.per_peer {
            return false;
        }
        held.total += bytes;
        *held.peers.entry(peer).or_insert(0) += bytes;
        self.metrics
            .inflight_body_bytes
            .set(i64::try_from(held.total).unwrap_or(i64::MAX));
        true
    }

    fn give_back(&self, peer: IpAddr, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total = held.total.saturating_sub(bytes);
        if let Some(by_peer) = held.peers.get_mut(&peer) {
            *by_peer = by_peer.saturating_sub(bytes);
            if *by_peer == 0 {
                held.peers.remove(&peer);
            }
        }
        self.metrics
            .inflight_body_bytes
            .set(i64::try_from(held.total).unwrap_or(i64::MAX));
    }
}

/// Bytes of one body held against the budget, given back when dropped.
pub struct Reservation {
    budget: Arc<BodyBudget>,
    peer: IpAddr,
    bytes: usize,
}

impl Reservation {
    fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if !self.budget.take(self.peer, bytes - self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.peer, self.bytes);
    }
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the body limit: 413.
    TooLarge,
    /// The budget has no room for it now: 503 with `Retry-After`.
    Busy,
    /// Not complete by the request deadline: 408.
    Timeout,
    /// The client broke off or sent a malformed body.
    Broken,
}

impl BodyError {
    /// The `reason` label of the refusal metric.
    pub fn label(self) -> &'static str {
        match self {
            BodyError::TooLarge => "too_large",
            BodyError::Busy => "busy",
            BodyError::Timeout => "timeout",
            BodyError::Broken => "broken",
        }
    }
}

/// Reads `request`'s body, at most `limit` bytes, within its [`RequestDeadline`] (or
/// `fallback_timeout` from now without one), holding its bytes against `budget`.
pub async fn read(
    request: axum::extract::Request,
    limit: usize,
    budget: &Arc<BodyBudget>,
    fallback_timeout: Duration,
) -> Result<(Vec<u8>, Reservation), BodyError> {
    let deadline = request
        .extensions()
        .get::<RequestDeadline>()
        .map_or_else(|| Instant::now() + fallback_timeout, |deadline| deadline.0);
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |peer| peer.0);
    let mut body: Body = request.into_body();
    let declared = axum::body::HttpBody::size_hint(&body).exact();
    let declared = match declared.map(usize::try_from) {
        Some(Ok(length)) if length <= limit => Some(length),
        Some(_) => return Err(BodyError::TooLarge),
        None => None,
    };
    let mut reservation = Reservation {
        budget: budget.clone(),
        peer,
        bytes: 0,
    };
    if !reservation.grow_to(declared.unwrap_or(0)) {
        return Err(BodyError::Busy);
    }
    let mut data = Vec::with_capacity(declared.unwrap_or(0));
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let length = data.len() + chunk.len();
            if length > limit {
                return Err(BodyError::TooLarge);
            }
            if !reservation.grow_to(length) {
                return Err(BodyError::Busy);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, reading).await {
        Ok(Ok(())) => Ok((data, reservation)),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(BodyError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_sized_from_the_memory_limit() {
        let mib = 1024 * 1024;
        assert_eq!(budget_size(None, Some(128 * mib), 3 * mib), 32 * mib);
        assert_eq!(
            budget_size(Some(10 * mib), Some(128 * mib), 3 * mib),
            10 * mib
        );
        assert_eq!(budget_size(None, None, 3 * mib), DEFAULT_BUDGET);
        assert_eq!(budget_size(Some(1), None, 3 * mib), 3 * mib);
    }

    #[test]
    fn one_address_holds_at_most_half() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(WebhookMetrics::register(&mut registry));
        let budget = BodyBudget::new(100, 10, metrics);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(budget.take(a, 50));
        assert!(!budget.take(a, 1));
        assert!(budget.take(b, 50));
        assert!(!budget.take(b, 1));
        budget.give_back(a, 50);
        assert!(budget.take(b.to_canonical(), 0));
        assert!(budget.take(a, 10));
    }
}
