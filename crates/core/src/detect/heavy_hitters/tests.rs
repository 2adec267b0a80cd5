use super::*;
use std::net::Ipv4Addr;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

#[test]
fn counts_are_exact_below_capacity() {
    let mut summary = SpaceSaving::new(8);
    for n in 0..5_u32 {
        for _ in 0..=n {
            summary.observe(ip(n));
        }
    }
    let top = summary.top(3);
    assert_eq!(
        top.iter()
            .map(|e| (e.ip, e.requests, e.error))
            .collect::<Vec<_>>(),
        vec![(ip(4), 5, 0), (ip(3), 4, 0), (ip(2), 3, 0)]
    );
    assert_eq!(summary.error_bound(), 0);
}

#[test]
fn a_newcomer_is_filtered_until_its_cell_passes_the_smallest_count() {
    let mut summary = SpaceSaving::new(2);
    summary.observe_weighted(ip(1), 5);
    summary.observe_weighted(ip(2), 3);
    // The smallest count is 3: a newcomer's first three requests only fill its cell, and
    // nothing certain is known of it.
    for expected in 1..=3 {
        assert_eq!(
            summary.observe(ip(3)),
            Estimate {
                count: expected,
                error: expected
            }
        );
        assert_eq!(summary.estimate(&ip(3)), None);
    }
    assert_eq!(summary.replacements(), 0);
    // The fourth would pass it: ip 3 takes over the smallest counter and inherits its
    // count as error, one request certain.
    assert_eq!(summary.observe(ip(3)), Estimate { count: 4, error: 3 });
    assert_eq!(summary.estimate(&ip(2)), None);
    assert_eq!(summary.replacements(), 1);
    // The evicted IP's cell now bounds its three requests.
    let cell = filter_cell(summary.hasher.hash(&ip(2)), summary.filter.len());
    assert!(summary.filter[cell] >= 3);
    assert_eq!(
        summary.estimate(&ip(1)),
        Some(Estimate { count: 5, error: 0 })
    );
}

#[test]
fn without_the_filter_a_newcomer_inherits_the_smallest_count_as_error() {
    let mut summary = SpaceSaving::new(2);
    summary.filter_on = false;
    summary.observe(ip(1));
    summary.observe(ip(1));
    summary.observe(ip(2));
    let estimate = summary.observe(ip(3));
    assert_eq!(estimate, Estimate { count: 2, error: 1 });
    assert_eq!(summary.estimate(&ip(2)), None);
    assert_eq!(
        summary.estimate(&ip(1)),
        Some(Estimate { count: 2, error: 0 })
    );
}

#[test]
fn heap_stays_consistent_under_mixed_updates() {
    let mut summary = SpaceSaving::new(16);
    let mut state: u32 = 12345;
    for _ in 0..10_000 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let weight = u64::from(state >> 29) + 1;
        summary.observe_weighted(ip((state >> 16) % 40), weight);
        for (position, entry) in summary.heap.iter().enumerate() {
            assert_eq!(
                summary.slots[entry.slot as usize].heap_position as usize,
                position
            );
            if position > 0 {
                let parent = summary.heap[(position - 1) / ARITY];
                assert!(parent.count <= entry.count);
            }
        }
    }
    assert_eq!(summary.index.len(), summary.slots.len());
    // Requests absorbed by the filter are in no counter.
    let total: u64 = summary.heap.iter().map(|entry| entry.count).sum();
    assert!(total <= summary.observations());
    let smallest = summary.heap[0].count;
    assert!(summary
        .filter
        .iter()
        .all(|&cell| u64::from(cell) <= smallest));
}

#[test]
fn a_weighted_observation_equals_that_many_single_ones() {
    // The same hasher for both: the filter's cells depend on it, so two random ones may
    // legitimately estimate differently.
    for seed in 0..500 {
        let hasher = AddressHasher::with_seed(seed);
        let mut weighted = SpaceSaving::with_hasher(3, hasher);
        let mut single = SpaceSaving::with_hasher(3, hasher);
        let stream = [(1, 4), (2, 1), (3, 2), (4, 3), (1, 2), (5, 1), (2, 6)];
        for (n, weight) in stream {
            let estimate = weighted.observe_weighted(ip(n), weight);
            let mut last = None;
            for _ in 0..weight {
                last = Some(single.observe(ip(n)));
            }
            assert_eq!(Some(estimate), last, "seed {seed}");
        }
        assert_eq!(weighted.top(3), single.top(3), "seed {seed}");
        assert_eq!(weighted.observations(), single.observations());
    }
}

#[test]
fn a_gap_of_several_windows_leaves_an_empty_previous_window() {
    let mut windows = WindowedTopK::new(1_000, 5, 10);
    windows.observe(0, ip(1));
    windows.observe(1_500, ip(2));
    assert_eq!(windows.previous().map(|w| w.top.len()), Some(1));
    windows.observe(5_200, ip(3));
    let previous = windows.previous().unwrap();
    assert_eq!(previous.start_ms, 4_000);
    assert!(previous.top.is_empty());
    assert_eq!(windows.current_start_ms(), Some(5_000));
}
