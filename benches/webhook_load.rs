//! The webhook under load over HTTPS on loopback, next to a bare TLS echo server of the same
//! stack measured in the same run.
//!
//! Targets: ≥ 10,000 reviews/s on 2 cores; p99 under 5 ms at 1,000 reviews/s. The ratio to the
//! echo server's throughput is reported next to them, not held to a target.
//!
//! - The webhook is the release binary (`ingress-tap webhook`), run as its own process with
//!   certificate files, as in a cluster, at its default log level (denials and errors; the
//!   line per review is at `Debug`).
//! - The echo server is this executable run again with `--serve-echo`: the same accept loop,
//!   limits, TLS configuration and HTTP stack (`admission::server::serve_tls`, axum on
//!   tokio-rustls via hyper-util), with a handler that reads the body as the webhook does
//!   (`admission::body::read`: deadline and byte budget) and returns a fixed body of exactly
//!   the size of the webhook's answer. What separates the two is the review itself.
//! - Both servers run on the same runtime, built by `admission::server::serving_runtime` with
//!   the same number of threads (the webhook's default, 1, unless
//!   `WEBHOOK_LOAD_SERVER_THREADS` says otherwise), under the same conditions; the client runs
//!   in this process on the same cores, so the figures are for client and server sharing the
//!   machine.
//! - The client speaks HTTP/1.1 with keep-alive over TLS verified against the test CA, as the
//!   API server does with a caBundle. Closed loop (each connection sends its next request when
//!   the previous answer is in) gives the throughput; open loop at a fixed rate gives the
//!   latency, measured from the time each request was due, so a stalled server is charged for
//!   the requests that queued behind the stall.
//!
//! `cargo bench --bench webhook_load` runs the full measurement. Without `--bench` (as under
//! `cargo test --benches`) it runs a smoke pass of about a second against the binary of the
//! same profile. Knobs, as environment variables: `WEBHOOK_LOAD_CONNECTIONS`,
//! `WEBHOOK_LOAD_SECONDS`, `WEBHOOK_LOAD_WARMUP_SECONDS`, `WEBHOOK_LOAD_RATE`,
//! `WEBHOOK_LOAD_SERVER_THREADS`, `WEBHOOK_LOAD_CLIENT_THREADS`, `WEBHOOK_LOAD_LOG_LEVEL`, and
//! two that change what is measured, for reading the figures rather than for the targets:
//! - `WEBHOOK_LOAD_PIN=1`: the client on the first CPU and both servers on the second (with
//!   `taskset`), so that client and server no longer compete for cores, as when the API server
//!   is on another host; the ratio is then the servers' own capacity on one core.
//! - `WEBHOOK_LOAD_ECHO_WORK_NS=N`: the echo's handler busy-waits N ns per request, which shows
//!   what a handler costing that much does to throughput on this machine (a calibration of the
//!   webhook's review against plain CPU work).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use ingress_tap::admission::body::{self, BodyBudget};
use ingress_tap::admission::handler::{self, Outcome};
use ingress_tap::admission::metrics::WebhookMetrics;
use ingress_tap::admission::server::{refuse_body, serve_tls, serving_runtime, Limits};
use ingress_tap::serve::ConnMetrics;
use ingress_tap::tls::{self, CertFiles, CertStore};
use ingress_tap_core::inject::InjectConfig;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

#[allow(dead_code)]
#[path = "support/admission_review.rs"]
mod admission_review;
#[allow(dead_code)]
#[path = "support/https_client.rs"]
mod https_client;

use https_client::{free_port, webhook_binary, CallError, Sender, SERVER_NAME};

/// First argument that turns this executable into the echo server.
const SERVE_ECHO: &str = "--serve-echo";
/// How long a server may take to answer its first request.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long the clients may take to finish their last request after a phase ends.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

const TARGET_REVIEWS_PER_SECOND: f64 = 10_000.0;
const TARGET_P99: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `cargo bench`: the full measurement against the release binary.
    Benchmark,
    /// Any other invocation: a short pass that proves the harness works.
    Smoke,
}

#[derive(Debug, Clone)]
struct Settings {
    /// Keep-alive connections of the closed-loop phase.
    connections: usize,
    warm_up: Duration,
    measure: Duration,
    /// Requests per second of the open-loop phase.
    rate: u32,
    /// Connections the open-loop requests are spread over.
    open_connections: usize,
    open_warm_up: Duration,
    open_measure: Duration,
    server_threads: usize,
    client_threads: usize,
    webhook_log_level: String,
    /// Client on the first CPU, servers on the second.
    pin: bool,
    /// Busy time the echo's handler spends per request.
    echo_work: Duration,
    /// Logical CPUs of the machine, counted before any pinning.
    machine_cpus: usize,
}

