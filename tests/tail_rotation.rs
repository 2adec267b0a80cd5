//! The log follower against real files: start positions, line framing, rename and copytruncate
//! rotation with a concurrent writer, restarts from checkpoints, and a model-based property test
//! over random sequences of writes, rotations, truncations, reads and restarts.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingress_tap::collect::tail::{FromStartReason, ReadStats, StartPosition, TailConfig, Tailer};
use proptest::prelude::*;

/// Generous bound for anything that waits on the filesystem or another thread.
const DEADLINE: Duration = Duration::from_secs(30);

fn log_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("ingress.log")
}

fn config(path: &Path) -> TailConfig {
    let mut config = TailConfig::new(path);
    config.poll_interval = Duration::from_millis(20);
    config
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// logrotate's numbering: `.k` → `.k+1` for the kept generations, the oldest falls off.
fn shift_rotated(path: &Path, keep: usize) {
    for n in (1..keep).rev() {
        let from = numbered(path, n);
        if from.exists() {
            fs::rename(&from, numbered(path, n + 1)).unwrap();
        }
    }
}

/// `create` rotation: the file moves to `.1`; nothing is at the path until someone creates it.
fn rename_rotate(path: &Path) {
    shift_rotated(path, 6);
    fs::rename(path, numbered(path, 1)).unwrap();
}

fn copytruncate(path: &Path) {
    shift_rotated(path, 6);
    fs::copy(path, numbered(path, 1)).unwrap();
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

fn read(tailer: &mut Tailer) -> (Vec<String>, ReadStats) {
    let mut lines = Vec::new();
    let stats = tailer
        .read_available(|line| lines.push(String::from_utf8_lossy(line).into_owned()))
        .unwrap();
    (lines, stats)
}

/// Reads until at least `count` lines arrived, waiting on `changed()` in between; panics at the
/// deadline.
async fn read_until(tailer: &mut Tailer, count: usize) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut lines = Vec::new();
    loop {
        lines.extend(read(tailer).0);
        if lines.len() >= count {
            return lines;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            tokio::time::timeout(remaining, tailer.changed())
                .await
                .is_ok(),
            "only {} of {count} lines before the deadline: {lines:?}",
            lines.len()
        );
    }
}

fn strings(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Where reading starts

#[test]
fn first_start_follows_from_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"old 1\nold 2\n");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    assert_eq!(tailer.start_position(), StartPosition::FromEnd);
    assert_eq!(read(&mut tailer).0, Vec::<String>::new());
    append(&path, b"new 1\n");
    assert_eq!(read(&mut tailer).0, strings(&["new 1"]));
}

#[test]
fn line_being_written_at_first_start_is_delivered_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"old\nhalf of a ");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    assert_eq!(read(&mut tailer).0, Vec::<String>::new());
    append(&path, b"line\n");
    assert_eq!(read(&mut tailer).0, strings(&["half of a line"]));
}

#[tokio::test]
async fn missing_file_is_awaited_through_inotify_and_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let mut config = config(&path);
    // So long that only a notification can end the wait before the deadline.
    config.poll_interval = Duration::from_secs(3600);
    let mut tailer = Tailer::open(config).unwrap();
    assert_eq!(tailer.start_position(), StartPosition::AwaitingFile);
    assert!(tailer.is_watching());
    assert_eq!(read(&mut tailer).0, Vec::<String>::new());
    assert_eq!(tailer.open_files(), 0);

    append(&path, b"first\nsecond\n");
    assert!(tokio::time::timeout(DEADLINE, tailer.changed())
        .await
        .is_ok());
    assert_eq!(
        read_until(&mut tailer, 2).await,
        strings(&["first", "second"])
    );
}

#[tokio::test]
async fn missing_directory_is_polled_then_watched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-yet").join("ingress.log");
    let mut config = config(&path);
    config.checkpoint_path = dir.path().join("checkpoint");
    let mut tailer = Tailer::open(config).unwrap();
    assert!(!tailer.is_watching());
    assert_eq!(read(&mut tailer).0, Vec::<String>::new());

    fs::create_dir(dir.path().join("not-yet")).unwrap();
    append(&path, b"hello\n");
    assert_eq!(read_until(&mut tailer, 1).await, strings(&["hello"]));
    assert!(tailer.is_watching());
}

