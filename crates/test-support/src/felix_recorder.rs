//! A PolicySync server that records every report: the Felix side of the end-to-end tests, the
//! soak harness and local trials, speaking the same gRPC over a Unix socket as Felix does.

use ingress_tap_felix_proto::policy_sync_server::{PolicySync, PolicySyncServer};
use ingress_tap_felix_proto::{DataplaneStats, ReportResult, SyncRequest, ToDataplane};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Shared record of what arrived.
#[derive(Clone, Default)]
pub struct Recorder {
    reports: Arc<Mutex<Vec<DataplaneStats>>>,
    arrived: Arc<Notify>,
    refuse: Arc<AtomicBool>,
    /// Only add up what arrives (see [`Recorder::counting`]).
    counting_only: bool,
    totals: Arc<Totals>,
    /// Milliseconds each answer is held back (a slow Felix).
    delay_ms: Arc<AtomicU64>,
}

/// What arrived, added up.
#[derive(Default)]
struct Totals {
    messages: AtomicU64,
    http_data: AtomicU64,
    ingress_data: AtomicU64,
    largest_http_data: AtomicU64,
    largest_encoded_bytes: AtomicU64,
}

/// [`Recorder::totals`]: what arrived, added up over every message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportTotals {
    /// Report calls accepted.
    pub messages: u64,
    /// `HTTPData` entries over all messages.
    pub http_data: u64,
    /// Sum of the INGRESS_DATA statistics' values.
    pub ingress_data: u64,
    /// The most `HTTPData` entries one message carried.
    pub largest_http_data: u64,
    /// The largest message, protobuf-encoded.
    pub largest_encoded_bytes: u64,
}

impl Recorder {
    /// A recorder that keeps only [`Recorder::totals`], not the reports: for load runs whose
    /// reports would not fit in memory.
    pub fn counting() -> Recorder {
        Recorder {
            counting_only: true,
            ..Recorder::default()
        }
    }

    /// Holds every answer back by `delay` (a slow Felix); zero answers at once.
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(millis, Ordering::Release);
    }

    /// What arrived so far, added up.
    pub fn totals(&self) -> ReportTotals {
        let t = &self.totals;
        ReportTotals {
            messages: t.messages.load(Ordering::Acquire),
            http_data: t.http_data.load(Ordering::Acquire),
            ingress_data: t.ingress_data.load(Ordering::Acquire),
            largest_http_data: t.largest_http_data.load(Ordering::Acquire),
            largest_encoded_bytes: t.largest_encoded_bytes.load(Ordering::Acquire),
        }
    }

    /// Every report received so far, in arrival order.
    pub fn reports(&self) -> Vec<DataplaneStats> {
        self.lock().clone()
    }

    /// Removes and returns every report received so far.
    pub fn take(&self) -> Vec<DataplaneStats> {
        std::mem::take(&mut *self.lock())
    }

    /// Answer `successful: false`, as Felix does while dataplane stats are off.
    pub fn set_refusing(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::Release);
    }

    /// Waits until `done` holds for the reports received, or `deadline` passes.
    pub async fn wait_until(
        &self,
        deadline: Duration,
        mut done: impl FnMut(&[DataplaneStats]) -> bool,
    ) -> bool {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                if done(&self.lock()) {
                    return;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }

    fn add_up(&self, report: &DataplaneStats) {
        use ingress_tap_felix_proto::statistic::Kind;
        use prost::Message;
        let t = &self.totals;
        let entries = report.http_data.len() as u64;
        let ingress_data: i64 = report
            .stats
            .iter()
            .filter(|s| s.kind == i32::from(Kind::IngressData))
            .map(|s| s.value)
            .sum();
        t.messages.fetch_add(1, Ordering::AcqRel);
        t.http_data.fetch_add(entries, Ordering::AcqRel);
        t.ingress_data
            .fetch_add(u64::try_from(ingress_data).unwrap_or(0), Ordering::AcqRel);
        t.largest_http_data.fetch_max(entries, Ordering::AcqRel);
        t.largest_encoded_bytes
            .fetch_max(report.encoded_len() as u64, Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DataplaneStats>> {
        self.reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl PolicySync for Recorder {
    type SyncStream = Pin<Box<dyn Stream<Item = Result<ToDataplane, Status>> + Send + 'static>>;

    async fn sync(
        &self,
        _request: Request<SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        Err(Status::unimplemented("this recorder only takes reports"))
    }

    async fn report(
        &self,
        request: Request<DataplaneStats>,
    ) -> Result<Response<ReportResult>, Status> {
        let delay = self.delay_ms.load(Ordering::Acquire);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let refusing = self.refuse.load(Ordering::Acquire);
        if !refusing {
            let report = request.into_inner();
            self.add_up(&report);
            if !self.counting_only {
                self.lock().push(report);
            }
            self.arrived.notify_waiters();
        }
        Ok(Response::new(ReportResult {
            successful: !refusing,
        }))
    }
}

/// Serves `recorder` on a new Unix socket at `socket` until `shutdown` resolves.
pub async fn serve(
    socket: &Path,
    recorder: Recorder,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let _ = std::fs::remove_file(socket);
    let listener = match UnixListener::bind(socket) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(socket = %socket.display(), %err, "cannot bind the PolicySync socket");
            return Ok(());
        }
    };
    tonic::transport::Server::builder()
        .add_service(PolicySyncServer::new(recorder))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}
