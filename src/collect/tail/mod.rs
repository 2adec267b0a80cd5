//! Following the ingress log across rotations, truncations and restarts.
//!
//! nginx appends one line per write to a fixed path in a shared emptyDir; logrotate (or the
//! controller's own tooling) rotates it underneath. The [`Tailer`] hands out every complete line
//! exactly once, in file order, and records where it stopped in a [`Checkpoint`] so a restarted
//! collector neither loses nor repeats lines.
//!
//! # Identity
//!
//! A file is recognised by device and inode ([`FileIdentity`]), never by name: the name is what
//! rotation changes. Because inodes are reused and copytruncate keeps the inode while replacing
//! the content, the follower also remembers the file's first bytes (up to
//! [`checkpoint::FINGERPRINT_BYTES`]).
//!
//! # Where reading starts
//!
//! - First start, no checkpoint, file present: at the end, so old lines are not re-reported. A
//!   line still being written at that moment (bytes after the last newline) is new and will be
//!   delivered once complete — unless it is already longer than `max_line_bytes`, in which case
//!   its tail is skipped.
//! - File absent: nothing is read and nothing fails. The parent directory is watched (inotify,
//!   with a poll fallback; only the poll if the directory itself is missing). A file that appears
//!   later was created after we started, so it is read from its start.
//! - A valid checkpoint naming the file at the path, with a matching fingerprint: resume at the
//!   checkpoint offset.
//! - A valid checkpoint naming another file (rotated while we were down): if the checkpointed
//!   file is found among `<path>.1` … `<path>.5` (logrotate's numbering), its rest is finished
//!   first, then the files rotated after it, oldest first, then the file at the path from its
//!   start. Otherwise the file at the path is read from its start: it is newer than the
//!   checkpoint, so all of it is unreported.
//! - A checkpoint naming the file at the path whose fingerprint no longer matches (it was
//!   truncated while we were down): `<path>.1` is tried as a copytruncate copy (same
//!   fingerprint, different inode) and finished from the offset; the file is read from its start.
//! - A corrupt or unknown-version checkpoint is reported ([`Tailer::checkpoint_problem`]) and
//!   ignored. If it still names a device and inode, the follower knows the file it named was
//!   being followed but not how far, so it reads the current file from its start: duplicates are
//!   preferred to loss when the checkpoint is known to concern this log. If nothing can be read
//!   from it, it is treated as a first start (from the end), because re-reporting an arbitrary
//!   amount of history is worse than the gap.
//!
//! # Rename-and-create rotation
//!
//! When the path names a different file than the one being read, the old handle is kept: its
//! remaining lines are finished before the new file is read from its start. The old handle stays
//! open for `rotate_wait` after the switch, because a writer keeps appending to the old inode
//! until it reopens (nginx after `USR1`); lines written there in that window are still delivered,
//! though after lines already read from the new file.
//!
//! While nothing is at the path (renamed, not yet recreated; or deleted), the open handle is
//! finished and kept; a file that is created and rotated away again before we look is found at
//! `<path>.1` and read too.
//!
//! Several rotations between two reads: the intermediate files are found by walking `<path>.1`,
//! `<path>.2`, … (at most five) until the file we were reading turns up; those in between are read
//! whole, oldest first. This needs logrotate-style numbering with the files uncompressed
//! (`delaycompress`); if the file we were reading was compressed or deleted before we looked, or
//! more than five rotations happened, the intermediate files cannot be identified and are not
//! read (the file we held open is still finished).
//!
//! The checkpoint names one file: the one at the path, or — after a restart that found earlier
//! files to finish, until they have been read — the oldest of those. Late writes to a rotated
//! file that were not read before a restart are therefore not recovered.
//!
//! # copytruncate
//!
//! The inode stays, the content restarts. Truncation is detected when the file is shorter than
//! our read position, or when its first bytes differ from the ones we read (the file was
//! truncated and has already grown past our position again). We then restart at offset 0. Lines
//! already read are not read again; lines written after the truncate are read. The first bytes
//! are checked again after every chunk read, so a truncation that races with a read is caught
//! before bytes of the new generation are taken for the continuation of the old one.
//!
//! Lines written before the copy that we had not read yet are in the copy. If `<path>.1` starts
//! with the bytes we read (and is another inode, at least as long as our position), we finish
//! it from our position before reading the truncated file — so nothing before the copy is lost
//! as long as the copy is uncompressed and is still `<path>.1` when we look.
//!
//! Unavoidable: lines written between the copy and the truncate are in neither file and are lost
//! by any copytruncate reader; that is the mechanism's own race. Also, a truncation can only be
//! recognised once something of the file has been read (an empty first-bytes record matches
//! anything), and a truncation followed by regrowth to more than our position with the very
//! same first bytes is indistinguishable from appending (log lines carry timestamps, so this does
//! not happen in practice).
//!
//! # Lines
//!
//! Only `\n`-terminated lines are handed out, without the terminator; a partial line waits for
//! its newline (and is dropped if its file is rotated away or truncated before it completes). A
//! line longer than `max_line_bytes` is skipped and counted, and its bytes are discarded up to
//! the next newline instead of being buffered. Bytes are passed through as they are — the parser
//! deals with non-UTF-8.
//!
//! # Cost
//!
//! One reused 64 KiB buffer, positional reads, lines handed out as slices of that buffer; only a
//! line that straddles two reads is copied. Each [`Tailer::read_available`] reads at most up to
//! the sizes seen when it starts, so a fast writer cannot keep it from returning. When idle,
//! [`Tailer::changed`] sleeps until inotify reports activity in the directory or `poll_interval`
//! passes. File I/O in `read_available` is blocking (local files, short reads).