#[tokio::test]
async fn idle_follower_sleeps_until_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"old\n");
    let mut config = config(&path);
    config.poll_interval = Duration::from_secs(3600);
    let mut tailer = Tailer::open(config).unwrap();
    read(&mut tailer);
    tailer.save_checkpoint().unwrap();
    // Nothing changed (our own checkpoint write does not count): the wait must not end.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), tailer.changed())
            .await
            .is_err(),
        "changed() returned although nothing happened"
    );
    append(&path, b"new\n");
    assert!(tokio::time::timeout(DEADLINE, tailer.changed())
        .await
        .is_ok());
    assert_eq!(read(&mut tailer).0, strings(&["new"]));
}

#[tokio::test]
async fn cancelled_wait_does_not_swallow_a_later_notification() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut config = config(&path);
    config.poll_interval = Duration::from_secs(3600);
    let mut tailer = Tailer::open(config).unwrap();
    // A wait polled once and dropped, as `select!` does when another branch wins.
    assert!(tokio::time::timeout(Duration::ZERO, tailer.changed())
        .await
        .is_err());
    append(&path, b"x\n");
    assert!(tokio::time::timeout(DEADLINE, tailer.changed())
        .await
        .is_ok());
    assert_eq!(read(&mut tailer).0, strings(&["x"]));
}

// ---------------------------------------------------------------------------------------------
// Lines

#[test]
fn partial_line_waits_for_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"complete\nincompl");
    assert_eq!(read(&mut tailer).0, strings(&["complete"]));
    assert_eq!(read(&mut tailer).0, Vec::<String>::new());
    append(&path, b"ete");
    assert_eq!(read(&mut tailer).0, Vec::<String>::new());
    append(&path, b"\n");
    assert_eq!(read(&mut tailer).0, strings(&["incomplete"]));
}

#[test]
fn over_long_line_is_skipped_and_counted_and_following_lines_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut config = config(&path);
    config.max_line_bytes = 16;
    let mut tailer = Tailer::open(config).unwrap();

    append(&path, format!("{}\nshort\n", "x".repeat(100)).as_bytes());
    let (lines, stats) = read(&mut tailer);
    assert_eq!(lines, strings(&["short"]));
    assert_eq!(stats.oversized_lines_skipped, 1);
    assert_eq!(stats.lines, 1);

    // A long line arriving in pieces, across reads, is dropped as it grows.
    let mut skipped = 0;
    for _ in 0..20 {
        append(&path, b"yyyyyyyyyy");
        let (lines, stats) = read(&mut tailer);
        assert!(lines.is_empty());
        skipped += stats.oversized_lines_skipped;
    }
    append(&path, b"yyy\nafter\n");
    let (lines, stats) = read(&mut tailer);
    assert_eq!(lines, strings(&["after"]));
    assert_eq!(skipped + stats.oversized_lines_skipped, 1);
    // Exactly 16 bytes is still a line.
    append(&path, b"0123456789abcdef\n");
    assert_eq!(read(&mut tailer).0, strings(&["0123456789abcdef"]));
}

#[test]
fn garbage_bytes_are_passed_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    let garbage: &[u8] = b"\xff\xfe\x00tigera_secure_ee_ingress: {\xc3\x28}\r";
    append(&path, garbage);
    append(&path, b"\n\n");
    let mut lines = Vec::new();
    let stats = tailer
        .read_available(|line| lines.push(line.to_vec()))
        .unwrap();
    assert_eq!(lines, vec![garbage.to_vec(), Vec::new()]);
    assert_eq!(stats.bytes, garbage.len() as u64 + 2);
}

#[test]
fn large_volume_is_read_in_order_across_buffer_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    let mut content = String::new();
    for n in 0..50_000 {
        content.push_str(&format!("line {n:07} {}\n", "p".repeat(n % 37)));
    }
    append(&path, content.as_bytes());
    assert!(tailer.lag_bytes() > 0);
    let (lines, stats) = read(&mut tailer);
    assert_eq!(lines.len(), 50_000);
    for (n, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("line {n:07} ")), "{line}");
    }
    assert_eq!(stats.bytes, content.len() as u64);
    assert_eq!(tailer.lag_bytes(), 0);
}

