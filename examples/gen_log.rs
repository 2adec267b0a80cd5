//! Writes the pipeline benchmark's synthetic ingress log to a file, so the collector can be
//! timed against `wc -l` on identical bytes:
//!
//! ```text
//! cargo run --release --example gen_log -- /tmp/ingress.log 1000000
//! time wc -l /tmp/ingress.log
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::process::ExitCode;

#[path = "../benches/support/synthetic_log.rs"]
mod synthetic_log;

/// The benchmark's seed, so the file holds the very lines the benchmark measures.
const SEED: u64 = 0x1e55_1e55;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, lines) = match args.as_slice() {
        [path, lines] => match lines.parse::<u64>() {
            Ok(lines) => (path, lines),
            Err(error) => {
                eprintln!("LINES must be a whole number: {error}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: gen_log PATH LINES");
            return ExitCode::from(2);
        }
    };
    let result = File::create(path).and_then(|file| {
        let mut out = BufWriter::new(file);
        synthetic_log::write_log(&mut out, lines, SEED)?;
        out.into_inner()
            .map_err(|error| error.into_error())?
            .sync_all()
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cannot write {path}: {error}");
            ExitCode::FAILURE
        }
    }
}
