//! `ingress-tap collect` as a child process of a benchmark: killing it when done, reading its
//! /metrics, waiting on a condition, and reading its memory and CPU time from /proc.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

/// A running `ingress-tap collect` child, killed when dropped.
pub struct Collector {
    pub child: Child,
    pub metrics_port: u16,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The collector's /metrics, read over a plain HTTP/1.0 request.
pub fn metrics_text(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nhost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// One unlabelled counter or gauge from the collector's /metrics.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    metrics_text(port)?
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Polls `condition` every `poll` until it holds; panics after `deadline`.
pub fn wait_for(deadline: Duration, poll: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "condition not reached in {deadline:?}"
        );
        std::thread::sleep(poll);
    }
}

/// A `/proc/<pid>/status` field in kB (`VmRSS:`, `VmHWM:`).
pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
}

/// CPU seconds (user + system, every thread) the process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, here indexed from field 3, in the
    // kernel's USER_HZ ticks, which Linux fixes at 100 for /proc.
    (ticks(11) + ticks(12)) / 100.0
}
