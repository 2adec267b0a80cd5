//! The follower: open files, detect rotation and truncation, drain lines, wait for changes.
//!
//! The policy is described in the module docs of [`super`]; this file keeps the mechanics.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use notify::EventKind;

use crate::watch::DirectoryWatch;

use super::checkpoint::{
    self, Checkpoint, CheckpointError, Fingerprint, LoadedCheckpoint, FINGERPRINT_BYTES,
};
use super::lines::LineFramer;
use super::{parent_directory, FileIdentity, ReadStats, TailConfig, TailError};

/// Size of the one read buffer every file shares.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How many of logrotate's numbered names (`<path>.1` …) are searched for a file we lost sight
/// of. Rotations happen hourly or daily; five between two reads means the collector was down.
const ROTATED_LOOKBACK: usize = 5;
/// Rotated files kept open at most, whatever `rotate_wait` says, so a rotation storm cannot
/// exhaust file descriptors.
const MAX_RETIRED_FILES: usize = 8;

/// How the follower chose its first read position, for a log line and a metric at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// First start: following the existing file from its end.
    FromEnd,
    /// No file at the path yet; it will be read from its start when it appears.
    AwaitingFile,
    /// Resumed where the checkpoint left off. `earlier_files` files (the checkpointed file and
    /// those rotated after it, or a copytruncate copy) are finished first; the file at the path
    /// is then read from its start. With `earlier_files == 0` the file at the path is the
    /// checkpointed one and is resumed in place.
    Resumed {
        /// Files finished before the one at the path.
        earlier_files: usize,
    },
    /// Reading the file at the path from its start.
    FromStart(FromStartReason),
}

/// Why reading starts at offset 0 of the current file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromStartReason {
    /// The checkpoint names another file that could not be found: the current one is newer.
    CheckpointNamesAnotherFile,
    /// The checkpointed file was truncated or rewritten while we were down.
    ChangedInPlace,
    /// The checkpoint could not be used but named a file, so its offset is unknown.
    CheckpointUnusable,
}

/// Follows one log path. See the module docs of [`super`] for the guarantees.
pub struct Tailer {
    config: TailConfig,
    /// The file at the path, as far as we know.
    current: Option<FollowedFile>,
    /// Files rotated (or copied) away, oldest first, still drained before `current`.
    retired: VecDeque<FollowedFile>,
    buffer: Vec<u8>,
    watch: DirectoryWatch,
    start: StartPosition,
    checkpoint_problem: Option<CheckpointError>,
}

