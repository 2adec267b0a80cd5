//! Framing a byte stream into lines under a hard memory bound.
//!
//! Chunks arrive as the file is read, so a line may span several chunks. A line that lies
//! entirely inside one chunk is handed out as a slice of that chunk (no copy); only the part of
//! a line that straddles a chunk boundary is held in `pending`, and `pending` never grows beyond
//! `max_line_bytes`: a longer line flips the framer into discard mode until its newline, so an
//! attacker-controlled header (or a writer that never writes `\n`) cannot make the collector
//! buffer without bound.

/// What one [`LineFramer::feed`] call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeedOutcome {
    /// Complete lines handed to the callback.
    pub lines: u64,
    /// Lines dropped because they exceeded the limit (counted when the limit is crossed, so a
    /// line that never ends is still counted once).
    pub oversized: u64,
    /// Offset inside the chunk just past its last newline, if it held one: where the next line
    /// starts, which is what a checkpoint must record.
    pub next_line_start: Option<usize>,
}

/// Splits bytes into `\n`-terminated lines; the terminator is not part of the line.
#[derive(Debug)]
pub(crate) struct LineFramer {
    max_line_bytes: usize,
    pending: Vec<u8>,
    discarding: bool,
}

impl LineFramer {
    /// A framer positioned at the start of a line.
    pub(crate) fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            pending: Vec::new(),
            discarding: false,
        }
    }

    /// A framer positioned inside a line whose beginning was never seen: everything up to the
    /// next newline is dropped, because handing out the tail of a line would feed the parser a
    /// fragment that looks like a record but is not one.
    pub(crate) fn mid_line(max_line_bytes: usize) -> Self {
        Self {
            discarding: true,
            ..Self::new(max_line_bytes)
        }
    }

    /// Bytes of an incomplete line currently held.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Hands every line completed by `chunk` to `on_line` and keeps the unfinished tail.
    pub(crate) fn feed(&mut self, chunk: &[u8], on_line: &mut dyn FnMut(&[u8])) -> FeedOutcome {
        let mut outcome = FeedOutcome::default();
        let mut rest = chunk;
        let mut consumed = 0usize;
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            let Some((line_part, from_newline)) = rest.split_at_checked(newline) else {
                break;
            };
            self.finish_line(line_part, on_line, &mut outcome);
            consumed += newline + 1;
            outcome.next_line_start = Some(consumed);
            rest = from_newline.get(1..).unwrap_or_default();
        }
        self.hold(rest, &mut outcome);
        outcome
    }

    fn finish_line(
        &mut self,
        last_part: &[u8],
        on_line: &mut dyn FnMut(&[u8]),
        outcome: &mut FeedOutcome,
    ) {
        if self.discarding {
            // Already counted when the limit was crossed.
            self.discarding = false;
            return;
        }
        if self.pending.is_empty() {
            if last_part.len() > self.max_line_bytes {
                outcome.oversized += 1;
            } else {
                on_line(last_part);
                outcome.lines += 1;
            }
            return;
        }
        if self.pending.len() + last_part.len() > self.max_line_bytes {
            outcome.oversized += 1;
        } else {
            self.pending.extend_from_slice(last_part);
            on_line(&self.pending);
            outcome.lines += 1;
        }
        self.pending.clear();
    }

    fn hold(&mut self, unfinished: &[u8], outcome: &mut FeedOutcome) {
        if unfinished.is_empty() || self.discarding {
            return;
        }
        if self.pending.len() + unfinished.len() > self.max_line_bytes {
            outcome.oversized += 1;
            self.discarding = true;
            self.pending.clear();
        } else {
            self.pending.extend_from_slice(unfinished);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(framer: &mut LineFramer, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, u64) {
        let mut lines = Vec::new();
        let mut oversized = 0;
        for chunk in chunks {
            let outcome = framer.feed(chunk, &mut |line| lines.push(line.to_vec()));
            oversized += outcome.oversized;
        }
        (lines, oversized)
    }

    #[test]
    fn partial_line_waits_for_its_newline() {
        let mut framer = LineFramer::new(64);
        let (lines, _) = feed_all(&mut framer, &[b"first\nsec", b"ond"]);
        assert_eq!(lines, vec![b"first".to_vec()]);
        assert_eq!(framer.pending_len(), 6);
        let (lines, _) = feed_all(&mut framer, &[b"\n"]);
        assert_eq!(lines, vec![b"second".to_vec()]);
        assert_eq!(framer.pending_len(), 0);
    }

    #[test]
    fn next_line_start_points_past_the_last_newline() {
        let mut framer = LineFramer::new(64);
        let outcome = framer.feed(b"a\nbb\nccc", &mut |_| {});
        assert_eq!(outcome.next_line_start, Some(5));
        assert_eq!(outcome.lines, 2);
        let outcome = framer.feed(b"cc", &mut |_| {});
        assert_eq!(outcome.next_line_start, None);
    }

    #[test]
    fn line_at_the_limit_passes_and_one_byte_more_is_dropped() {
        let mut framer = LineFramer::new(4);
        let (lines, oversized) = feed_all(&mut framer, &[b"abcd\nabcde\nok\n"]);
        assert_eq!(lines, vec![b"abcd".to_vec(), b"ok".to_vec()]);
        assert_eq!(oversized, 1);
    }

    #[test]
    fn oversized_line_across_chunks_is_dropped_without_growing_the_buffer() {
        let mut framer = LineFramer::new(8);
        let mut oversized = 0;
        for _ in 0..1000 {
            oversized += framer
                .feed(b"xxxxxxx", &mut |_| panic!("no line"))
                .oversized;
            assert!(framer.pending_len() <= 8);
        }
        assert_eq!(oversized, 1, "a single long line is counted once");
        let (lines, more) = feed_all(&mut framer, &[b"tail\nnext\n"]);
        assert_eq!(lines, vec![b"next".to_vec()]);
        assert_eq!(more, 0);
    }

    #[test]
    fn mid_line_framer_drops_the_fragment() {
        let mut framer = LineFramer::mid_line(64);
        let (lines, oversized) = feed_all(&mut framer, &[b"agment\nwhole\n"]);
        assert_eq!(lines, vec![b"whole".to_vec()]);
        assert_eq!(oversized, 0);
    }

    #[test]
    fn bytes_pass_through_unchanged() {
        let mut framer = LineFramer::new(64);
        let (lines, _) = feed_all(&mut framer, &[b"\xff\x00\xc3(\r\n"]);
        assert_eq!(lines, vec![b"\xff\x00\xc3(\r".to_vec()]);
    }

    proptest! {
        /// However the stream is cut into chunks, the framer hands out exactly the lines that
        /// splitting the whole stream at once gives, minus those over the limit.
        #[test]
        fn chunking_does_not_change_the_lines(
            stream in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..20),
            max_line_bytes in 1usize..40,
        ) {
            let mut expected = Vec::new();
            let mut expected_oversized = 0u64;
            let complete_len = stream.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let (complete, tail) = stream.split_at(complete_len);
            for line in complete.split(|&b| b == b'\n').take(complete.iter().filter(|&&b| b == b'\n').count()) {
                if line.len() > max_line_bytes {
                    expected_oversized += 1;
                } else {
                    expected.push(line.to_vec());
                }
            }
            if tail.len() > max_line_bytes {
                expected_oversized += 1;
            }

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            let mut framer = LineFramer::new(max_line_bytes);
            let (lines, oversized) = feed_all(&mut framer, &chunks);
            prop_assert_eq!(lines, expected);
            prop_assert_eq!(oversized, expected_oversized);
            prop_assert!(framer.pending_len() <= max_line_bytes);
        }
    }
}