impl Settings {
    fn for_mode(mode: Mode) -> anyhow::Result<Self> {
        let seconds = |name, default| env_number(name, default).map(Duration::from_secs_f64);
        let machine_cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        Ok(match mode {
            Mode::Benchmark => Settings {
                connections: env_number("WEBHOOK_LOAD_CONNECTIONS", 16)?,
                warm_up: seconds("WEBHOOK_LOAD_WARMUP_SECONDS", 2.0)?,
                measure: seconds("WEBHOOK_LOAD_SECONDS", 10.0)?,
                rate: env_number("WEBHOOK_LOAD_RATE", 1_000)?,
                open_connections: env_number("WEBHOOK_LOAD_CONNECTIONS", 16)?,
                open_warm_up: seconds("WEBHOOK_LOAD_WARMUP_SECONDS", 2.0)?,
                open_measure: seconds("WEBHOOK_LOAD_SECONDS", 10.0)?,
                server_threads: env_number("WEBHOOK_LOAD_SERVER_THREADS", 1)?,
                client_threads: env_number("WEBHOOK_LOAD_CLIENT_THREADS", 2)?,
                webhook_log_level: std::env::var("WEBHOOK_LOAD_LOG_LEVEL")
                    .unwrap_or_else(|_| "Info".to_owned()),
                pin: env_flag("WEBHOOK_LOAD_PIN")?,
                echo_work: Duration::from_nanos(env_number_or_default(
                    "WEBHOOK_LOAD_ECHO_WORK_NS",
                    0,
                )?),
                machine_cpus,
            },
            Mode::Smoke => Settings {
                connections: 4,
                warm_up: Duration::from_millis(100),
                measure: Duration::from_millis(300),
                rate: 200,
                open_connections: 4,
                open_warm_up: Duration::from_millis(100),
                open_measure: Duration::from_millis(300),
                server_threads: 1,
                client_threads: 2,
                webhook_log_level: "Info".to_owned(),
                pin: false,
                echo_work: Duration::ZERO,
                machine_cpus,
            },
        })
    }
}

fn env_number<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr + PartialOrd + Default,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let value = env_number_or_default(name, default)?;
    ensure!(value > T::default(), "{name} must be above zero");
    Ok(value)
}

