//! The follower: where to start, which file to read next when the log is rotated, truncated or
//! missing, the checkpoint, and waiting for changes.
//!
//! The policy is described in the module docs of [`super`]; one followed file's reading is in
//! `file.rs`, the search among rotated names in `rotated.rs`.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use notify::EventKind;

use crate::watch::DirectoryWatch;

use super::checkpoint::{self, Checkpoint, CheckpointError, LoadedCheckpoint};
use super::file::{
    open_existing, open_if_possible, read_error, DrainEnd, FollowedFile, READ_CHUNK_BYTES,
};
use super::rotated::{find_rotated, numbered, prefix_matches};
use super::{parent_directory, FileIdentity, ReadStats, TailConfig, TailError};

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
    fn tailer_can_move_between_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tailer>();
    }
}
