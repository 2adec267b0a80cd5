//! The follower's checkpoint: which file, how far, and what its first bytes looked like.
//!
//! On disk it is one small versioned JSON object,
//! `{"version":1,"dev":…,"inode":…,"offset":…,"fingerprint":"<32 hex digits>"}`, replaced
//! atomically (temporary file in the same directory, fsync, rename, fsync of the directory) so a
//! crash leaves either the old or the new checkpoint, never a torn one.
//!
//! Device and inode alone are not enough to recognise a file after a restart: a deleted log's
//! inode is commonly reused by the next file created, and copytruncate keeps the inode while
//! replacing the content. The fingerprint — a hash of the file's first
//! `min(FINGERPRINT_BYTES, offset)` bytes, which are already-consumed, complete lines and so
//! cannot change while the file is merely appended to — tells those cases apart.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::FileIdentity;

/// How many leading bytes of a file its fingerprint covers at most. Enough to span several log
/// lines (each carries a timestamp and addresses), small enough to re-read on every check.
pub const FINGERPRINT_BYTES: usize = 256;

/// The checkpoint format this build writes and understands.
pub const CHECKPOINT_VERSION: u64 = 1;

/// Digest of a file's first bytes; see the module docs for why it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    /// Fingerprint of `prefix`, which the caller has cut to `min(FINGERPRINT_BYTES, offset)`.
    pub fn of(prefix: &[u8]) -> Self {
        let digest = Sha256::digest(prefix);
        let mut truncated = [0u8; 16];
        for (slot, byte) in truncated.iter_mut().zip(digest.iter()) {
            *slot = *byte;
        }
        Self(truncated)
    }

    /// Lower-case hex, as stored in the checkpoint file.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(32);
        for byte in self.0 {
            hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        hex
    }

    /// Parses the stored form; `None` unless it is exactly 32 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let (&high, &low) = (pair.first()?, pair.get(1)?);
            *slot = (hex_value(high)? << 4) | hex_value(low)?;
        }
        Some(Self(out))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Where to resume: the byte just after the last line handed out, in the file with this
/// identity and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Device and inode of the followed file.
    pub identity: FileIdentity,
    /// Offset of the first byte not yet handed out as part of a complete line.
    pub offset: u64,
    /// Fingerprint of the file's first `min(FINGERPRINT_BYTES, offset)` bytes.
    pub fingerprint: Fingerprint,
}

/// The serialized form; kept apart from [`Checkpoint`] so the file format can evolve by version
/// without reshaping the type the follower works with.
#[derive(Serialize, Deserialize)]
struct StoredV1 {
    version: u64,
    dev: u64,
    inode: u64,
    offset: u64,
    fingerprint: String,
}

/// Only the version, read first so that a future format is reported as such rather than as
/// malformed.
#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

/// Only the identity, salvaged from a checkpoint that is otherwise unusable.
#[derive(Deserialize)]
struct IdentityOnly {
    dev: u64,
    inode: u64,
}

/// Why a checkpoint on disk could not be used. Reported, never fatal: the follower then starts
/// as described in the module docs of [`super`].
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file exists but could not be read.
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        /// Checkpoint path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The content is not a version-1 checkpoint object.
    #[error("checkpoint {path} is malformed: {reason}")]
    Malformed {
        /// Checkpoint path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Written by a build with a different format.
    #[error(
        "checkpoint {path} has format version {found}; this build understands version {CHECKPOINT_VERSION}"
    )]
    UnsupportedVersion {
        /// Checkpoint path.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
    },
}

/// Result of reading the checkpoint file at start.
#[derive(Debug)]
pub enum LoadedCheckpoint {
    /// No checkpoint file: a first start.
    Missing,
    /// A usable checkpoint.
    Valid(Checkpoint),
    /// A checkpoint exists but cannot be trusted; `identity` is set when at least the file it
    /// named could be read from it.
    Unusable {
        /// The file the checkpoint named, if readable.
        identity: Option<FileIdentity>,
        /// Why it cannot be used.
        problem: CheckpointError,
    },
}

impl Checkpoint {
    /// The stored JSON form.
    pub fn to_json(&self) -> String {
        let stored = StoredV1 {
            version: CHECKPOINT_VERSION,
            dev: self.identity.dev,
            inode: self.identity.inode,
            offset: self.offset,
            fingerprint: self.fingerprint.to_hex(),
        };
        // A struct of integers and a hex string always serializes; the fallback keeps the
        // signature free of an impossible error.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Interprets stored bytes; `path` only labels errors.
    pub fn from_json(bytes: &[u8], path: &Path) -> LoadedCheckpoint {
        let salvage_identity = || {
            serde_json::from_slice::<IdentityOnly>(bytes)
                .ok()
                .map(|id| FileIdentity {
                    dev: id.dev,
                    inode: id.inode,
                })
        };
        let malformed = |reason: String| LoadedCheckpoint::Unusable {
            identity: salvage_identity(),
            problem: CheckpointError::Malformed {
                path: path.to_path_buf(),
                reason,
            },
        };
        let version = match serde_json::from_slice::<VersionOnly>(bytes) {
            Ok(v) => v.version,
            Err(error) => return malformed(error.to_string()),
        };
        if version != CHECKPOINT_VERSION {
            return LoadedCheckpoint::Unusable {
                identity: salvage_identity(),
                problem: CheckpointError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found: version,
                },
            };
        }
        let stored = match serde_json::from_slice::<StoredV1>(bytes) {
            Ok(stored) => stored,
            Err(error) => return malformed(error.to_string()),
        };
        let Some(fingerprint) = Fingerprint::from_hex(&stored.fingerprint) else {
            return malformed(format!(
                "fingerprint {:?} is not 32 hex digits",
                stored.fingerprint
            ));
        };
        LoadedCheckpoint::Valid(Checkpoint {
            identity: FileIdentity {
                dev: stored.dev,
                inode: stored.inode,
            },
            offset: stored.offset,
            fingerprint,
        })
    }
}

