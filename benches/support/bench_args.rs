//! The command line every harness-less benchmark reads: `--bench` (as `cargo bench` passes it)
//! asks for the full run, and any other word names one scenario to run alone.
#![allow(dead_code)]

pub struct BenchArgs {
    /// `--bench` was passed: the full-size run, not the smoke run of `cargo test --benches`.
    pub full: bool,
    /// The scenarios named on the command line; empty when none were.
    pub only: Vec<String>,
}

impl BenchArgs {
    pub fn from_env() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        let only = args.into_iter().filter(|a| !a.starts_with("--")).collect();
        BenchArgs { full, only }
    }

    /// Whether `name` was named on the command line.
    pub fn names(&self, name: &str) -> bool {
        self.only.iter().any(|a| a == name)
    }

    /// Whether the scenario `name` runs: every scenario runs when none was named.
    pub fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.names(name)
    }
}