/// A number that may be zero.
fn env_number_or_default<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{name}={text:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// `1` or `0`, absent being `0`.
fn env_flag(name: &str) -> anyhow::Result<bool> {
    match std::env::var(name).as_deref().map(str::trim) {
        Err(_) | Ok("0") => Ok(false),
        Ok("1") => Ok(true),
        Ok(other) => bail!("{name}={other:?}: expected 1 or 0"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((first, rest)) if first == SERVE_ECHO => serve_echo(rest).map(|()| ExitCode::SUCCESS),
        _ => {
            // Criterion's convention: cargo passes `--bench` only when benchmarking.
            let mode = if args.iter().any(|arg| arg == "--bench") {
                Mode::Benchmark
            } else {
                Mode::Smoke
            };
            run(mode)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("webhook_load: {err:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The echo server

/// Serves `POST /mutate` with a fixed body on the webhook's own serving stack until the parent
/// closes our stdin (it ends, or dies).
fn serve_echo(args: &[String]) -> anyhow::Result<()> {
    let [addr, cert, key, body_bytes, work_ns, threads] = args else {
        bail!(
            "usage: webhook_load {SERVE_ECHO} ADDR CERT_FILE KEY_FILE BODY_BYTES WORK_NS THREADS"
        );
    };
    let threads: usize = threads
        .parse()
        .with_context(|| format!("bad thread count {threads}"))?;
    let work = Duration::from_nanos(
        work_ns
            .parse()
            .with_context(|| format!("bad work time {work_ns}"))?,
    );
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let body_bytes: usize = body_bytes
        .parse()
        .with_context(|| format!("bad body size {body_bytes}"))?;
    let files = CertFiles {
        cert: PathBuf::from(cert),
        key: PathBuf::from(key),
        ca: None,
    };
    let tls_config = Arc::new(tls::server_config(CertStore::new(files.load()?))?);

    let (parent_gone, parent_gone_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = parent_gone.send(());
    });

    // The webhook's own runtime, so that both servers are scheduled alike.
    let runtime = serving_runtime(threads).context("cannot start the runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let limits = Limits::default();
        let metrics = Arc::new(WebhookMetrics::register(&mut Registry::default()));
        let budget = BodyBudget::new(limits.body_budget, limits.body_limit, metrics.clone());
        let answer = Bytes::from(echo_body(body_bytes));
        let (body_limit, timeout) = (limits.body_limit, limits.connections.request_timeout);
        let app = Router::new().route(
            "/mutate",
            post(move |request: axum::extract::Request| {
                let answer = answer.clone();
                let budget = budget.clone();
                let metrics = metrics.clone();
                async move {
                    let version = request.version();
                    match body::read(request, body_limit, &budget, timeout).await {
                        Ok(read) => {
                            busy_wait(work);
                            drop(read);
                            ([(CONTENT_TYPE, "application/json")], answer).into_response()
                        }
                        Err(error) => refuse_body(&metrics, error, version),
                    }
                }
            }),
        );
        let connection_metrics = ConnMetrics::register(&mut Registry::default(), "admission");
        serve_tls(
            listener,
            tls_config,
            app,
            limits.connections,
            connection_metrics,
            async move {
                let _ = parent_gone_rx.await;
            },
        )
        .await
        .context("echo server failed")
    })
}

/// Spends `work` on the CPU (the calibration of `WEBHOOK_LOAD_ECHO_WORK_NS`).
fn busy_wait(work: Duration) {
    if work.is_zero() {
        return;
    }
    let started = Instant::now();
    while started.elapsed() < work {
        std::hint::spin_loop();
    }
}

/// A JSON body of exactly `size` bytes, shaped like an AdmissionReview answer.
fn echo_body(size: usize) -> Vec<u8> {
    let head = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"echo","allowed":true,"padding":""#;
    let tail = br#""}}"#;
    let Some(padding) = size.checked_sub(head.len() + tail.len()) else {
        return vec![b' '; size];
    };
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(head);
    body.resize(head.len() + padding, b'x');
    body.extend_from_slice(tail);
    body
}

// ---------------------------------------------------------------------------------------------
// The server processes

/// A server child process, killed and reaped when dropped so that no run leaves one behind.
struct ServerProcess {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts `command` with its output in `dir/<name>.log`.
    fn start(
        name: &'static str,
        mut command: Command,
        addr: SocketAddr,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        command.stdout(log_file.try_clone()?).stderr(log_file);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start the {name} server"))?;
        Ok(Self {
            name,
            child,
            addr,
            log,
        })
    }

    /// Fails with the server's own words when it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            bail!("the {} server exited ({status}):\n{tail}", self.name);
        }
        Ok(())
    }
}

struct Servers {
    webhook: ServerProcess,
    /// The webhook's plain-HTTP metrics port.
    webhook_health: SocketAddr,
    echo: ServerProcess,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

/// Keeps this process (the client; threads started later inherit it) on the first CPU.
fn pin_to_first_cpu(settings: &Settings) -> anyhow::Result<()> {
    ensure!(
        settings.machine_cpus >= 2,
        "WEBHOOK_LOAD_PIN=1 needs two CPUs"
    );
    ensure!(
        Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success()),
        "WEBHOOK_LOAD_PIN=1 needs `taskset` (Debian: util-linux)"
    );
    let mut first = rustix::thread::CpuSet::new();
    first.set(0);
    rustix::thread::sched_setaffinity(None, &first).context("cannot pin the client to CPU 0")
}

fn start_servers(settings: &Settings, answer_bytes: usize) -> anyhow::Result<Servers> {
    let binary = webhook_binary()?;
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let generated =
        ingress_tap::certs::generate(&[SERVER_NAME.into(), "127.0.0.1".into()], "webhook_load CA")?;
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &generated.cert_pem)?;
    std::fs::write(&key, &generated.key_pem)?;
    let threads = settings.server_threads;

    // Pinned, a server runs under `taskset`, which execs it on the second CPU.
    let server_command = |program: &Path| {
        if settings.pin {
            let mut command = Command::new("taskset");
            command.arg("--cpu-list").arg("1").arg(program);
            command
        } else {
            Command::new(program)
        }
    };

    let webhook_addr = free_port()?;
    let webhook_health = free_port()?;
    let mut command = server_command(&binary);
    command
        .arg("webhook")
        .arg("--listen")
        .arg(webhook_addr.to_string())
        .arg("--health-listen")
        .arg(webhook_health.to_string())
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--log-level")
        .arg(&settings.webhook_log_level)
        .arg("--worker-threads")
        .arg(threads.to_string())
        .env_remove("INGRESS_TAP_CONFIG")
        .stdin(Stdio::null());
    let webhook = ServerProcess::start("webhook", command, webhook_addr, dir.path())?;

    let echo_addr = free_port()?;
    let mut command = server_command(&std::env::current_exe()?);
    command
        .arg(SERVE_ECHO)
        .arg(echo_addr.to_string())
        .arg(&cert)
        .arg(&key)
        .arg(answer_bytes.to_string())
        .arg(settings.echo_work.as_nanos().to_string())
        .arg(threads.to_string())
        .stdin(Stdio::piped());
    let echo = ServerProcess::start("echo", command, echo_addr, dir.path())?;
    Ok(Servers {
        webhook,
        webhook_health,
        echo,
        ca_pem: generated.ca_pem,
        _dir: dir,
    })
}

// ---------------------------------------------------------------------------------------------
// The client

/// One server as the client sees it.
#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    tls: TlsConnector,
    review: Bytes,
    answer_bytes: usize,
}

