//! One file being followed: opened with the identity it had, drained line by line with its own
//! framing, checked for truncation and in-place rewrites, and handed over when copied.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::checkpoint::{Checkpoint, Fingerprint, FINGERPRINT_BYTES};
use super::lines::LineFramer;
use super::{FileIdentity, ReadStats, TailError};

/// Size of the one read buffer every file shares.
pub(super) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A file handle with the identity it had when opened (through `path`).
pub(super) struct OpenedFile {
    pub(super) file: File,
    pub(super) identity: FileIdentity,
    pub(super) path: PathBuf,
}

/// `None` when nothing is at `path`; other failures are errors the caller must see.
pub(super) fn open_existing(path: &Path) -> Result<Option<OpenedFile>, TailError> {
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
pub(super) fn open_if_possible(path: &Path) -> Option<OpenedFile> {
    open_existing(path).ok().flatten()
}

pub(super) fn read_error(path: &Path, source: io::Error) -> TailError {
    TailError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DrainEnd {
    /// Read up to the size seen at the start.
    CaughtUp,
    /// The file is shorter than our position or starts with other bytes than we read.
    Truncated,
}

/// One file being read, with its own line framing (a partial line belongs to its file).
pub(super) struct FollowedFile {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) identity: FileIdentity,
    /// Next byte to read.
    pub(super) read_offset: u64,
    /// Where the line being assembled starts: the checkpoint offset.
    pub(super) line_start: u64,
    /// The file's first `min(FINGERPRINT_BYTES, read_offset)` bytes, as read.
    pub(super) head: Vec<u8>,
    pub(super) framer: LineFramer,
    pub(super) max_line_bytes: usize,
    /// Size at the last drain, to tell when a retired file is finished.
    pub(super) last_size: u64,
    /// When it stopped being the file at the path.
    pub(super) retired_at: Option<Instant>,
    /// Whether a drain has completed since it was opened.
    pub(super) drained: bool,
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
    pub(super) fn at_start(opened: OpenedFile, max_line_bytes: usize) -> Self {
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
    pub(super) fn at_offset(
        opened: OpenedFile,
        offset: u64,
        max_line_bytes: usize,
    ) -> io::Result<Self> {
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
    pub(super) fn at_end(opened: OpenedFile, max_line_bytes: usize) -> io::Result<Self> {
        let size = opened.file.metadata()?.len();
        let start = last_line_start(&opened.file, size, max_line_bytes)?;
        Self::at_offset(opened, start, max_line_bytes)
    }

    pub(super) fn retired_at(mut self, now: Instant) -> Self {
        self.retired_at = Some(now);
        self
    }

    pub(super) fn checkpoint(&self) -> Checkpoint {
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
    pub(super) fn changed_in_place(&self) -> io::Result<bool> {
        if self.file.metadata()?.len() < self.read_offset {
            return Ok(true);
        }
        self.starts_differently(&self.file)
    }

    pub(super) fn starts_differently(&self, file: &File) -> io::Result<bool> {
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
    pub(super) fn is_copied_in(&self, candidate: &File) -> bool {
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
    pub(super) fn hand_over_to_copy(&mut self, copy: OpenedFile) -> FollowedFile {
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

    pub(super) fn restart(&mut self) {
        self.read_offset = 0;
        self.line_start = 0;
        self.last_size = 0;
        self.head.clear();
        self.framer = LineFramer::new(self.max_line_bytes);
    }

    /// Reads from our position up to the size seen now, or until the file turns out to have
    /// been truncated (then nothing of the offending chunk is handed out).
    pub(super) fn drain(
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
    pub(super) fn remember_head(&mut self, chunk: &[u8]) {
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
pub(super) fn last_line_start(file: &File, size: u64, max_line_bytes: usize) -> io::Result<u64> {
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

/// `min(FINGERPRINT_BYTES, offset)` as a length.
pub(super) fn prefix_len(offset: u64) -> usize {
    usize::try_from(offset).map_or(FINGERPRINT_BYTES, |o| o.min(FINGERPRINT_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
}
