//! A PolicySync server that records every report: the Felix side of the end-to-end tests, the
//! soak harness and local trials, speaking the same gRPC over a Unix socket as Felix does.

use crate::felix_proto::policy_sync_server::{PolicySync, PolicySyncServer};
use crate::felix_proto::{DataplaneStats, ReportResult, SyncRequest, ToDataplane};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

impl Recorder {
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
        let refusing = self.refuse.load(Ordering::Acquire);
        if !refusing {
            self.lock().push(request.into_inner());
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