impl Target {
    /// A new keep-alive HTTP/1.1 connection over verified TLS.
    async fn connect(&self) -> Result<Sender, CallError> {
        let (sender, _) = https_client::connect(self.addr, &self.tls).await?;
        Ok(sender)
    }

    /// Posts the review and checks the answer: 200 and the size of the webhook's answer.
    async fn call(&self, sender: &mut Sender) -> Result<Bytes, CallError> {
        let body = https_client::post_review(sender, self.review.clone()).await?;
        if body.len() != self.answer_bytes {
            return Err(CallError::Answer(format!(
                "{} bytes, expected {}",
                body.len(),
                self.answer_bytes
            )));
        }
        Ok(body)
    }
}

/// Waits until `server` answers a review, failing early if it exits or answers wrongly.
async fn wait_ready(server: &mut ServerProcess, target: &Target) -> anyhow::Result<Bytes> {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        server.check_alive()?;
        let attempt = async {
            let mut sender = target.connect().await?;
            target.call(&mut sender).await
        };
        match attempt.await {
            Ok(body) => return Ok(body),
            Err(err @ CallError::Answer(_)) if target.name == "webhook" => bail!(
                "the webhook's answer differs from this build's ({err}): \
                 the binary is stale, run cargo build --release first"
            ),
            Err(err) if Instant::now() >= deadline => {
                bail!("the {} server is not answering: {err}", target.name)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Counts shared by the client tasks of one phase.
#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn failed(&self, err: &CallError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| err.to_string());
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }
}

/// Sends the request again after a failure that broke the connection.
async fn reconnect_after(
    err: &CallError,
    target: &Target,
    sender: &mut Sender,
    counters: &Counters,
) -> bool {
    counters.failed(err);
    if !err.breaks_connection() {
        return true;
    }
    match target.connect().await {
        Ok(fresh) => {
            *sender = fresh;
            true
        }
        Err(err) => {
            counters.failed(&err);
            false
        }
    }
}

struct ClosedLoop {
    per_second: f64,
    errors: u64,
    first_error: Option<String>,
}

/// Maximum throughput: every connection sends its next request as soon as the answer is in.
async fn closed_loop(target: &Target, settings: &Settings) -> anyhow::Result<ClosedLoop> {
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections {
        // Connections are opened before the clock starts: handshakes are not reviews.
        let mut sender = target.connect().await?;
        let (target, counters, stop) = (target.clone(), counters.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match target.call(&mut sender).await {
                    Ok(_) => {
                        counters.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        if !reconnect_after(&err, &target, &mut sender, &counters).await {
                            return;
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(settings.warm_up).await;
    let (started, completed_before) = (Instant::now(), counters.completed.load(Ordering::Relaxed));
    tokio::time::sleep(settings.measure).await;
    let (ended, completed_after) = (Instant::now(), counters.completed.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(DRAIN_DEADLINE, task)
            .await
            .context("a client connection did not finish its last request")??;
    }
    let elapsed = ended.duration_since(started).as_secs_f64();
    Ok(ClosedLoop {
        per_second: (completed_after - completed_before) as f64 / elapsed,
        errors: counters.errors.load(Ordering::Relaxed),
        first_error: counters.first_error(),
    })
}

/// One answered request of the open loop.
struct Sample {
    due: Instant,
    sent: Instant,
    answered: Instant,
}

struct OpenLoop {
    /// From the time each request was due to its answer (coordinated omission corrected).
    latency: Percentiles,
    /// From the time each request was actually sent to its answer.
    service: Percentiles,
    achieved_per_second: f64,
    errors: u64,
    first_error: Option<String>,
}

/// Fixed rate: requests are due at evenly spaced times whether or not earlier ones are
/// answered, and queue for a free connection when all are busy.
async fn open_loop(target: &Target, settings: &Settings) -> anyhow::Result<OpenLoop> {
    let counters = Arc::new(Counters::default());
    let (due_tx, due_rx) = mpsc::unbounded_channel::<Instant>();
    let due_rx = Arc::new(tokio::sync::Mutex::new(due_rx));
    let mut tasks = Vec::with_capacity(settings.open_connections);
    for _ in 0..settings.open_connections {
        let mut sender = target.connect().await?;
        let (target, counters, due_rx) = (target.clone(), counters.clone(), due_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let next = due_rx.lock().await.recv().await;
                let Some(due) = next else { break };
                let sent = Instant::now();
                match target.call(&mut sender).await {
                    Ok(_) => samples.push(Sample {
                        due,
                        sent,
                        answered: Instant::now(),
                    }),
                    Err(err) => {
                        if !reconnect_after(&err, &target, &mut sender, &counters).await {
                            break;
                        }
                    }
                }
            }
            samples
        }));
    }

    // The schedule runs on its own thread with the OS's sleep: the runtime's timer ticks in
    // whole milliseconds, which would add up to a millisecond of lateness to every request.
    let interval = Duration::from_secs(1) / settings.rate;
    let total = ((settings.open_warm_up + settings.open_measure).as_secs_f64()
        * f64::from(settings.rate))
    .round() as u32;
    let start = Instant::now();
    let measured_from = start + settings.open_warm_up;
    let scheduler = tokio::task::spawn_blocking(move || {
        for index in 0..total {
            let due = start + interval * index;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if due_tx.send(due).is_err() {
                break;
            }
        }
    });

    let mut latency = Vec::new();
    let mut service = Vec::new();
    scheduler.await.context("the request schedule failed")?;
    for task in tasks {
        let samples = tokio::time::timeout(DRAIN_DEADLINE, task)
            .await
            .context("a client connection did not finish its last request")??;
        for sample in samples.into_iter().filter(|s| s.due >= measured_from) {
            latency.push(sample.answered.duration_since(sample.due));
            service.push(sample.answered.duration_since(sample.sent));
        }
    }
    let achieved_per_second = latency.len() as f64 / settings.open_measure.as_secs_f64();
    Ok(OpenLoop {
        latency: Percentiles::of(latency).context("no request answered in the open loop")?,
        service: Percentiles::of(service).context("no request answered in the open loop")?,
        achieved_per_second,
        errors: counters.errors.load(Ordering::Relaxed),
        first_error: counters.first_error(),
    })
}

struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` without samples.
    fn of(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort_unstable();
        let rank = |quantile: f64| {
            let index = (quantile * samples.len() as f64).ceil() as usize;
            samples.get(index.saturating_sub(1)).copied()
        };
        Some(Self {
            p50: rank(0.50)?,
            p90: rank(0.90)?,
            p99: rank(0.99)?,
            p999: rank(0.999)?,
            max: samples.last().copied()?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The run

struct Measured {
    closed: ClosedLoop,
    open: OpenLoop,
    /// The webhook's own mean of `review_duration_seconds` over the run: the time spent in
    /// `handler::review` under load, to set against the criterion figure of a hot loop.
    review_time: Option<Duration>,
}

/// Reads the webhook's review-duration histogram from its metrics port and returns the mean.
async fn mean_review_time(health: SocketAddr) -> anyhow::Result<Duration> {
    let tcp = TcpStream::connect(health)
        .await
        .context("cannot reach the webhook's metrics port")?;
    let (mut sender, connection) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = Request::get("/metrics")
        .header(HOST, "localhost")
        .body(Full::new(Bytes::new()))?;
    let body = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?;
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .with_context(|| format!("{name} missing from the webhook's metrics"))
    };
    let sum = value("ingress_tap_webhook_review_duration_seconds_sum ")?;
    let count = value("ingress_tap_webhook_review_duration_seconds_count ")?;
    ensure!(count > 0.0, "the webhook counted no review");
    Ok(Duration::from_secs_f64(sum / count))
}

fn run(mode: Mode) -> anyhow::Result<ExitCode> {
    let settings = Settings::for_mode(mode)?;
    let review = Bytes::from(admission_review::controller_review()?);
    let answer = handler::review(&review, &InjectConfig::default())
        .context("the benchmark review is rejected by this build")?;
    ensure!(
        answer.outcome == Outcome::Injected,
        "the benchmark review is not injected ({:?})",
        answer.outcome
    );
    let answer_bytes = answer.body.len();
    if settings.pin {
        pin_to_first_cpu(&settings)?;
    }
    let mut servers = start_servers(&settings, answer_bytes)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .enable_all()
        .build()
        .context("cannot start the client runtime")?;
    let tls = https_client::connector(&[&servers.ca_pem], true)?;
    let target = |name, server: &ServerProcess| Target {
        name,
        addr: server.addr,
        tls: tls.clone(),
        review: review.clone(),
        answer_bytes,
    };
    let webhook = target("webhook", &servers.webhook);
    let echo = target("echo", &servers.echo);

    let (webhook_result, echo_result) = runtime.block_on(async {
        let first_answer = wait_ready(&mut servers.webhook, &webhook).await?;
        check_injection(&first_answer)?;
        wait_ready(&mut servers.echo, &echo).await?;
        // Alternate the servers phase by phase, so that drift in the machine hits both.
        let echo_closed = closed_loop(&echo, &settings).await?;
        let webhook_closed = closed_loop(&webhook, &settings).await?;
        let echo_open = open_loop(&echo, &settings).await?;
        let webhook_open = open_loop(&webhook, &settings).await?;
        servers.webhook.check_alive()?;
        servers.echo.check_alive()?;
        let review_time = mean_review_time(servers.webhook_health).await?;
        anyhow::Ok((
            Measured {
                closed: webhook_closed,
                open: webhook_open,
                review_time: Some(review_time),
            },
            Measured {
                closed: echo_closed,
                open: echo_open,
                review_time: None,
            },
        ))
    })?;

    println!(
        "{}",
        report(
            mode,
            &settings,
            review.len(),
            answer_bytes,
            &webhook_result,
            &echo_result
        )
    );
    let errors = webhook_result.closed.errors
        + webhook_result.open.errors
        + echo_result.closed.errors
        + echo_result.open.errors;
    if errors > 0 {
        eprintln!("webhook_load: {errors} requests failed");
        return Ok(ExitCode::FAILURE);
    }
    if webhook_result.closed.per_second <= 0.0 || echo_result.closed.per_second <= 0.0 {
        eprintln!("webhook_load: no request completed in the closed loop");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The webhook's first answer must be an allowed review with a patch: anything else means
/// the load would measure a skip or a denial.
fn check_injection(body: &[u8]) -> anyhow::Result<()> {
    let answer: Value = serde_json::from_slice(body).context("the webhook's answer is not JSON")?;
    ensure!(
        answer["response"]["allowed"] == true && answer["response"]["patch"].is_string(),
        "the webhook did not inject: {answer}"
    );
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1e3)
}

fn report(
    mode: Mode,
    settings: &Settings,
    review_bytes: usize,
    answer_bytes: usize,
    webhook: &Measured,
    echo: &Measured,
) -> String {
    let cores = settings.machine_cpus;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nwebhook_load ({}): HTTPS on loopback, HTTP/1.1 keep-alive, TLS verified against the test CA",
        if mode == Mode::Benchmark { "benchmark" } else { "smoke pass" }
    );
    let _ = writeln!(
        out,
        "machine: {cores} logical CPUs, {}; {}",
        cpu_model(),
        if settings.pin {
            "client pinned to CPU 0, echo and webhook to CPU 1 (WEBHOOK_LOAD_PIN=1)"
        } else {
            "client, echo and webhook processes share them"
        }
    );
    if !settings.echo_work.is_zero() {
        let _ = writeln!(
            out,
            "echo handler busy-waits {} ns per request (WEBHOOK_LOAD_ECHO_WORK_NS): a calibration run",
            settings.echo_work.as_nanos()
        );
    }
    let _ =
        writeln!(
        out,
        "servers: {} each (--worker-threads {}); client: {} worker threads; webhook log level {}",
        if settings.server_threads <= 1 {
            "one thread, tokio current-thread runtime".to_owned()
        } else {
            format!("{} threads, tokio multi-thread runtime", settings.server_threads)
        },
        settings.server_threads,
        settings.client_threads,
        settings.webhook_log_level
    );
    let _ = writeln!(
        out,
        "request: {review_bytes}-byte AdmissionReview (ingress-nginx controller pod); answer: {answer_bytes} bytes from both servers"
    );
    let _ = writeln!(
        out,
        "\nclosed loop: {} connections, {:.1} s measured after {:.1} s warm-up",
        settings.connections,
        settings.measure.as_secs_f64(),
        settings.warm_up.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  {:<8} {:>12} {:>7}",
        "server", "requests/s", "errors"
    );
    for (name, measured) in [("echo", echo), ("webhook", webhook)] {
        let _ = writeln!(
            out,
            "  {:<8} {:>12.0} {:>7}",
            name, measured.closed.per_second, measured.closed.errors
        );
    }
    let _ = writeln!(
        out,
        "\nopen loop: {} requests/s over {} connections, {:.1} s measured after {:.1} s warm-up",
        settings.rate,
        settings.open_connections,
        settings.open_measure.as_secs_f64(),
        settings.open_warm_up.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  latency from the time each request was due (service time from the actual send in brackets)"
    );
    let _ = writeln!(
        out,
        "  {:<8} {:>8} {:>7} {:>22} {:>22} {:>22} {:>22} {:>22}",
        "server", "answer/s", "errors", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, measured) in [("echo", echo), ("webhook", webhook)] {
        let (latency, service) = (&measured.open.latency, &measured.open.service);
        let cell = |a: Duration, b: Duration| format!("{} ({})", millis(a), millis(b));
        let _ = writeln!(
            out,
            "  {:<8} {:>8.0} {:>7} {:>22} {:>22} {:>22} {:>22} {:>22}",
            name,
            measured.open.achieved_per_second,
            measured.open.errors,
            cell(latency.p50, service.p50),
            cell(latency.p90, service.p90),
            cell(latency.p99, service.p99),
            cell(latency.p999, service.p999),
            cell(latency.max, service.max),
        );
    }
    for (name, measured) in [("echo", echo), ("webhook", webhook)] {
        for error in [&measured.closed.first_error, &measured.open.first_error]
            .into_iter()
            .flatten()
        {
            let _ = writeln!(out, "  first {name} error: {error}");
        }
    }

    if let Some(review_time) = webhook.review_time {
        let _ = writeln!(
            out,
            "  webhook's own mean review time over the run (parse → decide → patch → serialise): {:.1} µs",
            review_time.as_secs_f64() * 1e6
        );
    }

    let _ = writeln!(
        out,
        "  webhook / echo throughput: {:.2} (reported, not a target)",
        webhook.closed.per_second / echo.closed.per_second
    );

    let errors = webhook.closed.errors + webhook.open.errors;
    let verdicts = [
        (
            webhook.closed.per_second >= TARGET_REVIEWS_PER_SECOND,
            format!(
                "{:.0} reviews/s (target ≥ {TARGET_REVIEWS_PER_SECOND:.0})",
                webhook.closed.per_second
            ),
        ),
        (
            webhook.open.latency.p99 < TARGET_P99,
            format!(
                "p99 {} at {}/s (target < {})",
                millis(webhook.open.latency.p99),
                settings.rate,
                millis(TARGET_P99)
            ),
        ),
        (errors == 0, format!("{errors} errors (target 0)")),
    ];
    let missed = verdicts.iter().filter(|(met, _)| !met).count();
    let summary: Vec<String> = verdicts
        .iter()
        .map(|(met, text)| match (mode, met) {
            (Mode::Benchmark, false) => format!("MISSED {text}"),
            _ => text.clone(),
        })
        .collect();
    let conclusion = match (mode, missed) {
        (Mode::Smoke, _) => "smoke pass only: targets apply to `cargo bench`".to_owned(),
        (Mode::Benchmark, 0) => "all targets met".to_owned(),
        (Mode::Benchmark, missed) => format!("{missed} target(s) missed"),
    };
    let _ = write!(
        out,
        "\nverdict: webhook {} → {conclusion}",
        summary.join("; ")
    );
    out
}