// ---------------------------------------------------------------------------------------------
// Rename-and-create rotation

fn numbers(lines: &[String]) -> Vec<u64> {
    lines.iter().map(|line| line.parse().unwrap()).collect()
}

#[tokio::test]
async fn rename_rotation_under_a_concurrent_writer_loses_and_repeats_nothing() {
    const TOTAL: u64 = 4000;
    const PER_FILE: u64 = 1000;
    /// Lines the writer still appends to the renamed file before reopening, as nginx does
    /// until it gets USR1.
    const LATE: u64 = 3;

    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();

    let writer_path = path.clone();
    let writer = std::thread::spawn(move || {
        let open = |p: &Path| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)
                .unwrap()
        };
        let mut file = open(&writer_path);
        let mut n = 0;
        while n < TOTAL {
            file.write_all(format!("{n:08}\n").as_bytes()).unwrap();
            n += 1;
            if n % PER_FILE == 0 && n < TOTAL {
                rename_rotate(&writer_path);
                for _ in 0..LATE {
                    file.write_all(format!("{n:08}\n").as_bytes()).unwrap();
                    n += 1;
                }
                file = open(&writer_path);
            }
        }
    });

    let lines = read_until(&mut tailer, TOTAL as usize).await;
    writer.join().unwrap();
    assert_eq!(numbers(&lines), (0..TOTAL).collect::<Vec<_>>());
    assert_eq!(read(&mut tailer).0, Vec::<String>::new());
}

#[test]
fn rotated_file_is_finished_before_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"a1\n");
    assert_eq!(read(&mut tailer).0, strings(&["a1"]));
    append(&path, b"a2\na3\n");
    rename_rotate(&path);
    append(&path, b"b1\n");
    let (lines, stats) = read(&mut tailer);
    assert_eq!(lines, strings(&["a2", "a3", "b1"]));
    assert_eq!(stats.rotations, 1);
}

#[test]
fn late_writes_to_the_rotated_file_are_delivered_within_rotate_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    let mut old = OpenOptions::new().append(true).open(&path).unwrap();
    rename_rotate(&path);
    append(&path, b"new 1\n");
    assert_eq!(read(&mut tailer).0, strings(&["new 1"]));
    assert_eq!(tailer.open_files(), 2);
    old.write_all(b"late\n").unwrap();
    assert_eq!(read(&mut tailer).0, strings(&["late"]));
}

#[test]
fn rotated_file_is_closed_after_rotate_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut config = config(&path);
    config.rotate_wait = Duration::ZERO;
    let mut tailer = Tailer::open(config).unwrap();
    append(&path, b"old\n");
    rename_rotate(&path);
    append(&path, b"new\n");
    assert_eq!(read(&mut tailer).0, strings(&["old", "new"]));
    assert_eq!(tailer.open_files(), 1);
}

#[test]
fn several_rotations_between_two_reads_are_all_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"a1\n");
    assert_eq!(read(&mut tailer).0, strings(&["a1"]));
    append(&path, b"a2\n");
    rename_rotate(&path);
    append(&path, b"b1\n");
    rename_rotate(&path);
    append(&path, b"c1\nc2\n");
    rename_rotate(&path);
    append(&path, b"d1\n");
    let (lines, stats) = read(&mut tailer);
    assert_eq!(lines, strings(&["a2", "b1", "c1", "c2", "d1"]));
    assert_eq!(stats.rotations, 3);
}

#[test]
fn file_deleted_and_recreated_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"one\n");
    assert_eq!(read(&mut tailer).0, strings(&["one"]));
    fs::remove_file(&path).unwrap();
    assert_eq!(read(&mut tailer).0, Vec::<String>::new());
    append(&path, b"two\n");
    assert_eq!(read(&mut tailer).0, strings(&["two"]));
}

// ---------------------------------------------------------------------------------------------
// copytruncate

#[test]
fn truncation_restarts_at_zero_and_unread_lines_come_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"l1\nl2\n");
    assert_eq!(read(&mut tailer).0, strings(&["l1", "l2"]));
    append(&path, b"l3\nl4\n");
    copytruncate(&path);
    append(&path, b"l5\n");
    let (lines, stats) = read(&mut tailer);
    assert_eq!(lines, strings(&["l3", "l4", "l5"]));
    assert_eq!(stats.truncations, 1);
    assert_eq!(stats.rotations, 0);
}