/// Reads the checkpoint at `path`.
pub fn load(path: &Path) -> LoadedCheckpoint {
    match fs::read(path) {
        Ok(bytes) => Checkpoint::from_json(&bytes, path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => LoadedCheckpoint::Missing,
        Err(source) => LoadedCheckpoint::Unusable {
            identity: None,
            problem: CheckpointError::Read {
                path: path.to_path_buf(),
                source,
            },
        },
    }
}

/// The temporary file a save writes before renaming it over the checkpoint: the checkpoint's
/// name with `.tmp` appended. Same directory, so the rename is atomic; a fixed name, so a crash
/// mid-save leaves one stale file at most.
pub fn temporary_path(checkpoint_path: &Path) -> PathBuf {
    let mut name = checkpoint_path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Replaces the checkpoint at `path` atomically and durably.
///
/// The log directory is shared with the ingress controller, so whatever sits at the temporary
/// name may have been planted there: a symlink would make a plain create-and-truncate write
/// through it into another file. The stale entry is removed (unlinking a symlink, never its
/// target) and the temporary file created with `O_EXCL | O_NOFOLLOW`, so a name that is
/// replanted in between fails the save (retried at the next one) instead of being followed.
pub fn save(path: &Path, checkpoint: &Checkpoint) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = temporary_path(path);
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(checkpoint.to_json().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    // The rename is durable only once the directory entry is: without this a power loss can
    // bring back the previous checkpoint, and the lines after it would be reported twice.
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            identity: FileIdentity {
                dev: 2049,
                inode: 131_077,
            },
            offset: 4096,
            fingerprint: Fingerprint::of(b"first line\n"),
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["dev"], 2049);
        assert_eq!(json["inode"], 131_077);
        assert_eq!(json["offset"], 4096);
        let fingerprint = json["fingerprint"].as_str().unwrap();
        assert_eq!(fingerprint.len(), 32);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn round_trips() {
        let path = Path::new("cp");
        match Checkpoint::from_json(sample().to_json().as_bytes(), path) {
            LoadedCheckpoint::Valid(loaded) => assert_eq!(loaded, sample()),
            other => panic!("expected a valid checkpoint, got {other:?}"),
        }
    }

    #[test]
    fn fingerprint_hex_round_trips_and_rejects_garbage() {
        let fingerprint = Fingerprint::of(b"abc");
        assert_eq!(
            Fingerprint::from_hex(&fingerprint.to_hex()),
            Some(fingerprint)
        );
        assert_ne!(Fingerprint::of(b"abc"), Fingerprint::of(b"abd"));
        assert_eq!(Fingerprint::from_hex("zz"), None);
        assert_eq!(Fingerprint::from_hex(&"g".repeat(32)), None);
        assert_eq!(Fingerprint::from_hex("é".repeat(16).as_str()), None);
    }

    #[test]
    fn future_version_is_reported_with_the_identity_it_names() {
        let bytes = br#"{"version":2,"dev":1,"inode":2,"position":{"bytes":3}}"#;
        match Checkpoint::from_json(bytes, Path::new("cp")) {
            LoadedCheckpoint::Unusable {
                identity,
                problem: CheckpointError::UnsupportedVersion { found: 2, .. },
            } => assert_eq!(identity, Some(FileIdentity { dev: 1, inode: 2 })),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn garbage_is_malformed_without_identity() {
        for bytes in [&b"\x00\xffnot json"[..], b"", b"[]", b"{\"version\":\"1\"}"] {
            match Checkpoint::from_json(bytes, Path::new("cp")) {
                LoadedCheckpoint::Unusable {
                    identity: None,
                    problem: CheckpointError::Malformed { .. },
                } => {}
                other => panic!("unexpected {other:?} for {bytes:?}"),
            }
        }
    }

    #[test]
    fn bad_fingerprint_keeps_the_identity() {
        let bytes = br#"{"version":1,"dev":5,"inode":6,"offset":7,"fingerprint":"xyz"}"#;
        match Checkpoint::from_json(bytes, Path::new("cp")) {
            LoadedCheckpoint::Unusable {
                identity: Some(FileIdentity { dev: 5, inode: 6 }),
                problem: CheckpointError::Malformed { .. },
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn save_replaces_atomically_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        save(&path, &sample()).unwrap();
        let mut second = sample();
        second.offset = 9000;
        save(&path, &second).unwrap();
        match load(&path) {
            LoadedCheckpoint::Valid(loaded) => assert_eq!(loaded, second),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!temporary_path(&path).exists());
        assert!(matches!(
            load(&dir.path().join("absent")),
            LoadedCheckpoint::Missing
        ));
    }

    #[test]
    fn a_planted_temporary_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, temporary_path(&path)).unwrap();
        save(&path, &sample()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
        assert!(matches!(load(&path), LoadedCheckpoint::Valid(_)));
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());

        // A dangling symlink and a stale regular file are replaced the same way.
        std::os::unix::fs::symlink(dir.path().join("nowhere"), temporary_path(&path)).unwrap();
        save(&path, &sample()).unwrap();
        assert!(!dir.path().join("nowhere").exists());
        fs::write(temporary_path(&path), b"stale").unwrap();
        save(&path, &sample()).unwrap();
        assert!(matches!(load(&path), LoadedCheckpoint::Valid(_)));
    }
}
