//! `ingress-tap inject`: the file and terminal side of offline injection.
//!
//! Exit codes let a pipeline tell "would change" apart from "cannot be injected":
//! 0 when the output is written (or, with `--check`, nothing would change), 1 when `--check`
//! finds a template to inject, 2 on any error (unreadable input or config, invalid YAML, a
//! template the engine refuses). Nothing is written when an error occurs.

use crate::cli::inject::InjectOptions;
use anyhow::Context;
use ingress_tap_core::workload::{inject_stream, Selection, TemplateOutcome};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code when `--check` finds something to inject.
pub const EXIT_WOULD_CHANGE: u8 = 1;
/// Exit code on any error.
pub const EXIT_ERROR: u8 = 2;

/// Runs `ingress-tap inject` and returns the process exit code.
pub fn run(options: &InjectOptions) -> ExitCode {
    match execute(options) {
        Ok(would_change) if options.check && would_change => ExitCode::from(EXIT_WOULD_CHANGE),
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "ingress-tap inject: {}",
                crate::telemetry::error_chain(&error)
            );
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Returns whether any template was (or, with `--check`, would be) injected.
fn execute(options: &InjectOptions) -> anyhow::Result<bool> {
    let config = crate::inject_config::load(options.config.as_ref())?;
    let input = read_input(&options.file)?;
    let selection = if options.all {
        Selection::All
    } else {
        Selection::OptedIn
    };
    let injection = inject_stream(&input, &config, selection)?;

    let mut stderr = std::io::stderr().lock();
    for report in &injection.templates {
        let verb = if options.check {
            "would inject"
        } else {
            "injected"
        };
        // Reporting is best effort: a closed stderr must not fail the injection.
        let _ = match &report.outcome {
            TemplateOutcome::Injected => writeln!(stderr, "{}: {verb}", report.location),
            TemplateOutcome::Skipped(reason) => {
                writeln!(stderr, "{}: skipped ({})", report.location, reason.as_str())
            }
            TemplateOutcome::NotOptedIn => writeln!(
                stderr,
                "{}: not selected (no label ingress-tap/inject: enabled; see --all)",
                report.location
            ),
            TemplateOutcome::NoTemplate => {
                writeln!(stderr, "{}: no pod template", report.location)
            }
        };
    }

    if !options.check {
        match &options.output {
            Some(path) => std::fs::write(path, &injection.output)
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(injection.output.as_bytes())
                    .and_then(|()| stdout.flush())
                    .context("cannot write to standard output")?;
            }
        }
    }
    Ok(injection.changed())
}

fn read_input(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
    }
}