#[test]
fn truncation_to_the_same_size_is_recognised_by_the_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"aaaa\n");
    assert_eq!(read(&mut tailer).0, strings(&["aaaa"]));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&path, b"bbbb\ncc\n");
    let (lines, stats) = read(&mut tailer);
    assert_eq!(lines, strings(&["bbbb", "cc"]));
    assert_eq!(stats.truncations, 1);
}

#[tokio::test]
async fn copytruncate_under_a_concurrent_writer_is_exact() {
    const ROUNDS: u64 = 5;
    const BURST: u64 = 400;
    const TOTAL: u64 = ROUNDS * 2 * BURST;

    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    let seen = Arc::new(AtomicU64::new(0));

    let writer_path = path.clone();
    let writer_seen = Arc::clone(&seen);
    let writer = std::thread::spawn(move || {
        let mut file = OpenOptions::new().append(true).open(&writer_path).unwrap();
        let mut n = 0;
        for round in 0..ROUNDS {
            let generation_start = n;
            for _ in 0..BURST {
                file.write_all(format!("{n:08}\n").as_bytes()).unwrap();
                n += 1;
            }
            // A truncation is recognisable only once something of this generation was read
            // (see the module docs); wait for that, then write a burst the reader has most
            // likely not seen before the copy, so the copy is what delivers it.
            let deadline = Instant::now() + DEADLINE;
            while writer_seen.load(Ordering::Acquire) <= generation_start {
                assert!(Instant::now() < deadline, "reader made no progress");
                std::thread::sleep(Duration::from_millis(1));
            }
            for _ in 0..BURST {
                file.write_all(format!("{n:08}\n").as_bytes()).unwrap();
                n += 1;
            }
            if round + 1 < ROUNDS {
                // logrotate's window: the writer is paused between copy and truncate.
                copytruncate(&writer_path);
            }
        }
    });

    let deadline = Instant::now() + DEADLINE;
    let mut lines = Vec::new();
    let mut truncations = 0;
    while (lines.len() as u64) < TOTAL {
        let (more, stats) = read(&mut tailer);
        truncations += stats.truncations;
        lines.extend(more);
        seen.store(lines.len() as u64, Ordering::Release);
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            tokio::time::timeout(remaining, tailer.changed())
                .await
                .is_ok(),
            "only {} lines before the deadline",
            lines.len()
        );
    }
    writer.join().unwrap();
    assert_eq!(numbers(&lines), (0..TOTAL).collect::<Vec<_>>());
    assert_eq!(truncations, ROUNDS - 1);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

fn reopen(tailer: Tailer, path: &Path) -> Tailer {
    tailer.save_checkpoint().unwrap();
    drop(tailer);
    Tailer::open(config(path)).unwrap()
}

#[test]
fn restart_resumes_with_exactly_the_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"r1\nr2\npart");
    assert_eq!(read(&mut tailer).0, strings(&["r1", "r2"]));
    let checkpoint = tailer.checkpoint().unwrap();
    assert_eq!(
        checkpoint.offset, 6,
        "the unfinished line is not checkpointed"
    );

    let mut tailer = reopen(tailer, &path);
    assert_eq!(
        tailer.start_position(),
        StartPosition::Resumed { earlier_files: 0 }
    );
    append(&path, b"ial\nr3\n");
    assert_eq!(read(&mut tailer).0, strings(&["partial", "r3"]));

    let stored: serde_json::Value =
        serde_json::from_slice(&fs::read(TailConfig::default_checkpoint_path(&path)).unwrap())
            .unwrap();
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["offset"], 6);
}

#[test]
fn restart_across_rotations_finishes_the_old_files_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"a1\n");
    assert_eq!(read(&mut tailer).0, strings(&["a1"]));
    tailer.save_checkpoint().unwrap();
    drop(tailer);

    append(&path, b"a2\n");
    rename_rotate(&path);
    append(&path, b"b1\n");
    rename_rotate(&path);
    append(&path, b"c1\n");

    let tailer = Tailer::open(config(&path)).unwrap();
    assert_eq!(
        tailer.start_position(),
        StartPosition::Resumed { earlier_files: 2 }
    );
    // A second restart before anything was read must still find the old files.
    let mut tailer = reopen(tailer, &path);
    assert_eq!(
        tailer.start_position(),
        StartPosition::Resumed { earlier_files: 2 }
    );
    assert_eq!(read(&mut tailer).0, strings(&["a2", "b1", "c1"]));
    append(&path, b"c2\n");
    assert_eq!(read(&mut tailer).0, strings(&["c2"]));
}

