//! The trace detector on a thread of its own, fed the requests of each read in one message.
//!
//! Detection is a stage after parsing, as a log shipper runs its transforms: the thread that
//! parses, attributes and aggregates lines hands each read's requests over and goes on, so
//! spotting suspicious addresses never slows down what Felix receives when a core is free, and
//! the two share the work of a burst. Nothing is lost on the way: the queue between them is
//! bounded and a full queue makes the parsing side wait (backpressure), so the detector sees
//! every request, in order, with the clock reading it would have seen inline — its outcome is
//! exactly that of calling [`Detector`] on the parsing thread.
//!
//! The detector thread also publishes what others read of the detector (events, the
//! `/suspicious` view, counters) through a hook, so nobody has to stop it to look.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::SystemTime;

use ingress_tap_core::detect::threat_lists::ThreatLists;
use ingress_tap_core::detect::Detector;
use ingress_tap_core::model::Attributed;
use ingress_tap_core::model::Connection;

/// Messages queued between the two threads before the parsing side waits. A message carries
/// the requests of one read, or [`REQUESTS_PER_MESSAGE`] of a bigger one, so the detector may
/// fall this many messages behind during a burst and catches up afterwards.
pub const QUEUED_MESSAGES: usize = 8;

/// Requests per message at most: a read handing over more (a backlog at start, say) is sent
/// in parts, so no buffer grows beyond this, and a stream of small clock readings without
/// a flush in between still travels in messages of this size.
pub const REQUESTS_PER_MESSAGE: usize = 1024;

/// Clock readings per message at most, for the same reason.
const READINGS_PER_MESSAGE: usize = 64;

/// What the detector needs of one request.
#[derive(Clone, Copy, Debug)]
struct Request {
    connection: Connection,
    original: Option<Attributed>,
}

/// A clock reading, taken before the request at `position` of its message.
#[derive(Clone, Copy, Debug)]
struct Reading {
    position: usize,
    now_ms: u64,
    wall: SystemTime,
}

/// Requests in arrival order with the clock readings among them: one message, and one
/// wake-up of the detector thread, for a whole read.
#[derive(Debug, Default)]
struct Work {
    requests: Vec<Request>,
    readings: Vec<Reading>,
    /// Everything is to be applied, and the outputs published if due, after this.
    flush: bool,
}

impl Work {
    fn with_capacity() -> Work {
        Work {
            requests: Vec::with_capacity(REQUESTS_PER_MESSAGE),
            readings: Vec::with_capacity(READINGS_PER_MESSAGE),
            flush: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.readings.is_empty() && !self.flush
    }

    fn clear(&mut self) {
        self.requests.clear();
        self.readings.clear();
        self.flush = false;
    }
}

/// When the detector's outputs are published: on the thread's own schedule, or right away
/// (after a list reload, and when the collector stops).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    IfDue,
    Now,
}

/// Called on the detector thread where the detector would have published inline: after each
/// flush (once per read), with whether publishing is forced.
pub type PublishHook = Box<dyn FnMut(&mut Detector, Publish) + Send>;

enum Message {
    Work(Work),
    ReplaceLists(Box<ThreatLists>),
    Publish,
    /// Runs on the detector after everything sent before it; answered when done.
    Call(Box<dyn FnOnce(&mut Detector) + Send>),
}

/// Why the detector thread can no longer take requests.
#[derive(Debug, thiserror::Error)]
#[error("the trace detector thread has stopped")]
pub struct DetectorStopped;

/// The parsing side's handle on the detector thread.
pub struct DetectorThread {
    sender: Option<SyncSender<Message>>,
    /// Emptied buffers coming back, so a steady stream allocates nothing.
    spare: Receiver<Work>,
    pending: Work,
    thread: Option<JoinHandle<()>>,
}

