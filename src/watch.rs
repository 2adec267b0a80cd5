//! File-change notification for hot-reloaded files (config, certificates, threat lists).
//!
//! Kubernetes mounts ConfigMaps and Secrets through a `..data` symlink that is swapped
//! atomically, so the watched path itself never sees a write: only its parent directory does.
//! The watcher therefore watches parent directories and, on any event, compares a cheap stamp
//! (identity, size, modification time, following symlinks) of each watched file with the last
//! one it reported. A periodic re-check covers file systems where inotify says nothing
//! (network volumes, overlay quirks) and directories that do not exist yet.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Settling time after an event, so that a writer's several steps (truncate, write, rename)
/// produce one reload rather than a reload of a half-written file.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);
/// How often the files are re-checked when no event arrives.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// What identifies a version of a file cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

/// Watches a set of files and resolves [`FileChanges::changed`] when any of them changes.
pub struct FileChanges {
    paths: Vec<PathBuf>,
    last: Vec<Option<Stamp>>,
    events: Arc<Notify>,
    poll: Duration,
    debounce: Duration,
    // Kept alive for as long as changes are wanted; dropping it stops the inotify watches.
    _watcher: Option<RecommendedWatcher>,
}

impl FileChanges {
    /// Starts watching `paths`. Missing files are fine: their appearance is a change.
    pub fn new(paths: &[PathBuf]) -> Self {
        Self::with_timing(paths, DEFAULT_DEBOUNCE, DEFAULT_POLL)
    }

    /// As [`FileChanges::new`], with explicit debounce and poll periods.
    pub fn with_timing(paths: &[PathBuf], debounce: Duration, poll: Duration) -> Self {
        let events = Arc::new(Notify::new());
        let watcher = Self::start_watcher(paths, events.clone());
        Self {
            paths: paths.to_vec(),
            last: paths.iter().map(|p| stamp(p)).collect(),
            events,
            poll,
            debounce,
            _watcher: watcher,
        }
    }

    fn start_watcher(paths: &[PathBuf], events: Arc<Notify>) -> Option<RecommendedWatcher> {
        let mut watcher = notify::recommended_watcher(move |_event| events.notify_one())
            .map_err(|err| tracing::warn!(%err, "inotify unavailable, polling only"))
            .ok()?;
        let dirs: BTreeSet<PathBuf> = paths
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d
                }
            })
            .collect();
        for dir in dirs {
            if let Err(err) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %dir.display(), %err, "cannot watch directory, polling it");
            }
        }
        Some(watcher)
    }

    /// Resolves once any watched file differs from what the previous call reported.
    /// Cancel-safe: a change seen by a cancelled call is reported by the next one.
    pub async fn changed(&mut self) {
        loop {
            tokio::select! {
                _ = self.events.notified() => {
                    tokio::time::sleep(self.debounce).await;
                }
                _ = tokio::time::sleep(self.poll) => {}
            }
            let now: Vec<Option<Stamp>> = self.paths.iter().map(|p| stamp(p)).collect();
            if now != self.last {
                self.last = now;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_a_write_and_a_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config.yaml");
        std::fs::write(&target, "a: 1\n").unwrap();
        let mut changes = FileChanges::with_timing(
            std::slice::from_ref(&target),
            Duration::from_millis(20),
            Duration::from_millis(200),
        );

        std::fs::write(&target, "a: 22\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("a write is reported");

        // The ConfigMap way: the file is a symlink whose target is replaced by a rename.
        let link = dir.path().join("linked.yaml");
        let first = dir.path().join("v1");
        let second = dir.path().join("v2");
        std::fs::write(&first, "v: 1\n").unwrap();
        std::fs::write(&second, "v: 2 longer\n").unwrap();
        std::os::unix::fs::symlink(&first, &link).unwrap();
        let mut changes = FileChanges::with_timing(
            std::slice::from_ref(&link),
            Duration::from_millis(20),
            Duration::from_millis(200),
        );
        let tmp_link = dir.path().join("tmp-link");
        std::os::unix::fs::symlink(&second, &tmp_link).unwrap();
        std::fs::rename(&tmp_link, &link).unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("a symlink swap is reported");
    }

    #[tokio::test]
    async fn a_missing_file_appearing_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.txt");
        let mut changes = FileChanges::with_timing(
            std::slice::from_ref(&path),
            Duration::from_millis(20),
            Duration::from_millis(200),
        );
        std::fs::write(&path, "x").unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("creation is reported");
    }
}