#[test]
fn restart_while_the_new_file_does_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"a1\n");
    assert_eq!(read(&mut tailer).0, strings(&["a1"]));
    tailer.save_checkpoint().unwrap();
    drop(tailer);
    append(&path, b"a2\n");
    rename_rotate(&path);

    let mut tailer = Tailer::open(config(&path)).unwrap();
    assert_eq!(
        tailer.start_position(),
        StartPosition::Resumed { earlier_files: 1 }
    );
    assert_eq!(read(&mut tailer).0, strings(&["a2"]));
    append(&path, b"b1\n");
    assert_eq!(read(&mut tailer).0, strings(&["b1"]));
}

#[test]
fn restart_after_copytruncate_while_down_reads_the_copy_then_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"l1\nl2\n");
    assert_eq!(read(&mut tailer).0, strings(&["l1", "l2"]));
    tailer.save_checkpoint().unwrap();
    drop(tailer);
    append(&path, b"l3\n");
    copytruncate(&path);
    append(&path, b"l4\n");

    let mut tailer = Tailer::open(config(&path)).unwrap();
    assert_eq!(
        tailer.start_position(),
        StartPosition::Resumed { earlier_files: 1 }
    );
    assert_eq!(read(&mut tailer).0, strings(&["l3", "l4"]));
}

#[test]
fn file_rewritten_in_place_while_down_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut tailer = Tailer::open(config(&path)).unwrap();
    append(&path, b"first generation line\n");
    read(&mut tailer);
    tailer.save_checkpoint().unwrap();
    drop(tailer);
    let mut file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(0).unwrap();
    file.write_all(b"SECOND generation, longer than the first\n")
        .unwrap();

    let mut tailer = Tailer::open(config(&path)).unwrap();
    assert_eq!(
        tailer.start_position(),
        StartPosition::FromStart(FromStartReason::ChangedInPlace)
    );
    assert_eq!(
        read(&mut tailer).0,
        strings(&["SECOND generation, longer than the first"])
    );
}

#[test]
fn checkpoint_naming_a_vanished_file_reads_the_current_one_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let tailer = Tailer::open(config(&path)).unwrap();
    tailer.save_checkpoint().unwrap();
    drop(tailer);
    // The replacement is created while the old file still exists, so it gets another inode.
    let replacement = dir.path().join("replacement");
    fs::write(&replacement, b"all new\n").unwrap();
    fs::rename(&replacement, &path).unwrap();
    let mut tailer = Tailer::open(config(&path)).unwrap();
    assert_eq!(
        tailer.start_position(),
        StartPosition::FromStart(FromStartReason::CheckpointNamesAnotherFile)
    );
    assert_eq!(read(&mut tailer).0, strings(&["all new"]));
}

#[test]
fn corrupt_checkpoint_is_reported_and_reading_starts_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"old\n");
    fs::write(TailConfig::default_checkpoint_path(&path), b"{\"versi").unwrap();
    let mut tailer = Tailer::open(config(&path)).unwrap();
    assert!(tailer.checkpoint_problem().is_some());
    assert_eq!(tailer.start_position(), StartPosition::FromEnd);
    append(&path, b"new\n");
    assert_eq!(read(&mut tailer).0, strings(&["new"]));
}

#[test]
fn unknown_version_naming_this_file_reads_it_from_its_start() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"kept 1\nkept 2\n");
    let metadata = fs::metadata(&path).unwrap();
    fs::write(
        TailConfig::default_checkpoint_path(&path),
        format!(
            r#"{{"version":7,"dev":{},"inode":{},"cursor":"opaque"}}"#,
            metadata.dev(),
            metadata.ino()
        ),
    )
    .unwrap();
    let mut tailer = Tailer::open(config(&path)).unwrap();
    let problem = tailer.checkpoint_problem().unwrap().to_string();
    assert!(problem.contains("version 7"), "{problem}");
    assert_eq!(
        tailer.start_position(),
        StartPosition::FromStart(FromStartReason::CheckpointUnusable)
    );
    assert_eq!(read(&mut tailer).0, strings(&["kept 1", "kept 2"]));
}

