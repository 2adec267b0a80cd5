//! Turning rule and list firings into events: the cool-downs, one rate limit per budget (kind
//! of event and stream), the events waiting to be taken and the rings of recent ones.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::SystemTime;

use super::events::{
    rfc3339_utc, Event, EventConnection, EventDetails, EventKind, Field, RecentEvents,
    EVENT_SCHEMA_VERSION,
};
use super::rules::{Cooldowns, EventRateLimiter, EventSource};
use super::{Stream, TraceConfig};
use crate::model::{Connection, Provenance};

/// The kinds of event, in budget order.
pub(super) const KINDS: [EventKind; 3] = [
    EventKind::VolumeThreshold,
    EventKind::LeakyBucket,
    EventKind::ThreatList,
];

/// Event budgets and recent-event rings: one per (kind, stream).
pub(super) const BUDGETS: usize = KINDS.len() * Stream::ALL.len();

pub(super) fn budget_index(kind: EventKind, stream: Stream) -> usize {
    let kind = match kind {
        EventKind::VolumeThreshold => 0,
        EventKind::LeakyBucket => 1,
        EventKind::ThreatList => 2,
    };
    kind * Stream::ALL.len() + stream.index()
}

/// Where raised events go, apart from the rule state so that rules can raise events while
/// they are being iterated.
#[derive(Debug)]
pub(super) struct Emitter {
    pub(super) cooldowns: Cooldowns,
    /// One budget per (kind, stream): a flood of one kind of event about one stream of
    /// addresses uses up its own budget only.
    pub(super) limiters: Vec<EventRateLimiter>,
    pub(super) pending: VecDeque<Event>,
    pending_capacity: usize,
    /// One ring per (kind, stream), each event numbered so the rings merge in order.
    recent: Vec<RecentEvents>,
    /// The number of the next event.
    sequence: u64,
    pub(super) rate_limited: [u64; BUDGETS],
    pub(super) events_dropped_unread: u64,
}

/// One firing, before the cool-down and the rate limit decide whether it becomes an event.
#[derive(Clone, Copy)]
pub(super) struct Firing<'a> {
    pub(super) source: EventSource,
    pub(super) cooldown_ms: u64,
    pub(super) kind: EventKind,
    pub(super) name: &'a str,
    pub(super) ip: IpAddr,
    pub(super) field: Field,
    pub(super) provenance: Provenance,
}

impl Firing<'_> {
    fn budget(&self) -> usize {
        budget_index(self.kind, Stream::of(self.field, self.provenance))
    }
}

impl Emitter {
    pub(super) fn new(config: &TraceConfig, seed: u64) -> Emitter {
        Emitter {
            cooldowns: Cooldowns::new(config.cooldown_entries, seed.rotate_left(17)),
            limiters: (0..BUDGETS)
                .map(|_| EventRateLimiter::new(config.max_events_per_second))
                .collect(),
            pending: VecDeque::with_capacity(config.pending_events.min(1024)),
            pending_capacity: config.pending_events,
            recent: (0..BUDGETS)
                .map(|_| RecentEvents::new(config.recent_events))
                .collect(),
            sequence: 0,
            rate_limited: [0; BUDGETS],
            events_dropped_unread: 0,
        }
    }

    fn count_rate_limited(&mut self, budget: usize, amount: u64) {
        if let Some(count) = self.rate_limited.get_mut(budget) {
            *count = count.saturating_add(amount);
        }
    }

    /// Raises the event unless cooling down or rate-limited; returns whether it was raised.
    /// Nothing is allocated for a firing that does not become an event.
    fn fire(
        &mut self,
        now_ms: u64,
        wall: SystemTime,
        connection: &Connection,
        firing: Firing<'_>,
        details: impl FnOnce() -> EventDetails,
    ) -> FireOutcome {
        if self
            .cooldowns
            .is_cooling_down(now_ms, firing.source, firing.ip)
        {
            return FireOutcome::CooledDown;
        }
        // A firing lost to its budget does not start a cool-down, so the IP is reported on
        // its next firing once the flood allows.
        let budget = firing.budget();
        let allowed = self
            .limiters
            .get_mut(budget)
            .is_some_and(|limiter| limiter.try_acquire(now_ms));
        if !allowed {
            self.count_rate_limited(budget, 1);
            return FireOutcome::RateLimited;
        }
        self.cooldowns
            .start(now_ms, firing.source, firing.ip, firing.cooldown_ms);
        let event = Event {
            schema_version: EVENT_SCHEMA_VERSION,
            time: rfc3339_utc(wall),
            kind: firing.kind,
            name: firing.name.to_owned(),
            ip: firing.ip,
            field: firing.field,
            provenance: Some(firing.provenance),
            connection: EventConnection::from(connection),
            details: details(),
        };
        if let Some(ring) = self.recent.get_mut(budget) {
            ring.push(self.sequence, event.clone());
        }
        self.sequence = self.sequence.wrapping_add(1);
        if self.pending.len() >= self.pending_capacity {
            self.events_dropped_unread = self.events_dropped_unread.saturating_add(1);
        } else {
            self.pending.push_back(event);
        }
        FireOutcome::Raised
    }

    /// The same firing `times` times at one instant, as `times` requests of one address in a
    /// batch would fire one after another; `details` gets the firing's position. Once the
    /// outcome can no longer change within the instant — cooling down, or out of budget — the
    /// rest are counted without being tried.
    pub(super) fn fire_repeatedly(
        &mut self,
        now_ms: u64,
        wall: SystemTime,
        connection: &Connection,
        firing: Firing<'_>,
        times: u64,
        details: impl Fn(u64) -> EventDetails,
    ) -> Outcomes {
        let mut outcomes = Outcomes::default();
        for repeat in 0..times {
            let rest = times - repeat - 1;
            match self.fire(now_ms, wall, connection, firing, || details(repeat)) {
                FireOutcome::Raised => {
                    outcomes.raised += 1;
                    // A cool-down started now covers the rest of the instant.
                    if firing.cooldown_ms > 0 {
                        outcomes.cooled_down = outcomes.cooled_down.saturating_add(rest);
                        break;
                    }
                }
                FireOutcome::CooledDown => {
                    outcomes.cooled_down = outcomes.cooled_down.saturating_add(1 + rest);
                    break;
                }
                FireOutcome::RateLimited => {
                    // The budget's last second stays full within the same millisecond.
                    self.count_rate_limited(firing.budget(), rest);
                    break;
                }
            }
        }
        outcomes
    }

    /// The recent events of the given streams, oldest first.
    pub(super) fn recent_of(&self, streams: &[Stream]) -> Vec<Event> {
        let mut events: Vec<(u64, &Event)> = KINDS
            .iter()
            .flat_map(|&kind| {
                streams
                    .iter()
                    .map(move |&stream| budget_index(kind, stream))
            })
            .filter_map(|budget| self.recent.get(budget))
            .flat_map(RecentEvents::iter)
            .map(|(sequence, event)| (*sequence, event))
            .collect();
        events.sort_unstable_by_key(|(sequence, _)| *sequence);
        events.into_iter().map(|(_, event)| event.clone()).collect()
    }

    pub(super) fn buffered_events(&self) -> usize {
        self.pending.len() + self.recent.iter().map(RecentEvents::len).sum::<usize>()
    }
}

/// What the firings of one address in one batch came to.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Outcomes {
    pub(super) raised: u64,
    pub(super) cooled_down: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FireOutcome {
    Raised,
    CooledDown,
    RateLimited,
}
