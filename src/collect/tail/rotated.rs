//! Finding a file that was rotated away: logrotate's numbered names, searched by identity and
//! checked by the fingerprint of the bytes already read.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::checkpoint::{Fingerprint, FINGERPRINT_BYTES};
use super::FileIdentity;

use super::file::{open_if_possible, prefix_len, OpenedFile};

/// How many of logrotate's numbered names (`<path>.1` …) are searched for a file we lost sight
/// of. Rotations happen hourly or daily; five between two reads means the collector was down.
pub(super) const ROTATED_LOOKBACK: usize = 5;

/// logrotate's name for the `n`th previous generation: `<path>.<n>`.
pub(super) fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A file found among the numbered names, and the files rotated after it (oldest first).
pub(super) struct RotatedChain {
    pub(super) target: OpenedFile,
    pub(super) newer: Vec<OpenedFile>,
}

/// Walks `<path>.1`, `<path>.2`, … looking for `target`. Everything between `.1` and the target
/// was rotated after it. `skip` lists files already being read. `None` when the target is not
/// found. A missing name is stepped over rather than ending the walk: logrotate renames from the
/// highest number down, so a walk racing with it sees transient gaps; walking upward, the way
/// the files move, a file is then seen late or twice (deduplicated), never missed.
pub(super) fn find_rotated(
    path: &Path,
    target: FileIdentity,
    skip: &[FileIdentity],
) -> Option<RotatedChain> {
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
pub(super) fn prefix_matches(
    file: &File,
    offset: u64,
    fingerprint: Fingerprint,
) -> io::Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_appends_the_generation() {
        assert_eq!(
            numbered(Path::new("/var/log/x.log"), 2),
            PathBuf::from("/var/log/x.log.2")
        );
    }
}