#[test]
fn checkpoint_save_fails_cleanly_when_its_directory_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    append(&path, b"");
    let mut config = config(&path);
    config.checkpoint_path = dir.path().join("missing").join("cp");
    let tailer = Tailer::open(config).unwrap();
    let error = tailer.save_checkpoint().unwrap_err().to_string();
    assert!(error.contains("cannot write checkpoint"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Model-based property test

const MODEL_MAX_LINE: usize = 64;

#[derive(Debug, Clone)]
enum Op {
    Line,
    LongLine,
    Partial,
    Rotate { create: bool },
    Truncate,
    CopyTruncate,
    Read,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Line),
        1 => Just(Op::LongLine),
        2 => Just(Op::Partial),
        2 => any::<bool>().prop_map(|create| Op::Rotate { create }),
        1 => Just(Op::Truncate),
        1 => Just(Op::CopyTruncate),
        4 => Just(Op::Read),
        1 => Just(Op::Restart),
    ]
}

/// One file as the model sees it: its bytes and how far its complete lines were delivered.
#[derive(Debug, Clone, Default)]
struct ModelFile {
    content: Vec<u8>,
    delivered_upto: usize,
}

impl ModelFile {
    fn deliver(&mut self, out: &mut Vec<Vec<u8>>) {
        let rest = &self.content[self.delivered_upto..];
        let complete = rest.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for terminated in rest[..complete].split_inclusive(|&b| b == b'\n') {
            let line = &terminated[..terminated.len() - 1];
            if line.len() <= MODEL_MAX_LINE {
                out.push(line.to_vec());
            }
        }
        self.delivered_upto += complete;
    }
}

/// What must be delivered, given the documented guarantees.
#[derive(Debug, Default)]
struct Model {
    /// The file at the path, if any.
    current: Option<ModelFile>,
    /// Whether the follower already holds `current` (false when it appeared after the last read).
    current_is_held: bool,
    /// Files rotated away since the last read, oldest first: finished at the next read.
    rotated: Vec<ModelFile>,
    /// A copytruncate copy not yet accounted for.
    pending_copy: Option<ModelFile>,
    /// The follower's read position in the held file.
    follower_position: usize,
    /// `delivered_upto` of the held file at the last read: the checkpoint offset.
    checkpoint_offset: usize,
    /// How many rotations deep the held file is, when it is no longer at the path.
    held_depth: Option<usize>,
    structural_since_read: usize,
    truncated_since_read: bool,
    expected: Vec<Vec<u8>>,
}

impl Model {
    fn read(&mut self) {
        for mut file in self.rotated.drain(..) {
            file.deliver(&mut self.expected);
        }
        if let Some(mut copy) = self.pending_copy.take() {
            // The copy is recognised by the first bytes the follower read from the file.
            if self.follower_position > 0 {
                copy.deliver(&mut self.expected);
            }
        }
        if let Some(current) = self.current.as_mut() {
            current.deliver(&mut self.expected);
            self.follower_position = current.content.len();
            self.checkpoint_offset = current.delivered_upto;
            self.current_is_held = true;
            self.held_depth = None;
        }
        self.structural_since_read = 0;
        self.truncated_since_read = false;
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    tailer: Option<Tailer>,
    model: Model,
    delivered: Vec<Vec<u8>>,
    sequence: u64,
}

impl Harness {
    fn new(initial_lines: usize, initial_partial: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut harness = Self {
            _dir: dir,
            path,
            tailer: None,
            model: Model::default(),
            delivered: Vec::new(),
            sequence: 0,
        };
        append(&harness.path, b"");
        let mut initial = ModelFile::default();
        for _ in 0..initial_lines {
            let line = harness.next_piece("L", true);
            initial.content.extend_from_slice(&line);
        }
        initial.delivered_upto = initial.content.len();
        if initial_partial {
            let partial = harness.next_piece("P", false);
            initial.content.extend_from_slice(&partial);
        }
        append(&harness.path, &initial.content);
        harness.model.follower_position = initial.delivered_upto;
        harness.model.checkpoint_offset = initial.delivered_upto;
        harness.model.current = Some(initial);
        harness.model.current_is_held = true;
        harness.tailer = Some(Tailer::open(harness.config()).unwrap());
        harness
    }

