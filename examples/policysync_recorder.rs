//! A stand-in Felix for soak runs and local trials: serves PolicySync on a Unix socket and
//! appends every report it accepts to a file, one JSON line each (the collector's stdout
//! format), so that stopping and starting it again loses nothing it recorded.
//!
//! ```text
//! cargo run --release --example policysync_recorder -- --socket /tmp/felix.sock --out reports.jsonl
//! ```
//!
//! SIGTERM or SIGINT stops it: in-flight calls finish, then the last reports are written.
//! The file is opened for appending, so a restarted recorder adds to what the previous one
//! wrote.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use ingress_tap::collect::stdout::write_reports;
use ingress_tap_test_support::felix_recorder::{serve, Recorder};
use tokio::signal::unix::{signal, SignalKind};

/// How often accepted reports are moved from memory to the file. A report is acknowledged
/// before it is written, so this bounds what a SIGKILL (not a SIGTERM) could lose.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

struct Arguments {
    socket: PathBuf,
    out: PathBuf,
}

fn arguments() -> anyhow::Result<Arguments> {
    let mut socket = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value)),
            "--out" => out = Some(PathBuf::from(value)),
            other => bail!("unknown argument {other}"),
        }
    }
    match (socket, out) {
        (Some(socket), Some(out)) => Ok(Arguments { socket, out }),
        _ => bail!("usage: policysync_recorder --socket PATH --out FILE"),
    }
}

fn append(out: &Path, recorder: &Recorder) -> anyhow::Result<usize> {
    let reports = recorder.take();
    if reports.is_empty() {
        return Ok(0);
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("cannot open {}", out.display()))?;
    let mut writer = BufWriter::new(file);
    write_reports(&mut writer, &reports)
        .with_context(|| format!("cannot write {}", out.display()))?;
    writer
        .into_inner()
        .map_err(|err| err.into_error())
        .and_then(|mut file| file.flush())
        .with_context(|| format!("cannot flush {}", out.display()))?;
    Ok(reports.len())
}

async fn run(arguments: Arguments) -> anyhow::Result<()> {
    let recorder = Recorder::default();
    let mut terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn({
        let recorder = recorder.clone();
        let socket = arguments.socket.clone();
        async move {
            serve(&socket, recorder, async {
                let _ = stopped.await;
            })
            .await
        }
    });

    let mut written = 0usize;
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => written += append(&arguments.out, &recorder)?,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            ended = &mut server => {
                // The server stops only when told to; ending early means it could not bind.
                ended.context("the PolicySync server task failed")?
                    .context("the PolicySync server failed")?;
                bail!("the PolicySync server stopped: cannot serve on {}", arguments.socket.display());
            }
        }
    }
    let _ = stop.send(());
    server
        .await
        .context("the PolicySync server task failed")?
        .context("the PolicySync server failed")?;
    written += append(&arguments.out, &recorder)?;
    eprintln!(
        "policysync_recorder: {written} reports appended to {}",
        arguments.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let arguments = match arguments() {
        Ok(arguments) => arguments,
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
    match runtime.block_on(run(arguments)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("policysync_recorder: {err:#}");
            ExitCode::FAILURE
        }
    }
}