impl fmt::Debug for Tailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tailer")
            .field("path", &self.config.path)
            .field("current", &self.current)
            .field("retired", &self.retired)
            .field("watching", &self.watch.is_watching())
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl Tailer {
    /// Opens the follower, loading the checkpoint if there is one. A missing log file is fine;
    /// an unusable checkpoint is reported through [`Tailer::checkpoint_problem`].
    pub fn open(config: TailConfig) -> Result<Self, TailError> {
        if config.max_line_bytes == 0 {
            return Err(TailError::InvalidConfig(
                "max_line_bytes must be at least 1",
            ));
        }
        if config.poll_interval.is_zero() {
            return Err(TailError::InvalidConfig(
                "poll_interval must be positive, or an idle follower would spin",
            ));
        }
        if config.path.file_name().is_none() {
            return Err(TailError::InvalidConfig("the log path must name a file"));
        }
        let mut tailer = Self {
            config,
            current: None,
            retired: VecDeque::new(),
            buffer: vec![0; READ_CHUNK_BYTES],
            watch: DirectoryWatch::default(),
            start: StartPosition::AwaitingFile,
            checkpoint_problem: None,
        };
        tailer.ensure_watch();
        match checkpoint::load(&tailer.config.checkpoint_path) {
            LoadedCheckpoint::Missing => tailer.start_from_end()?,
            LoadedCheckpoint::Valid(saved) => tailer.resume(&saved)?,
            LoadedCheckpoint::Unusable { identity, problem } => {
                tracing::warn!(%problem, "ignoring the ingress log checkpoint");
                if identity.is_some() {
                    tailer.start_from_beginning(FromStartReason::CheckpointUnusable)?;
                } else {
                    tailer.start_from_end()?;
                }
                tailer.checkpoint_problem = Some(problem);
            }
        }
        Ok(tailer)
    }

    /// How the first read position was chosen.
    pub fn start_position(&self) -> StartPosition {
        self.start
    }

    /// The reason the checkpoint on disk was ignored, if it was.
    pub fn checkpoint_problem(&self) -> Option<&CheckpointError> {
        self.checkpoint_problem.as_ref()
    }

    /// Whether inotify watches the log directory (otherwise only the poll notices changes).
    pub fn is_watching(&self) -> bool {
        self.watch.is_watching()
    }

    /// Files held open: the current one plus rotated ones still being finished.
    pub fn open_files(&self) -> usize {
        self.retired.len() + usize::from(self.current.is_some())
    }

    /// Returns when the directory reports activity, or after `poll_interval`.
    ///
    /// Cancel-safe: a notification that arrives while this future is pending and then dropped
    /// is kept for the next call, and since [`Tailer::read_available`] reads everything there
    /// is regardless of notifications, a missed wake-up only costs latency up to one poll.
    pub async fn changed(&self) {
        self.watch.wake().wait(self.config.poll_interval).await;
    }

    /// Hands every complete line available now to `on_line`, in file order, handling rotation,
    /// truncation and the file appearing. Reads at most up to the sizes seen at the call's start.
    ///
    /// On error, the lines handed out before it stay handed out and positions stay consistent;
    /// calling again retries from there.
    pub fn read_available(
        &mut self,
        mut on_line: impl FnMut(&[u8]),
    ) -> Result<ReadStats, TailError> {
        let mut stats = ReadStats::default();
        self.ensure_watch();
        self.follow_path(&mut stats)?;
        self.drain_retired(&mut on_line, &mut stats)?;
        if self.drain_current(&mut on_line, &mut stats)? == DrainEnd::Truncated {
            // Truncated while we were reading it: the copy (if found) holds the rest of what we
            // were reading, so it goes first, then the file from its new start. A second
            // truncation within this call waits for the next one.
            self.handle_truncation(&mut stats);
            self.drain_retired(&mut on_line, &mut stats)?;
            self.drain_current(&mut on_line, &mut stats)?;
        }
        self.prune_retired(Instant::now());
        Ok(stats)
    }

    fn drain_retired(
        &mut self,
        on_line: &mut dyn FnMut(&[u8]),
        stats: &mut ReadStats,
    ) -> Result<(), TailError> {
        let Self {
            retired, buffer, ..
        } = self;
        for file in retired.iter_mut() {
            let end = file
                .drain(buffer, on_line, stats)
                .map_err(|e| read_error(&file.path, e))?;
            if end == DrainEnd::Truncated {
                // A rotated file emptied after rotation: whatever is written to it now starts
                // at 0 and is read next time.
                stats.truncations += 1;
                file.restart();
            }
        }
        Ok(())
    }

    fn drain_current(
        &mut self,
        on_line: &mut dyn FnMut(&[u8]),
        stats: &mut ReadStats,
    ) -> Result<DrainEnd, TailError> {
        let Self {
            current, buffer, ..
        } = self;
        let Some(file) = current.as_mut() else {
            return Ok(DrainEnd::CaughtUp);
        };
        file.drain(buffer, on_line, stats)
            .map_err(|e| read_error(&file.path, e))
    }

    /// Position just after the last line handed out; `None` before any file has been seen.
    ///
    /// Normally that is in the file at the path. Right after a restart that found earlier files
    /// to finish, and before they were read, it is the oldest of them: it is still at its rotated
    /// (or copy) name, so a second restart finds it again instead of skipping what it holds.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.retired
            .iter()
            .find(|file| !file.drained)
            .or(self.current.as_ref())
            .or(self.retired.back())
            .map(FollowedFile::checkpoint)
    }

    /// Writes [`Tailer::checkpoint`] atomically; does nothing before any file has been seen.
    pub fn save_checkpoint(&self) -> Result<(), TailError> {
        let Some(position) = self.checkpoint() else {
            return Ok(());
        };
        checkpoint::save(&self.config.checkpoint_path, &position).map_err(|source| {
            TailError::CheckpointWrite {
                path: self.config.checkpoint_path.clone(),
                source,
            }
        })
    }

    /// Bytes written but not yet read, over every open file; a file that cannot be inspected
    /// counts as 0.
    pub fn lag_bytes(&self) -> u64 {
        self.retired
            .iter()
            .chain(self.current.iter())
            .map(|file| {
                file.file
                    .metadata()
                    .map_or(0, |m| m.len().saturating_sub(file.read_offset))
            })
            .sum()
    }

    fn ensure_watch(&mut self) {
        let ignored = self
            .config
            .checkpoint_path
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        let ignored = ignored.as_bytes().to_vec();
        self.watch
            .ensure(parent_directory(&self.config.path), move |event| {
                is_relevant(event, &ignored)
            });
    }

    fn start_from_end(&mut self) -> Result<(), TailError> {
        let max = self.config.max_line_bytes;
        match open_existing(&self.config.path)? {
            Some(opened) => {
                let path = opened.path.clone();
                self.current =
                    Some(FollowedFile::at_end(opened, max).map_err(|e| read_error(&path, e))?);
                self.start = StartPosition::FromEnd;
            }
            None => self.start = StartPosition::AwaitingFile,
        }
        Ok(())
    }

    fn start_from_beginning(&mut self, reason: FromStartReason) -> Result<(), TailError> {
        let max = self.config.max_line_bytes;
        self.current = open_existing(&self.config.path)?.map(|f| FollowedFile::at_start(f, max));
        self.start = if self.current.is_some() {
            StartPosition::FromStart(reason)
        } else {
            StartPosition::AwaitingFile
        };
        Ok(())
    }

    fn resume(&mut self, saved: &Checkpoint) -> Result<(), TailError> {
        let max = self.config.max_line_bytes;
        let now = Instant::now();
        let at_path = open_existing(&self.config.path)?;

        if let Some(opened) = at_path.as_ref().filter(|f| f.identity == saved.identity) {
            let path = opened.path.clone();
            let unchanged = prefix_matches(&opened.file, saved.offset, saved.fingerprint)
                .map_err(|e| read_error(&path, e))?;
            let Some(opened) = at_path else {
                return Ok(());
            };
            if unchanged {
                self.current = Some(
                    FollowedFile::at_offset(opened, saved.offset, max)
                        .map_err(|e| read_error(&path, e))?,
                );
                self.start = StartPosition::Resumed { earlier_files: 0 };
                return Ok(());
            }
            let copy = self.find_checkpointed_copy(saved, opened.identity);
            self.current = Some(FollowedFile::at_start(opened, max));
            self.start = match copy {
                Some(copy) => {
                    self.retired.push_back(copy.retired_at(now));
                    StartPosition::Resumed { earlier_files: 1 }
                }
                None => StartPosition::FromStart(FromStartReason::ChangedInPlace),
            };
            return Ok(());
        }

        let skip: Vec<FileIdentity> = at_path.iter().map(|f| f.identity).collect();
        let chain = find_rotated(&self.config.path, saved.identity, &skip);
        self.current = at_path.map(|f| FollowedFile::at_start(f, max));
        self.start = if self.current.is_some() {
            StartPosition::FromStart(FromStartReason::CheckpointNamesAnotherFile)
        } else {
            StartPosition::AwaitingFile
        };
        let Some(chain) = chain else {
            return Ok(());
        };
        let target_path = chain.target.path.clone();
        let matches = prefix_matches(&chain.target.file, saved.offset, saved.fingerprint)
            .map_err(|e| read_error(&target_path, e))?;
        if !matches {
            return Ok(());
        }
        let resumed = FollowedFile::at_offset(chain.target, saved.offset, max)
            .map_err(|e| read_error(&target_path, e))?;
        self.retired.push_back(resumed.retired_at(now));
        let earlier_files = 1 + chain.newer.len();
        for newer in chain.newer {
            self.retired
                .push_back(FollowedFile::at_start(newer, max).retired_at(now));
        }
        self.start = StartPosition::Resumed { earlier_files };
        Ok(())
    }

    /// After a restart: a copytruncate copy of the checkpointed file at `<path>.1`, resumed at
    /// the checkpoint offset.
    fn find_checkpointed_copy(
        &self,
        saved: &Checkpoint,
        truncated: FileIdentity,
    ) -> Option<FollowedFile> {
        if saved.offset == 0 {
            // An empty prefix matches any file.
            return None;
        }
        let candidate = open_if_possible(&numbered(&self.config.path, 1))?;
        if candidate.identity == truncated || candidate.identity == saved.identity {
            return None;
        }
        if !prefix_matches(&candidate.file, saved.offset, saved.fingerprint).ok()? {
            return None;
        }
        FollowedFile::at_offset(candidate, saved.offset, self.config.max_line_bytes).ok()
    }

    /// Notices the file appearing, being replaced (rotation) or being truncated.
    fn follow_path(&mut self, stats: &mut ReadStats) -> Result<(), TailError> {
        let at_path = match fs::metadata(&self.config.path) {
            Ok(metadata) => FileIdentity::of(&metadata),
            // Renamed away and not recreated yet, or deleted: keep finishing the open handles.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.retire_rotated_while_missing(stats);
                return Ok(());
            }
            Err(source) => {
                return Err(TailError::Read {
                    path: self.config.path.clone(),
                    source,
                })
            }
        };
        match self.current.as_ref() {
            None => self.adopt_new_file(stats),
            Some(current) if current.identity == at_path => self.check_truncation(stats),
            Some(_) => self.switch_to_new_file(stats),
        }
    }

    /// A file appeared where there was none: created after we started (or after the
    /// checkpoint), so all of it is new.
    fn adopt_new_file(&mut self, stats: &mut ReadStats) -> Result<(), TailError> {
        let Some(opened) = open_existing(&self.config.path)? else {
            return Ok(());
        };
        // If we still hold rotated files (after a restart, or after the path went missing), the
        // newest of them is where we are; files rotated after it are finished first.
        if let Some(held) = self.retired.back().map(|f| f.identity) {
            self.retire_rotated_after(held, Some(opened.identity), stats);
        }
        self.current = Some(FollowedFile::at_start(opened, self.config.max_line_bytes));
        Ok(())
    }

    /// While nothing is at the path, files may still be created and rotated away (a writer
    /// that creates, writes, and is rotated again before we look). One stat of `<path>.1` per
    /// call tells whether anything newer than what we hold appeared there.
    fn retire_rotated_while_missing(&mut self, stats: &mut ReadStats) {
        let Some(held) = self
            .current
            .as_ref()
            .or(self.retired.back())
            .map(|f| f.identity)
        else {
            return;
        };
        let Ok(first) = fs::metadata(numbered(&self.config.path, 1)) else {
            return;
        };
        let first = FileIdentity::of(&first);
        if first == held || self.retired.iter().any(|f| f.identity == first) {
            return;
        }
        if let Some(current) = self.current.take() {
            self.retired.push_back(current.retired_at(Instant::now()));
            stats.rotations += 1;
        }
        self.retire_rotated_after(held, None, stats);
    }

    fn switch_to_new_file(&mut self, stats: &mut ReadStats) -> Result<(), TailError> {
        let max = self.config.max_line_bytes;
        let Some(opened) = open_existing(&self.config.path)? else {
            return Ok(());
        };
        let Some(old) = self.current.take() else {
            self.current = Some(FollowedFile::at_start(opened, max));
            return Ok(());
        };
        if opened.identity == old.identity {
            // Renamed back between the stat and the open.
            self.current = Some(old);
            return Ok(());
        }
        let held = old.identity;
        self.retired.push_back(old.retired_at(Instant::now()));
        stats.rotations += 1;
        self.retire_rotated_after(held, Some(opened.identity), stats);
        self.current = Some(FollowedFile::at_start(opened, max));
        Ok(())
    }

    /// Queues, oldest first, the files rotated after `held` that are still at numbered names,
    /// so that several rotations between two reads lose nothing.
    fn retire_rotated_after(
        &mut self,
        held: FileIdentity,
        new_current: Option<FileIdentity>,
        stats: &mut ReadStats,
    ) {
        let mut skip: Vec<FileIdentity> = self.retired.iter().map(|f| f.identity).collect();
        skip.extend(new_current);
        let Some(chain) = find_rotated(&self.config.path, held, &skip) else {
            return;
        };
        let now = Instant::now();
        for file in chain.newer {
            stats.rotations += 1;
            self.retired.push_back(
                FollowedFile::at_start(file, self.config.max_line_bytes).retired_at(now),
            );
        }
    }

    fn check_truncation(&mut self, stats: &mut ReadStats) -> Result<(), TailError> {
        let Some(current) = self.current.as_ref() else {
            return Ok(());
        };
        let truncated = current
            .changed_in_place()
            .map_err(|e| read_error(&current.path, e))?;
        if truncated {
            self.handle_truncation(stats);
        }
        Ok(())
    }

    /// The current file was truncated: queue its copy (if `<path>.1` is one) with our position
    /// and unfinished line, and restart the file at 0.
    fn handle_truncation(&mut self, stats: &mut ReadStats) {
        let Self {
            current,
            retired,
            config,
            ..
        } = self;
        let Some(current) = current.as_mut() else {
            return;
        };
        stats.truncations += 1;
        let copy = open_if_possible(&numbered(&config.path, 1)).filter(|candidate| {
            candidate.identity != current.identity
                && retired.iter().all(|f| f.identity != candidate.identity)
                && current.is_copied_in(&candidate.file)
        });
        if let Some(copy) = copy {
            retired.push_back(current.hand_over_to_copy(copy).retired_at(Instant::now()));
        }
        current.restart();
    }

    fn prune_retired(&mut self, now: Instant) {
        while self.retired.len() > MAX_RETIRED_FILES {
            self.retired.pop_front();
        }
        let wait = self.config.rotate_wait;
        self.retired.retain(|file| {
            let finished = file.read_offset >= file.last_size;
            let expired = file
                .retired_at
                .is_some_and(|since| now.saturating_duration_since(since) >= wait);
            !(finished && expired)
        });
    }
}

