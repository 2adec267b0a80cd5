//! The last line against an event flood: at most so many events in any one second.

use std::collections::VecDeque;

use crate::detect::MAX_EVENTS_PER_SECOND;

/// At most `per_second` events in any window of one second, wherever the window starts.
///
/// A token bucket that starts full lets through its burst and then its refill within the
/// same second (about 1.5 to 2 times the rate in the first second of a flood); this keeps
/// the times of the last `per_second` events instead, and lets one more through only when the
/// oldest of them is a full second old. The times are kept in a ring of `per_second` times
/// (8 bytes each) allocated up front.
#[derive(Clone, Debug)]
pub struct EventRateLimiter {
    per_second: usize,
    /// Monotonic milliseconds of the last `per_second` events let through, oldest first.
    times: VecDeque<u64>,
}

impl EventRateLimiter {
    pub fn new(per_second: u64) -> EventRateLimiter {
        let per_second = usize::try_from(per_second).unwrap_or(usize::MAX).max(1);
        EventRateLimiter {
            per_second,
            // Allocated up front, so that a flood changes no allocation.
            times: VecDeque::with_capacity(per_second.min(MAX_EVENTS_PER_SECOND as usize)),
        }
    }

    /// Lets one event through at `now_ms` if the last second holds fewer than `per_second`.
    pub fn try_acquire(&mut self, now_ms: u64) -> bool {
        if self.times.len() >= self.per_second {
            match self.times.front() {
                Some(&oldest) if now_ms >= oldest.saturating_add(1000) => {
                    self.times.pop_front();
                }
                _ => return false,
            }
        }
        // Clocks handed in are monotonic; a reading from the past counts as the latest one so
        // that the ring stays in order.
        let latest = self.times.back().map_or(now_ms, |&last| last.max(now_ms));
        self.times.push_back(latest);
        true
    }

    /// The memory the ring holds at most.
    pub fn memory_bound_bytes(per_second: u64) -> usize {
        usize::try_from(per_second)
            .unwrap_or(usize::MAX)
            .saturating_mul(std::mem::size_of::<u64>())
            + std::mem::size_of::<EventRateLimiter>()
    }

    pub fn memory_bytes(&self) -> usize {
        self.times.capacity() * std::mem::size_of::<u64>() + std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rate_limiter_lets_through_its_rate_per_second() {
        let mut limiter = EventRateLimiter::new(2);
        assert!(limiter.try_acquire(0));
        assert!(limiter.try_acquire(0));
        assert!(!limiter.try_acquire(0));
        assert!(!limiter.try_acquire(999));
        assert!(limiter.try_acquire(1000));
        assert!(limiter.try_acquire(1000));
        assert!(!limiter.try_acquire(1999));
    }

    proptest! {
        /// Whatever the arrival times, no window of one second lets through more than the
        /// rate, and an event is refused only when the last second is full.
        #[test]
        fn no_second_lets_through_more_than_the_rate(
            rate in 1..20_u64,
            gaps in proptest::collection::vec(0..400_u64, 1..400),
        ) {
            let mut limiter = EventRateLimiter::new(rate);
            let mut now = 0_u64;
            let mut passed: Vec<u64> = Vec::new();
            for gap in gaps {
                now += gap;
                let in_last_second = passed.iter().filter(|&&t| t + 1000 > now).count() as u64;
                let allowed = limiter.try_acquire(now);
                prop_assert_eq!(allowed, in_last_second < rate);
                if allowed {
                    passed.push(now);
                }
            }
            for (index, &start) in passed.iter().enumerate() {
                let within = passed[index..].iter().take_while(|&&t| t < start + 1000).count();
                prop_assert!(within as u64 <= rate);
            }
        }
    }
}