pub mod checkpoint;
mod file;
mod follow;
mod lines;
mod rotated;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use checkpoint::{Checkpoint, CheckpointError, Fingerprint};
pub use follow::{FromStartReason, StartPosition, Tailer};

/// Default longest line handed out; longer ones are skipped.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
/// Default fallback poll, for when inotify is unavailable or misses a change.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Default time a rotated file stays open for late writes.
pub const DEFAULT_ROTATE_WAIT: Duration = Duration::from_secs(5);

/// What to follow and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailConfig {
    /// The log path nginx writes to.
    pub path: PathBuf,
    /// Longest line handed out, newline excluded.
    pub max_line_bytes: usize,
    /// Longest wait in [`Tailer::changed`] without a notification.
    pub poll_interval: Duration,
    /// Where the checkpoint lives; its directory must exist and be writable (the atomic save
    /// writes a temporary file beside it).
    pub checkpoint_path: PathBuf,
    /// How long a rotated file stays open after the switch, for writers that reopen late.
    pub rotate_wait: Duration,
}

impl TailConfig {
    /// Defaults for following `path`, with the checkpoint next to it.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            checkpoint_path: Self::default_checkpoint_path(&path),
            path,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            poll_interval: DEFAULT_POLL_INTERVAL,
            rotate_wait: DEFAULT_ROTATE_WAIT,
        }
    }

    /// `<dir>/.<file>.ingress-tap-checkpoint`: hidden, beside the log, so it lives exactly as
    /// long as the shared emptyDir the log is in.
    pub fn default_checkpoint_path(path: &Path) -> PathBuf {
        let mut name = std::ffi::OsString::from(".");
        name.push(path.file_name().unwrap_or_else(|| "ingress.log".as_ref()));
        name.push(".ingress-tap-checkpoint");
        parent_directory(path).join(name)
    }
}

/// The directory holding `path`; `.` for a bare file name.
pub(crate) fn parent_directory(path: &Path) -> &Path {
    path.parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}

/// Device and inode: what stays the same for a file across renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub inode: u64,
}

impl FileIdentity {
    /// Identity from metadata.
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// What one [`Tailer::read_available`] call did; counters for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Complete lines handed out.
    pub lines: u64,
    /// Bytes read from files (including skipped and partial lines).
    pub bytes: u64,
    /// Lines skipped for exceeding `max_line_bytes`.
    pub oversized_lines_skipped: u64,
    /// Files switched away from because the path named another file (intermediate files found
    /// by the rotation walk count too).
    pub rotations: u64,
    /// Truncations detected (copytruncate or an emptied file).
    pub truncations: u64,
}

/// Failures of the follower. A missing log file is not one of them: it is waited for.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The configuration cannot work.
    #[error("invalid tail configuration: {0}")]
    InvalidConfig(&'static str),
    /// The log exists but cannot be opened (permissions, for instance).
    #[error("cannot open log file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// Reading or inspecting an open log file failed.
    #[error("cannot read log file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The checkpoint could not be written; the previous one (if any) is intact.
    #[error("cannot write checkpoint {path}: {source}")]
    CheckpointWrite {
        /// The checkpoint path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}