/// A file handle with the identity it had when opened (through `path`).
struct OpenedFile {
    file: File,
    identity: FileIdentity,
    path: PathBuf,
}

/// `None` when nothing is at `path`; other failures are errors the caller must see.
fn open_existing(path: &Path) -> Result<Option<OpenedFile>, TailError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TailError::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let metadata = file.metadata().map_err(|e| read_error(path, e))?;
    Ok(Some(OpenedFile {
        identity: FileIdentity::of(&metadata),
        file,
        path: path.to_path_buf(),
    }))
}

/// For best-effort lookups among rotated names, where any failure just means "not usable".
fn open_if_possible(path: &Path) -> Option<OpenedFile> {
    open_existing(path).ok().flatten()
}

fn read_error(path: &Path, source: io::Error) -> TailError {
    TailError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// logrotate's name for the `n`th previous generation: `<path>.<n>`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A file found among the numbered names, and the files rotated after it (oldest first).
struct RotatedChain {
    target: OpenedFile,
    newer: Vec<OpenedFile>,
}

/// Walks `<path>.1`, `<path>.2`, … looking for `target`. Everything between `.1` and the target
/// was rotated after it. `skip` lists files already being read. `None` when the target is not
/// found. A missing name is stepped over rather than ending the walk: logrotate renames from the
/// highest number down, so a walk racing with it sees transient gaps; walking upward, the way
/// the files move, a file is then seen late or twice (deduplicated), never missed.
fn find_rotated(path: &Path, target: FileIdentity, skip: &[FileIdentity]) -> Option<RotatedChain> {
    let mut newer: Vec<OpenedFile> = Vec::new();
    for n in 1..=ROTATED_LOOKBACK {
        let Some(candidate) = open_if_possible(&numbered(path, n)) else {
            continue;
        };
        if candidate.identity == target {
            newer.reverse();
            return Some(RotatedChain {
                target: candidate,
                newer,
            });
        }
        let known = skip.contains(&candidate.identity)
            || newer.iter().any(|f| f.identity == candidate.identity);
        if !known {
            newer.push(candidate);
        }
    }
    None
}

/// Whether `file` is at least `offset` long and its first `min(FINGERPRINT_BYTES, offset)`
/// bytes have `fingerprint`.
fn prefix_matches(file: &File, offset: u64, fingerprint: Fingerprint) -> io::Result<bool> {
    if file.metadata()?.len() < offset {
        return Ok(false);
    }
    let mut prefix = [0u8; FINGERPRINT_BYTES];
    let Some(prefix) = prefix.get_mut(..prefix_len(offset)) else {
        return Ok(false);
    };
    match file.read_exact_at(prefix, 0) {
        Ok(()) => Ok(Fingerprint::of(prefix) == fingerprint),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

/// `min(FINGERPRINT_BYTES, offset)` as a length.
fn prefix_len(offset: u64) -> usize {
    usize::try_from(offset).map_or(FINGERPRINT_BYTES, |o| o.min(FINGERPRINT_BYTES))
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrainEnd {
    /// Read up to the size seen at the start.
    CaughtUp,
    /// The file is shorter than our position or starts with other bytes than we read.
    Truncated,
}

/// One file being read, with its own line framing (a partial line belongs to its file).
struct FollowedFile {
    file: File,
    path: PathBuf,
    identity: FileIdentity,
    /// Next byte to read.
    read_offset: u64,
    /// Where the line being assembled starts: the checkpoint offset.
    line_start: u64,
    /// The file's first `min(FINGERPRINT_BYTES, read_offset)` bytes, as read.
    head: Vec<u8>,
    framer: LineFramer,
    max_line_bytes: usize,
    /// Size at the last drain, to tell when a retired file is finished.
    last_size: u64,
    /// When it stopped being the file at the path.
    retired_at: Option<Instant>,
    /// Whether a drain has completed since it was opened.
    drained: bool,
}

impl fmt::Debug for FollowedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowedFile")
            .field("path", &self.path)
            .field("identity", &self.identity)
            .field("read_offset", &self.read_offset)
            .field("line_start", &self.line_start)
            .field("pending", &self.framer.pending_len())
            .finish_non_exhaustive()
    }
}

impl FollowedFile {
    fn at_start(opened: OpenedFile, max_line_bytes: usize) -> Self {
        Self {
            file: opened.file,
            path: opened.path,
            identity: opened.identity,
            read_offset: 0,
            line_start: 0,
            head: Vec::new(),
            framer: LineFramer::new(max_line_bytes),
            max_line_bytes,
            last_size: 0,
            retired_at: None,
            drained: false,
        }
    }

    /// Positioned at `offset`. If the byte before it is not a newline, `offset` is inside a line
    /// and the rest of that line is dropped rather than handed out as a fragment.
    fn at_offset(opened: OpenedFile, offset: u64, max_line_bytes: usize) -> io::Result<Self> {
        let mut followed = Self::at_start(opened, max_line_bytes);
        let mut head = vec![0; prefix_len(offset)];
        followed.file.read_exact_at(&mut head, 0)?;
        if let Some(before) = offset.checked_sub(1) {
            let mut byte = [0u8; 1];
            followed.file.read_exact_at(&mut byte, before)?;
            if byte != [b'\n'] {
                followed.framer = LineFramer::mid_line(max_line_bytes);
            }
        }
        followed.head = head;
        followed.read_offset = offset;
        followed.line_start = offset;
        followed.last_size = offset;
        Ok(followed)
    }

    /// Positioned at the start of the last, unfinished line (after the last newline), so the
    /// line being written now is delivered but nothing complete from before is.
    fn at_end(opened: OpenedFile, max_line_bytes: usize) -> io::Result<Self> {
        let size = opened.file.metadata()?.len();
        let start = last_line_start(&opened.file, size, max_line_bytes)?;
        Self::at_offset(opened, start, max_line_bytes)
    }

    fn retired_at(mut self, now: Instant) -> Self {
        self.retired_at = Some(now);
        self
    }

    fn checkpoint(&self) -> Checkpoint {
        let covered = self
            .head
            .get(..prefix_len(self.line_start))
            .unwrap_or(&self.head);
        Checkpoint {
            identity: self.identity,
            offset: self.line_start,
            fingerprint: Fingerprint::of(covered),
        }
    }

    /// Shorter than what we read, or different first bytes: truncated (and maybe regrown).
    fn changed_in_place(&self) -> io::Result<bool> {
        if self.file.metadata()?.len() < self.read_offset {
            return Ok(true);
        }
        self.starts_differently(&self.file)
    }

    fn starts_differently(&self, file: &File) -> io::Result<bool> {
        if self.head.is_empty() {
            return Ok(false);
        }
        let mut probe = [0u8; FINGERPRINT_BYTES];
        let Some(probe) = probe.get_mut(..self.head.len()) else {
            return Ok(true);
        };
        match file.read_exact_at(probe, 0) {
            Ok(()) => Ok(*probe != *self.head),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
            Err(error) => Err(error),
        }
    }

    /// Whether `candidate` holds a copy of what this file held when we last read it: it starts
    /// with the same (non-empty) head and is at least as long as our position.
    fn is_copied_in(&self, candidate: &File) -> bool {
        if self.head.is_empty() {
            return false;
        }
        let long_enough = candidate
            .metadata()
            .is_ok_and(|m| m.len() >= self.read_offset);
        long_enough && matches!(self.starts_differently(candidate), Ok(false))
    }

    /// Moves our position and unfinished line over to `copy`, which then finishes what the
    /// truncation took from us.
    fn hand_over_to_copy(&mut self, copy: OpenedFile) -> FollowedFile {
        let framer = std::mem::replace(&mut self.framer, LineFramer::new(self.max_line_bytes));
        FollowedFile {
            file: copy.file,
            path: copy.path,
            identity: copy.identity,
            read_offset: self.read_offset,
            line_start: self.line_start,
            head: self.head.clone(),
            framer,
            max_line_bytes: self.max_line_bytes,
            last_size: self.read_offset,
            retired_at: None,
            drained: false,
        }
    }

    fn restart(&mut self) {
        self.read_offset = 0;
        self.line_start = 0;
        self.last_size = 0;
        self.head.clear();
        self.framer = LineFramer::new(self.max_line_bytes);
    }

    /// Reads from our position up to the size seen now, or until the file turns out to have
    /// been truncated (then nothing of the offending chunk is handed out).
    fn drain(
        &mut self,
        buffer: &mut [u8],
        on_line: &mut dyn FnMut(&[u8]),
        stats: &mut ReadStats,
    ) -> io::Result<DrainEnd> {
        let size = self.file.metadata()?.len();
        self.last_size = size;
        if size < self.read_offset {
            return Ok(DrainEnd::Truncated);
        }
        while self.read_offset < size {
            let chunk_start = self.read_offset;
            let read = match self.file.read_at(buffer, chunk_start) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            // A truncation racing with this loop would hand us the next generation's bytes at
            // our old offset (copytruncate, then the writer appending past it): the first bytes
            // tell, checked after the read so the chunk is known to predate any change.
            if self.starts_differently(&self.file)? {
                return Ok(DrainEnd::Truncated);
            }
            let Some(chunk) = buffer.get(..read) else {
                break;
            };
            self.remember_head(chunk);
            let outcome = self.framer.feed(chunk, on_line);
            if let Some(next) = outcome.next_line_start {
                self.line_start = chunk_start + next as u64;
            }
            self.read_offset = chunk_start + read as u64;
            stats.lines += outcome.lines;
            stats.oversized_lines_skipped += outcome.oversized;
            stats.bytes += read as u64;
        }
        self.last_size = self.last_size.max(self.read_offset);
        self.drained = true;
        Ok(DrainEnd::CaughtUp)
    }

    /// Keeps `head` equal to the first `min(FINGERPRINT_BYTES, read_offset)` bytes; `chunk` was
    /// read at `read_offset`.
    fn remember_head(&mut self, chunk: &[u8]) {
        let missing = FINGERPRINT_BYTES.saturating_sub(self.head.len());
        if missing > 0 {
            let take = missing.min(chunk.len());
            self.head
                .extend_from_slice(chunk.get(..take).unwrap_or_default());
        }
    }
}

/// Offset just after the last newline within the final `max_line_bytes + 1` bytes. Without one
/// there: 0 if the whole file is one short unfinished line, else `size` (mid-line: the line is
/// already too long to deliver).
fn last_line_start(file: &File, size: u64, max_line_bytes: usize) -> io::Result<u64> {
    let max = u64::try_from(max_line_bytes).unwrap_or(u64::MAX);
    let limit = size.saturating_sub(max.saturating_add(1));
    let mut window = vec![0u8; READ_CHUNK_BYTES];
    let mut end = size;
    while end > limit {
        let begin = end.saturating_sub(READ_CHUNK_BYTES as u64).max(limit);
        let Some(chunk) = usize::try_from(end - begin)
            .ok()
            .and_then(|len| window.get_mut(..len))
        else {
            break;
        };
        file.read_exact_at(chunk, begin)?;
        if let Some(newline) = memchr::memrchr(b'\n', chunk) {
            return Ok(begin + newline as u64 + 1);
        }
        end = begin;
    }
    Ok(if size <= max { 0 } else { size })
}

/// Opens, reads and closes (ours included) never add data; our own checkpoint writes live in
/// the same directory and must not wake us either.
fn is_relevant(event: &notify::Result<notify::Event>, ignored_name_prefix: &[u8]) -> bool {
    let Ok(event) = event else {
        // The watcher does not know what happened: look.
        return true;
    };
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    let ours = |path: &PathBuf| {
        !ignored_name_prefix.is_empty()
            && path
                .file_name()
                .is_some_and(|name| name.as_bytes().starts_with(ignored_name_prefix))
    };
    event.paths.is_empty() || !event.paths.iter().all(ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, ModifyKind};
    use std::io::Write;

    fn event(kind: EventKind, path: &str) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(PathBuf::from(path)))
    }

    #[test]
    fn own_checkpoint_writes_and_opens_do_not_wake() {
        let ignored = b".ingress.log.ingress-tap-checkpoint";
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(is_relevant(&event(modify, "/d/ingress.log"), ignored));
        assert!(is_relevant(
            &event(EventKind::Create(CreateKind::File), "/d/ingress.log"),
            ignored
        ));
        assert!(!is_relevant(
            &event(modify, "/d/.ingress.log.ingress-tap-checkpoint.tmp"),
            ignored
        ));
        assert!(!is_relevant(
            &event(EventKind::Access(AccessKind::Any), "/d/ingress.log"),
            ignored
        ));
        assert!(is_relevant(
            &Err(notify::Error::generic("overflow")),
            ignored
        ));
    }

    #[test]
    fn numbered_appends_the_generation() {
        assert_eq!(
            numbered(Path::new("/var/log/x.log"), 2),
            PathBuf::from("/var/log/x.log.2")
        );
    }

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut named = tempfile::NamedTempFile::new().unwrap();
        named.write_all(content).unwrap();
        let file = File::open(named.path()).unwrap();
        (named, file)
    }

    #[test]
    fn last_line_start_finds_the_unfinished_line() {
        let (_keep, file) = file_with(b"one\ntwo\nthr");
        assert_eq!(last_line_start(&file, 11, 64).unwrap(), 8);
        let (_keep, file) = file_with(b"one\ntwo\n");
        assert_eq!(last_line_start(&file, 8, 64).unwrap(), 8);
        let (_keep, file) = file_with(b"partial");
        assert_eq!(last_line_start(&file, 7, 64).unwrap(), 0);
        let (_keep, file) = file_with(b"one\nmuch too long");
        assert_eq!(last_line_start(&file, 16, 4).unwrap(), 16);
        let (_keep, file) = file_with(b"");
        assert_eq!(last_line_start(&file, 0, 4).unwrap(), 0);
    }

    #[test]
    fn last_line_start_scans_across_chunks() {
        let mut content = b"old\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', READ_CHUNK_BYTES + 10));
        let (_keep, file) = file_with(&content);
        let size = content.len() as u64;
        assert_eq!(
            last_line_start(&file, size, 2 * READ_CHUNK_BYTES).unwrap(),
            4
        );
        assert_eq!(last_line_start(&file, size, 100).unwrap(), size);
    }

    #[test]
    fn tailer_can_move_between_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tailer>();
    }
}