impl DetectorThread {
    /// Starts `detector` on a thread named `trace-detector`; `publish`, when given, runs there
    /// after each flush and when publishing is asked for.
    pub fn spawn(
        detector: Detector,
        publish: Option<PublishHook>,
    ) -> std::io::Result<DetectorThread> {
        let (sender, messages) = mpsc::sync_channel(QUEUED_MESSAGES);
        // Every buffer in flight can come back at once without blocking the detector.
        let (returns, spare) = mpsc::sync_channel(QUEUED_MESSAGES + 2);
        let thread = std::thread::Builder::new()
            .name("trace-detector".to_owned())
            .spawn(move || run(detector, publish, &messages, &returns))?;
        Ok(DetectorThread {
            sender: Some(sender),
            spare,
            pending: Work::with_capacity(),
            thread: Some(thread),
        })
    }

    /// Starts a new clock reading: the requests that follow happened at `now_ms` (monotonic
    /// milliseconds) and `wall`. The windows move with it, even with no request, so that an
    /// idle collector closes them on time.
    pub fn advance(&mut self, now_ms: u64, wall: SystemTime) -> Result<(), DetectorStopped> {
        self.pending.readings.push(Reading {
            position: self.pending.requests.len(),
            now_ms,
            wall,
        });
        if self.pending.readings.len() >= READINGS_PER_MESSAGE {
            self.send_pending()?;
        }
        Ok(())
    }

    /// Takes one request at the current clock reading.
    pub fn observe(
        &mut self,
        connection: &Connection,
        original: Option<Attributed>,
    ) -> Result<(), DetectorStopped> {
        self.pending.requests.push(Request {
            connection: *connection,
            original,
        });
        if self.pending.requests.len() >= REQUESTS_PER_MESSAGE {
            self.send_pending()?;
        }
        Ok(())
    }

    /// Has everything taken so far applied, and the outputs published if due: the collector
    /// calls it after each read.
    pub fn flush(&mut self) -> Result<(), DetectorStopped> {
        self.pending.flush = true;
        self.send_pending()
    }

    fn send_pending(&mut self) -> Result<(), DetectorStopped> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let fresh = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Work::with_capacity());
        let work = std::mem::replace(&mut self.pending, fresh);
        self.send(Message::Work(work))
    }

    /// Swaps in freshly loaded lists after the requests already taken, then publishes.
    pub fn replace_lists(&mut self, lists: ThreatLists) -> Result<(), DetectorStopped> {
        self.send_pending()?;
        self.send(Message::ReplaceLists(Box::new(lists)))
    }

    /// Publishes once everything taken so far is applied.
    pub fn publish_now(&mut self) -> Result<(), DetectorStopped> {
        self.send_pending()?;
        self.send(Message::Publish)
    }

    /// Runs `f` on the detector once every request taken so far has been applied, and returns
    /// its result: for tests and benchmarks that read the detector's state at a known point.
    pub fn call<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Detector) -> R + Send + 'static,
    ) -> Result<R, DetectorStopped> {
        self.send_pending()?;
        let (answer, answered) = mpsc::sync_channel(1);
        self.send(Message::Call(Box::new(move |detector| {
            let _ = answer.send(f(detector));
        })))?;
        answered.recv().map_err(|_| DetectorStopped)
    }

    fn send(&mut self, message: Message) -> Result<(), DetectorStopped> {
        let sender = self.sender.as_ref().ok_or(DetectorStopped)?;
        sender.send(message).map_err(|_| {
            self.sender = None;
            DetectorStopped
        })
    }

    /// Bytes the queue can hold at most: every message's buffer full, plus the spares and
    /// the one being filled.
    pub fn memory_bound_bytes() -> usize {
        (2 * QUEUED_MESSAGES + 4)
            * (REQUESTS_PER_MESSAGE * std::mem::size_of::<Request>()
                + READINGS_PER_MESSAGE * std::mem::size_of::<Reading>())
    }
}

