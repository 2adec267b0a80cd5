//! The webhook soak of `scripts/soak-webhook.sh`: the release binary serving certificate files
//! and a config file, a fixed rate of AdmissionReviews over TLS on loopback, and halfway
//! through a certificate rotation and a config reload, both by atomic file replacement as a
//! Secret or ConfigMap update does it.
//!
//! ```text
//! soak_webhook [--seconds 60] [--rate 2000] [--connections 32] [--reconnect-every 100]
//! ```
//!
//! - Open loop: requests are due at evenly spaced times whatever the answers do, and latency
//!   is measured from the time each was due, so a stall is charged to every request queued
//!   behind it.
//! - Each connection is replaced after `--reconnect-every` requests, so TLS handshakes run all
//!   along the run (about rate / reconnect-every per second) and the rotation is seen by new
//!   connections while old ones keep their session.
//! - The client trusts both the old and the new CA, as a caBundle does during a rotation, and
//!   records which certificate each handshake got. It resumes no TLS session (neither does
//!   the API server's client), so every handshake shows the certificate served at that time.
//! - Every answer must be byte for byte the answer of this build's handler under the old or
//!   the new config; anything else is an error, as is any transport failure or non-200.
//!
//! Prints one verdict line; exits 0 only with zero errors, every due request answered, the
//! new certificate served and the new config answering after the change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use ingress_tap::admission::handler;
use ingress_tap_core::inject::InjectConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

#[allow(dead_code)]
#[path = "../benches/support/admission_review.rs"]
mod admission_review;
#[allow(dead_code)]
#[path = "../benches/support/https_client.rs"]
mod https_client;

use https_client::{free_port, webhook_binary, CallError, Sender, SERVER_NAME};

/// How long the webhook may take to answer its first review.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long the clients may take to finish after the last request was due.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
const CONFIG_BEFORE: &str = "intervalSeconds: 5\nrequestsPerInterval: 5\n";
const CONFIG_AFTER: &str = "intervalSeconds: 7\nrequestsPerInterval: 9\n";

struct Settings {
    seconds: u64,
    rate: u32,
    connections: usize,
    reconnect_every: u64,
}

fn settings() -> anyhow::Result<Settings> {
    let mut settings = Settings {
        seconds: 60,
        rate: 2000,
        connections: 32,
        reconnect_every: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .with_context(|| format!("{flag} must be a whole number, not {value:?}"))
        };
        match flag.as_str() {
            "--seconds" => settings.seconds = number()?,
            "--rate" => settings.rate = u32::try_from(number()?)?,
            "--connections" => settings.connections = usize::try_from(number()?)?,
            "--reconnect-every" => settings.reconnect_every = number()?,
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(
        settings.seconds >= 4 && settings.rate > 0 && settings.connections > 0,
        "--seconds must be at least 4, --rate and --connections positive"
    );
    ensure!(
        settings.reconnect_every > 0,
        "--reconnect-every must be positive"
    );
    Ok(settings)
}

/// Writes `contents` to `path` by renaming a sibling over it, so a reader sees the old or the
/// new file, never a mix.
fn replace_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, contents)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot rename over {}", path.display()))
}