    fn config(&self) -> TailConfig {
        let mut config = config(&self.path);
        config.max_line_bytes = MODEL_MAX_LINE;
        config.rotate_wait = Duration::from_secs(600);
        config
    }

    /// Unique content, so that no two files or generations start with the same bytes.
    fn next_piece(&mut self, kind: &str, newline: bool) -> Vec<u8> {
        self.sequence += 1;
        let mut piece = format!("{kind}{:06}", self.sequence).into_bytes();
        if kind == "X" {
            piece.extend(std::iter::repeat_n(b'x', MODEL_MAX_LINE + 10));
        }
        if newline {
            piece.push(b'\n');
        }
        piece
    }

    fn write(&mut self, piece: Vec<u8>) {
        append(&self.path, &piece);
        if self.model.current.is_none() {
            self.model.current = Some(ModelFile::default());
            self.model.current_is_held = false;
        }
        if let Some(current) = self.model.current.as_mut() {
            current.content.extend_from_slice(&piece);
        }
    }

    fn read(&mut self) -> Result<(), TestCaseError> {
        let delivered = &mut self.delivered;
        self.tailer
            .as_mut()
            .unwrap()
            .read_available(|line| delivered.push(line.to_vec()))
            .unwrap();
        self.model.read();
        prop_assert_eq!(&self.delivered, &self.model.expected);
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Line => {
                let piece = self.next_piece("L", true);
                self.write(piece);
            }
            Op::LongLine => {
                let piece = self.next_piece("X", true);
                self.write(piece);
            }
            Op::Partial => {
                let piece = self.next_piece("P", false);
                self.write(piece);
            }
            Op::Rotate { create } => {
                // Documented limits: a truncation must be noticed before the next rotation, and
                // the held file must stay within the five numbered names searched.
                if self.model.truncated_since_read || self.model.held_depth >= Some(4) {
                    self.read()?;
                }
                let Some(old) = self.model.current.take() else {
                    return Ok(());
                };
                rename_rotate(&self.path);
                self.model.rotated.push(old);
                self.model.held_depth = Some(self.model.held_depth.map_or(1, |depth| depth + 1));
                if *create {
                    File::create(&self.path).unwrap();
                    self.model.current = Some(ModelFile::default());
                }
                self.model.current_is_held = false;
                self.model.structural_since_read += 1;
            }
            Op::Truncate | Op::CopyTruncate => {
                // Documented limit: a truncation is recognised in the file the follower holds
                // and when it is the only change since the last read.
                if self.model.structural_since_read > 0 || !self.model.current_is_held {
                    self.read()?;
                }
                let Some(current) = self.model.current.as_mut() else {
                    return Ok(());
                };
                if matches!(op, Op::CopyTruncate) {
                    copytruncate(&self.path);
                    self.model.pending_copy = Some(current.clone());
                } else {
                    OpenOptions::new()
                        .write(true)
                        .open(&self.path)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                }
                *current = ModelFile::default();
                self.model.truncated_since_read = true;
                self.model.structural_since_read += 1;
            }
            Op::Read => self.read()?,
            Op::Restart => {
                let tailer = self.tailer.take().unwrap();
                tailer.save_checkpoint().unwrap();
                drop(tailer);
                let reopened = Tailer::open(self.config()).unwrap();
                prop_assert!(reopened.checkpoint_problem().is_none());
                prop_assert_ne!(reopened.start_position(), StartPosition::FromEnd);
                self.tailer = Some(reopened);
                if self.model.current_is_held {
                    // The restarted follower knows the file only up to the checkpoint.
                    self.model.follower_position = self.model.checkpoint_offset;
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn follower_matches_the_model(
        initial_lines in 0usize..3,
        initial_partial in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut harness = Harness::new(initial_lines, initial_partial);
        for op in &ops {
            harness.apply(op)?;
        }
        harness.read()?;
    }
}
