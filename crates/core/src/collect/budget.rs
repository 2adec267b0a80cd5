//! The collector's memory budget: every part of its state that grows with traffic gets a fixed
//! share of the container's memory limit, decided at start, so that no traffic and no Felix
//! speed can push the process past the limit.
//!
//! | part | share of the limit | at 64 MiB |
//! |---|---|---|
//! | the process itself: code, runtime, threads, the tailer's buffers, metrics | 1/8 | 8 MiB |
//! | the interval being aggregated ([`AggregatorLimits::within`]) | 1/4 | 16 MiB |
//! | closed intervals waiting for Felix | 1/8 | 8 MiB |
//! | the message being encoded and sent | 1/32 | 2 MiB |
//! | the trace detector (its own bound, [`TraceConfig::memory_bound_bytes`](crate::detect::TraceConfig::memory_bound_bytes)) | up to 7/32 | 14 MiB |
//!
//! Together that is three quarters of the limit; the last quarter is left to the allocator's
//! slack and the threat lists, which cost what their entries cost.

use super::aggregate::AggregatorLimits;

/// The sidecar's injected memory limit, used when no limit is configured or found.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 * 1024 * 1024;
/// The smallest limit accepted: below it the shares are too small to be useful.
pub const MIN_MEMORY_LIMIT: usize = 16 * 1024 * 1024;
/// The largest limit accepted.
pub const MAX_MEMORY_LIMIT: usize = 1 << 40;

/// Upper bound of the memory one `HTTPData` costs in a message being sent: the struct with its
/// seven strings (192 bytes), the two address strings' allocations (up to 64 bytes each for an
/// IPv6 text), and its encoded form in the request body and the HTTP/2 frames, twice.
pub const MESSAGE_ENTRY_BYTES: usize = 512;

/// The shares of one memory limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// The container's memory limit.
    pub limit: usize,
    /// The process itself, outside the parts below.
    pub process: usize,
    /// The interval being aggregated.
    pub aggregation: usize,
    /// Closed intervals waiting for Felix.
    pub queue: usize,
    /// The message being encoded and sent.
    pub message: usize,
    /// The most the trace detector should take.
    pub detector: usize,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::of_limit(DEFAULT_MEMORY_LIMIT)
    }
}

impl MemoryBudget {
    /// The shares of `limit` (clamped to [`MIN_MEMORY_LIMIT`]..=[`MAX_MEMORY_LIMIT`]).
    pub fn of_limit(limit: usize) -> MemoryBudget {
        let limit = limit.clamp(MIN_MEMORY_LIMIT, MAX_MEMORY_LIMIT);
        MemoryBudget {
            limit,
            process: limit / 8,
            aggregation: limit / 4,
            queue: limit / 8,
            message: limit / 32,
            detector: limit / 32 * 7,
        }
    }

    /// What the collector should stay under: three quarters of the limit.
    pub fn target_bytes(&self) -> usize {
        self.limit / 4 * 3
    }

    /// The aggregation bounds for the `INGRESS_LOG_REQUESTS_PER_INTERVAL` value given.
    pub fn aggregator_limits(&self, requests_per_interval: i64) -> AggregatorLimits {
        AggregatorLimits::within(self.aggregation, requests_per_interval)
    }

    /// The most `HTTPData` entries one message to Felix carries.
    pub fn message_entries(&self) -> usize {
        (self.message / MESSAGE_ENTRY_BYTES).max(1)
    }

    /// Bytes of closed intervals the Felix queue holds: its share, and never less than the
    /// largest interval the aggregation share can produce, so the newest interval always fits.
    pub fn queue_bytes(&self, limits: &AggregatorLimits) -> usize {
        self.queue.max(limits.closed_interval_bound_bytes())
    }
}

/// The aggregation bounds are a share of the memory budget, so their defaults are derived here.
impl Default for AggregatorLimits {
    fn default() -> Self {
        AggregatorLimits::with_requests_per_interval(-1)
    }
}

impl AggregatorLimits {
    /// The given http_data cap with the bounds of the default memory budget
    /// ([`MemoryBudget`]).
    pub fn with_requests_per_interval(requests_per_interval: i64) -> AggregatorLimits {
        MemoryBudget::default().aggregator_limits(requests_per_interval)
    }
}

/// Parses a memory size: bytes, or a number with a Kubernetes suffix (`Ki`, `Mi`, `Gi`, `Ti`,
/// `k`, `M`, `G`, `T`), within [`MIN_MEMORY_LIMIT`]..=[`MAX_MEMORY_LIMIT`].
pub fn parse_memory_limit(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let number: u64 = digits.parse().map_err(|_| {
        format!("'{text}' is not a size: expected bytes, or a number with Ki, Mi or Gi")
    })?;
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "'{text}' has an unknown suffix '{suffix}': use Ki, Mi, Gi, Ti, k, M, G or T"
            ))
        }
    };
    let bytes = number
        .checked_mul(multiplier)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .filter(|bytes| (MIN_MEMORY_LIMIT..=MAX_MEMORY_LIMIT).contains(bytes))
        .ok_or_else(|| format!("'{text}' is outside 16Mi..1Ti"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_fit_three_quarters_of_the_limit() {
        for limit in [MIN_MEMORY_LIMIT, DEFAULT_MEMORY_LIMIT, 1 << 30] {
            let budget = MemoryBudget::of_limit(limit);
            let sum = budget.process
                + budget.aggregation
                + budget.queue
                + budget.message
                + budget.detector;
            assert!(sum <= budget.target_bytes(), "{budget:?}");
            let limits = budget.aggregator_limits(-1);
            assert!(
                limits.memory_bound_bytes() <= budget.aggregation,
                "{limits:?}"
            );
            assert!(budget.queue_bytes(&limits) <= budget.queue, "{limits:?}");
            assert!(budget.message_entries() * MESSAGE_ENTRY_BYTES <= budget.message);
        }
    }

    #[test]
    fn the_documented_figures_at_64_mi() {
        // docs/architecture.md and docs/configuration.md quote these.
        let budget = MemoryBudget::default();
        let limits = budget.aggregator_limits(-1);
        assert_eq!(limits.max_connections, 5_242);
        assert_eq!(limits.max_exact_ips, 131_072);
        assert_eq!(limits.max_sketches, 32);
        assert_eq!(limits.max_http_data, 123_361);
        assert_eq!(budget.message_entries(), 4_096);
        assert_eq!(budget.queue_bytes(&limits), 8 << 20);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_memory_limit("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory_limit("67108864"), Ok(64 << 20));
        assert_eq!(parse_memory_limit("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory_limit("100M"), Ok(100_000_000));
        assert!(parse_memory_limit("1Mi").is_err());
        assert!(parse_memory_limit("64MB").unwrap_err().contains("suffix"));
        assert!(parse_memory_limit("-5").is_err());
        assert!(parse_memory_limit("99999999999999999999Gi").is_err());
        assert!(parse_memory_limit("").is_err());
    }
}