impl Drop for DetectorThread {
    /// Applies what is still gathered, then lets the thread finish its queue and stop.
    fn drop(&mut self) {
        let _ = self.send_pending();
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    mut detector: Detector,
    mut publish: Option<PublishHook>,
    messages: &Receiver<Message>,
    returns: &SyncSender<Work>,
) {
    let mut publish = |detector: &mut Detector, when: Publish| {
        if let Some(hook) = publish.as_mut() {
            hook(detector, when);
        }
    };
    let mut clock = (0, SystemTime::UNIX_EPOCH);
    while let Ok(message) = messages.recv() {
        match message {
            Message::Work(mut work) => {
                apply(&mut detector, &mut clock, &work);
                if work.flush {
                    detector.flush();
                    publish(&mut detector, Publish::IfDue);
                }
                work.clear();
                // A full return queue means the other side has spares enough.
                let _ = returns.try_send(work);
            }
            Message::ReplaceLists(lists) => {
                detector.replace_lists(*lists);
                publish(&mut detector, Publish::Now);
            }
            Message::Publish => publish(&mut detector, Publish::Now),
            Message::Call(f) => {
                detector.flush();
                f(&mut detector);
            }
        }
    }
    publish(&mut detector, Publish::IfDue);
}

/// The calls the parsing thread would have made inline: each clock reading where it was taken,
/// and every request with the reading last taken.
fn apply(detector: &mut Detector, clock: &mut (u64, SystemTime), work: &Work) {
    let mut readings = work.readings.iter().peekable();
    for (position, request) in work.requests.iter().enumerate() {
        while let Some(reading) = readings.next_if(|reading| reading.position <= position) {
            *clock = (reading.now_ms, reading.wall);
            detector.advance(reading.now_ms, reading.wall);
        }
        let (now_ms, wall) = *clock;
        detector.observe(now_ms, wall, &request.connection, request.original);
    }
    for reading in readings {
        *clock = (reading.now_ms, reading.wall);
        detector.advance(reading.now_ms, reading.wall);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingress_tap_core::detect::threat_lists::parse_list;
    use ingress_tap_core::detect::{Suspicious, TraceConfig, TraceCounters};
    use ingress_tap_core::model::Protocol;
    use std::net::IpAddr;
    use std::net::Ipv4Addr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn connection(peer: u32) -> Connection {
        Connection {
            source_ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + peer)),
            source_port: 40_000,
            destination_ip: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 17)),
            destination_port: 443,
            protocol: Protocol::Tcp,
        }
    }

    /// Clock readings, each with its requests: a few heavy clients over a long tail, a listed
    /// network, requests without an original IP, and one reading bigger than a message.
    /// A clock reading and its requests.
    type Reading = (u64, Vec<(Connection, Option<Attributed>)>);

    fn workload() -> Vec<Reading> {
        let mut state = 0x2545_f491_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        (0..400_u64)
            .map(|reading| {
                let count = if reading == 200 {
                    3 * REQUESTS_PER_MESSAGE + 7
                } else {
                    (next() % 300) as usize
                };
                let requests = (0..count)
                    .map(|_| {
                        let roll = next();
                        let original = match roll % 10 {
                            0 => None,
                            1..=4 => Some(Ipv4Addr::new(198, 51, 100, (roll >> 8) as u8 % 3)),
                            5 => Some(Ipv4Addr::new(203, 0, 113, (roll >> 8) as u8)),
                            _ => Some(Ipv4Addr::from(0x6400_0000 + (roll >> 4) % 20_000)),
                        };
                        (
                            connection(roll % 7),
                            original.map(|ip| {
                                Attributed::new(
                                    IpAddr::V4(ip),
                                    ingress_tap_core::model::Provenance::Trusted,
                                )
                            }),
                        )
                    })
                    .collect();
                (reading * 37, requests)
            })
            .collect()
    }

    fn detector() -> Detector {
        let config = TraceConfig {
            window_seconds: 5,
            ..TraceConfig::default()
        };
        let mut detector = Detector::with_seed(config, 7).unwrap();
        let (list, _) = parse_list("test-net-3", "203.0.113.0/24 ; documentation\n");
        detector.replace_lists(ThreatLists::build(vec![list]).unwrap());
        detector
    }

    fn wall(now_ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(now_ms)
    }

    type Outcome = (
        Vec<ingress_tap_core::detect::events::Event>,
        Suspicious,
        TraceCounters,
    );

    fn read_out(detector: &mut Detector) -> Outcome {
        (
            detector.take_events(),
            detector.snapshot(),
            detector.counters(),
        )
    }

    #[test]
    fn the_thread_reaches_what_the_detector_reaches_inline() {
        let workload = workload();
        let mut inline = detector();
        for (now_ms, requests) in &workload {
            inline.advance(*now_ms, wall(*now_ms));
            for (connection, original) in requests {
                inline.observe(*now_ms, wall(*now_ms), connection, *original);
            }
            inline.flush();
        }
        let expected = read_out(&mut inline);

        let mut thread = DetectorThread::spawn(detector(), None).unwrap();
        for (now_ms, requests) in &workload {
            thread.advance(*now_ms, wall(*now_ms)).unwrap();
            for (connection, original) in requests {
                thread.observe(connection, *original).unwrap();
            }
            thread.flush().unwrap();
        }
        let seen = thread.call(read_out).unwrap();

        assert!(
            !expected.0.is_empty(),
            "the workload raises events (rules and the list)"
        );
        assert_eq!(seen.0, expected.0, "the same events, in the same order");
        assert_eq!(seen.1, expected.1);
        assert_eq!(seen.2, expected.2);
    }

    #[test]
    fn publishing_runs_on_the_thread_and_dropping_applies_everything() {
        let published: Arc<Mutex<Vec<(Publish, u64)>>> = Arc::default();
        let hook: PublishHook = {
            let published = published.clone();
            Box::new(move |detector, when| {
                let requests = detector
                    .snapshot()
                    .top_sources
                    .iter()
                    .map(|entry| entry.requests)
                    .sum();
                published.lock().unwrap().push((when, requests));
            })
        };
        let mut thread = DetectorThread::spawn(detector(), Some(hook)).unwrap();
        thread.advance(1, wall(1)).unwrap();
        for _ in 0..2 * REQUESTS_PER_MESSAGE + 1 {
            thread.observe(&connection(1), None).unwrap();
        }
        thread.publish_now().unwrap();
        thread.observe(&connection(2), None).unwrap();
        drop(thread);

        let published = published.lock().unwrap();
        let forced: Vec<u64> = published
            .iter()
            .filter(|(when, _)| *when == Publish::Now)
            .map(|(_, requests)| *requests)
            .collect();
        assert_eq!(forced, [2 * REQUESTS_PER_MESSAGE as u64 + 1]);
        assert_eq!(
            published.last().map(|(_, requests)| *requests),
            Some(2 * REQUESTS_PER_MESSAGE as u64 + 2),
            "the last publication, on stopping, has every request"
        );
    }

    #[test]
    fn the_queue_stays_within_what_docs_trace_md_states() {
        // docs/trace.md's memory table: "about 1.3 MiB".
        let bound = DetectorThread::memory_bound_bytes();
        assert!(bound <= 1_400_000, "{bound} bytes");
    }

    #[test]
    fn a_stopped_thread_is_reported_not_waited_on() {
        let hook: PublishHook = Box::new(|_, _| panic!("a publishing bug"));
        let mut thread = DetectorThread::spawn(detector(), Some(hook)).unwrap();
        // The first flush is taken; the thread dies publishing after it.
        let mut outcome = Ok(());
        for now_ms in 0..1_000 {
            outcome = thread
                .advance(now_ms, wall(now_ms))
                .and_then(|()| thread.flush());
            if outcome.is_err() {
                break;
            }
        }
        assert!(outcome.is_err(), "sending to a stopped thread fails");
        assert!(thread.call(|_| ()).is_err());
    }
}
