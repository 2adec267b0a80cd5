//! File-change notification, the one place that talks to inotify: for hot-reloaded files
//! (config, certificates, threat lists) and for the collector's log directory.
//!
//! Both watch directories, not files. Kubernetes mounts ConfigMaps and Secrets through a
//! `..data` symlink that is swapped atomically, so the watched path itself never sees a write:
//! only its parent directory does; and a rotated log is a new file in the same directory. A
//! [`DirectoryWatch`] raises a [`WakeSignal`] on every relevant event and is set up again when
//! the directory appears or is replaced. [`FileChanges`] then compares a cheap stamp (identity,
//! size, modification time, following symlinks) of each watched file with the last one it
//! reported. A periodic re-check covers file systems where inotify says nothing (network
//! volumes, overlay quirks) and directories that do not exist yet.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A wake-up flag that survives a cancelled wait.
#[derive(Debug, Default)]
pub struct WakeSignal {
    /// Set on every relevant event and cleared by the waiter, so a notification that races
    /// with a cancelled wait is not lost.
    pending: AtomicBool,
    notify: Notify,
}

impl WakeSignal {
    fn raise(&self) {
        self.pending.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Returns at the next event, at once if one arrived since the last wait, or after
    /// `poll`, whichever comes first. Cancel-safe.
    pub async fn wait(&self, poll: Duration) {
        if self.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        tokio::select! {
            () = self.notify.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
        self.pending.swap(false, Ordering::AcqRel);
    }
}

/// inotify on one directory, raising a [`WakeSignal`] for the events a filter keeps.
#[derive(Default)]
pub struct DirectoryWatch {
    wake: Arc<WakeSignal>,
    watcher: Option<RecommendedWatcher>,
    /// Device and inode of the directory the watcher was set up for (`None`: missing, so only
    /// the poll runs).
    watched: Option<(u64, u64)>,
}

impl DirectoryWatch {
    /// The signal events raise.
    pub fn wake(&self) -> &Arc<WakeSignal> {
        &self.wake
    }

    /// Whether inotify is watching (otherwise only the caller's poll notices changes).
    pub fn is_watching(&self) -> bool {
        self.watcher.is_some()
    }

    /// (Re)creates the watch when `directory` appears or is replaced; cheap when it has not
    /// changed, so callers call it on every poll. A failure leaves the poll in charge until the
    /// directory changes identity. `relevant` decides which events wake.
    pub fn ensure(
        &mut self,
        directory: &Path,
        relevant: impl Fn(&notify::Result<notify::Event>) -> bool + Send + 'static,
    ) {
        let identity = std::fs::metadata(directory)
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .map(|meta| (meta.dev(), meta.ino()));
        if identity == self.watched {
            return;
        }
        self.watched = identity;
        self.watcher = None;
        if identity.is_none() {
            return;
        }
        let wake = Arc::clone(&self.wake);
        let handler = move |event: notify::Result<notify::Event>| {
            if relevant(&event) {
                wake.raise();
            }
        };
        let watcher = notify::recommended_watcher(handler).and_then(|mut watcher| {
            watcher.watch(directory, RecursiveMode::NonRecursive)?;
            Ok(watcher)
        });
        match watcher {
            Ok(watcher) => self.watcher = Some(watcher),
            Err(error) => tracing::warn!(
                %error,
                directory = %directory.display(),
                "cannot watch the directory; relying on polling"
            ),
        }
    }
}

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
    /// One watch per parent directory, all raising the same signal.
    directories: Vec<(PathBuf, DirectoryWatch)>,
    wake: Arc<WakeSignal>,
    poll: Duration,
    debounce: Duration,
}

impl FileChanges {
    /// Starts watching `paths`. Missing files are fine: their appearance is a change.
    pub fn new(paths: &[PathBuf]) -> Self {
        Self::with_timing(paths, DEFAULT_DEBOUNCE, DEFAULT_POLL)
    }

    /// As [`FileChanges::new`], with explicit debounce and poll periods.
    pub fn with_timing(paths: &[PathBuf], debounce: Duration, poll: Duration) -> Self {
        let parents: BTreeSet<PathBuf> = paths
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
        let wake = Arc::new(WakeSignal::default());
        let directories = parents
            .into_iter()
            .map(|dir| {
                let watch = DirectoryWatch {
                    wake: Arc::clone(&wake),
                    ..DirectoryWatch::default()
                };
                (dir, watch)
            })
            .collect();
        let mut changes = Self {
            paths: paths.to_vec(),
            last: paths.iter().map(|p| stamp(p)).collect(),
            directories,
            wake,
            poll,
            debounce,
        };
        changes.ensure_watches();
        changes
    }

    /// Any event in a watched directory is worth a look: the stamps decide.
    fn ensure_watches(&mut self) {
        for (dir, watch) in &mut self.directories {
            watch.ensure(dir, |_| true);
        }
    }

    /// Resolves once any watched file differs from what the previous call reported.
    /// Cancel-safe: a change seen by a cancelled call is reported by the next one.
    pub async fn changed(&mut self) {
        loop {
            self.wake.wait(self.poll).await;
            tokio::time::sleep(self.debounce).await;
            // A directory created or replaced since the last look is watched from now on.
            self.ensure_watches();
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