struct Webhook {
    child: Child,
    health: SocketAddr,
    log: PathBuf,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Webhook {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!("the webhook exited ({status}):\n{}", tail.join("\n"));
        }
        Ok(())
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }

    /// Sum of a metric's samples whose label text contains `labels`.
    async fn metric(&self, name: &str, labels: &str) -> anyhow::Result<f64> {
        let mut stream = TcpStream::connect(self.health).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok(text
            .lines()
            .filter(|line| line.starts_with(name) && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

/// What the client knows and counts.
struct Client {
    addr: SocketAddr,
    tls: TlsConnector,
    review: Bytes,
    answer_before: Bytes,
    answer_after: Bytes,
    new_certificate: CertificateDer<'static>,
    start: Instant,
    answers_after: AtomicU64,
    first_answer_after: Mutex<Option<Duration>>,
    handshakes_old: AtomicU64,
    handshakes_new: AtomicU64,
    first_handshake_new: Mutex<Option<Duration>>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

fn note_first(slot: &Mutex<Option<Duration>>, at: Duration) {
    if let Ok(mut first) = slot.lock() {
        first.get_or_insert(at);
    }
}

impl Client {
    async fn connect(&self) -> Result<Sender, CallError> {
        let (sender, served) = https_client::connect(self.addr, &self.tls).await?;
        if served.as_ref() == Some(&self.new_certificate) {
            self.handshakes_new.fetch_add(1, Ordering::Relaxed);
            note_first(&self.first_handshake_new, self.start.elapsed());
        } else {
            self.handshakes_old.fetch_add(1, Ordering::Relaxed);
        }
        Ok(sender)
    }

    async fn call(&self, sender: &mut Sender) -> Result<(), CallError> {
        let body = https_client::post_review(sender, self.review.clone()).await?;
        if body == self.answer_after {
            self.answers_after.fetch_add(1, Ordering::Relaxed);
            note_first(&self.first_answer_after, self.start.elapsed());
        } else if body != self.answer_before {
            return Err(CallError::Answer(format!(
                "{} bytes that neither config gives",
                body.len()
            )));
        }
        Ok(())
    }

    fn failed(&self, err: &CallError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| err.to_string());
        }
    }
}

/// One connection's loop: takes due times from the shared schedule, replaces its connection
/// every `reconnect_every` requests, and returns the latencies it measured.
async fn connection_loop(
    client: Arc<Client>,
    schedule: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Instant>>>,
    reconnect_every: u64,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut sender: Option<Sender> = None;
    let mut used = 0u64;
    loop {
        let next = schedule.lock().await.recv().await;
        let Some(due) = next else { break };
        if used >= reconnect_every {
            sender = None;
            used = 0;
        }
        let mut current = match sender.take() {
            Some(current) => current,
            None => match client.connect().await {
                Ok(fresh) => fresh,
                Err(err) => {
                    client.failed(&err);
                    continue;
                }
            },
        };
        match client.call(&mut current).await {
            Ok(()) => {
                latencies.push(due.elapsed());
                used += 1;
                sender = Some(current);
            }
            Err(err) => {
                client.failed(&err);
                // Keep the connection only when it is still usable.
                if !err.breaks_connection() {
                    used += 1;
                    sender = Some(current);
                }
            }
        }
    }
    latencies
}

fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    let index = (quantile * sorted.len() as f64).ceil() as usize;
    sorted
        .get(index.saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

async fn run(settings: Settings) -> anyhow::Result<bool> {
    let binary = webhook_binary()?;
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let names = [SERVER_NAME.to_owned(), "127.0.0.1".to_owned()];
    let before = ingress_tap::certs::generate(&names, "soak CA before rotation")?;
    let after = ingress_tap::certs::generate(&names, "soak CA after rotation")?;
    let (cert_path, key_path, config_path) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("config.yaml"),
    );
    replace_atomically(&cert_path, &before.cert_pem)?;
    replace_atomically(&key_path, &before.key_pem)?;
    replace_atomically(&config_path, CONFIG_BEFORE)?;

    let review = Bytes::from(admission_review::controller_review()?);
    let answer = |config: &str| -> anyhow::Result<Bytes> {
        let config = InjectConfig::from_yaml(config)?;
        Ok(Bytes::from(handler::review(&review, &config)?.body))
    };
    let (answer_before, answer_after) = (answer(CONFIG_BEFORE)?, answer(CONFIG_AFTER)?);
    ensure!(
        answer_before != answer_after,
        "the two configs give the same answer"
    );
    let new_certificate = CertificateDer::from_pem_slice(after.cert_pem.as_bytes())
        .context("the new certificate is not PEM")?;

    let (addr, health) = (free_port()?, free_port()?);
    let log = dir.path().join("webhook.log");
    let log_file = std::fs::File::create(&log)?;
    let child = Command::new(&binary)
        .arg("webhook")
        .args(["--listen", &addr.to_string()])
        .args(["--health-listen", &health.to_string()])
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .arg("--config")
        .arg(&config_path)
        .env_remove("INGRESS_TAP_CONFIG")
        .env_remove("LOG_LEVEL")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut webhook = Webhook { child, health, log };

    let client = Arc::new(Client {
        addr,
        tls: https_client::connector(&[&before.ca_pem, &after.ca_pem], false)?,
        review,
        answer_before,
        answer_after,
        new_certificate,
        start: Instant::now(),
        answers_after: AtomicU64::new(0),
        first_answer_after: Mutex::new(None),
        handshakes_old: AtomicU64::new(0),
        handshakes_new: AtomicU64::new(0),
        first_handshake_new: Mutex::new(None),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });

    // Ready: one review answered (not counted).
    let ready_by = Instant::now() + READY_DEADLINE;
    loop {
        webhook.check_alive()?;
        let attempt = async {
            let mut sender = client.connect().await?;
            client.call(&mut sender).await
        };
        match attempt.await {
            Ok(()) => break,
            Err(err) if Instant::now() >= ready_by => bail!("the webhook is not answering: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    client.handshakes_old.store(0, Ordering::Relaxed);
    let rss_start = webhook.rss_kib();

    let (due_tx, due_rx) = mpsc::unbounded_channel::<Instant>();
    let schedule = Arc::new(tokio::sync::Mutex::new(due_rx));
    let tasks: Vec<_> = (0..settings.connections)
        .map(|_| {
            tokio::spawn(connection_loop(
                client.clone(),
                schedule.clone(),
                settings.reconnect_every,
            ))
        })
        .collect();

    // The schedule runs on its own thread with the OS's sleep: the runtime's timer ticks in
    // whole milliseconds, which would add lateness to every request.
    let start = Instant::now();
    let total = settings.seconds * u64::from(settings.rate);
    let spacing = Duration::from_secs(1) / settings.rate;
    let scheduler = std::thread::spawn(move || {
        for index in 0..total {
            let due = start + spacing * u32::try_from(index).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if due_tx.send(due).is_err() {
                break;
            }
        }
    });

    let change_at = Duration::from_secs(settings.seconds / 2);
    tokio::time::sleep_until((start + change_at).into()).await;
    let changed_at = client.start.elapsed();
    replace_atomically(&cert_path, &after.cert_pem)?;
    replace_atomically(&key_path, &after.key_pem)?;
    replace_atomically(&config_path, CONFIG_AFTER)?;

    let schedule_done = tokio::task::spawn_blocking(move || scheduler.join());
    schedule_done
        .await
        .context("the schedule task failed")?
        .map_err(|_| anyhow::anyhow!("the schedule thread panicked"))?;
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for task in tasks {
        let measured = tokio::time::timeout(DRAIN_DEADLINE, task)
            .await
            .context("a connection did not finish its last request")??;
        latencies.extend(measured);
    }
    let elapsed = start.elapsed();
    webhook.check_alive()?;
    let rss_end = webhook.rss_kib();
    let certificate_reloads = webhook
        .metric("ingress_tap_webhook_certificate_reloads", "result=\"ok\"")
        .await?;
    let config_reloads = webhook
        .metric("ingress_tap_webhook_config_reloads", "result=\"ok\"")
        .await?;

    latencies.sort_unstable();
    let answered = latencies.len() as u64;
    let errors = client.errors.load(Ordering::Relaxed);
    let handshakes_new = client.handshakes_new.load(Ordering::Relaxed);
    let answers_after = client.answers_after.load(Ordering::Relaxed);
    let since_change = |slot: &Mutex<Option<Duration>>| {
        slot.lock()
            .ok()
            .and_then(|first| *first)
            .map_or("never".to_owned(), |at| {
                format!("{:.2} s", at.saturating_sub(changed_at).as_secs_f64())
            })
    };
    let pass = errors == 0
        && answered == total
        && handshakes_new > 0
        && answers_after > 0
        && certificate_reloads >= 1.0
        && config_reloads >= 1.0;
    println!(
        "soak-webhook: {} {answered}/{total} reviews answered at {} reviews/s over TLS in {:.1} s \
         ({} connections, each replaced every {} requests); errors={errors}; latency from due time \
         p50={} p99={} max={}; at {:.1} s certificate rotated (new certificate served {} later, \
         {handshakes_new} of {} handshakes; reloads ok={certificate_reloads}) and config replaced \
         (new answers {} later, {answers_after} of them; reloads ok={config_reloads}); \
         webhook RSS {} -> {} KiB",
        if pass { "PASS" } else { "FAIL" },
        settings.rate,
        elapsed.as_secs_f64(),
        settings.connections,
        settings.reconnect_every,
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.99)),
        millis(latencies.last().copied().unwrap_or_default()),
        changed_at.as_secs_f64(),
        since_change(&client.first_handshake_new),
        handshakes_new + client.handshakes_old.load(Ordering::Relaxed),
        since_change(&client.first_answer_after),
        rss_start.map_or("?".to_owned(), |kib| kib.to_string()),
        rss_end.map_or("?".to_owned(), |kib| kib.to_string()),
    );
    if let Some(first) = client
        .first_error
        .lock()
        .ok()
        .and_then(|first| first.clone())
    {
        eprintln!("first error: {first}");
    }
    Ok(pass)
}

fn main() -> ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{err:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("soak-webhook: FAIL: {err:#}");
            ExitCode::FAILURE
        }
    }
}
