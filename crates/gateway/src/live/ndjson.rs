//! Splitting an NDJSON body (`POST /v1/events/bulk`) into numbered lines,
//! each bounded in length, as its chunks arrive.
//!
//! The splitter is pure: the handler feeds it the chunks of the request body
//! and the fuzz target `bulk_body` feeds it the same bytes cut anywhere, so
//! the framing the handler relies on is tested apart from the network.

use bytes::{Bytes, BytesMut};

/// One line of the body, numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line within the limit, without its `\n`.
    Text(u64, Bytes),
    /// A line longer than the limit. Its bytes were dropped as they came, so
    /// a huge line never sits in memory.
    TooLong(u64),
}

/// Cuts a body into lines without ever holding more than one line (bounded
/// by `max`) plus one chunk.
#[derive(Debug)]
pub struct LineSplitter {
    buffer: BytesMut,
    /// Longest line accepted, in bytes, not counting its `\n`.
    max: usize,
    /// Number of the last line returned.
    number: u64,
    /// Inside a line that is already too long: drop bytes until its end.
    skipping: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self { buffer: BytesMut::new(), max, number: 0, skipping: false }
    }

    /// Adds the next chunk of the body. Take every complete line out with
    /// [`LineSplitter::next_line`] before pushing more: that is what keeps
    /// the buffer bounded.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete line, if the chunks so far hold one.
    pub fn next_line(&mut self) -> Option<Line> {
        if let Some(newline) = self.buffer.iter().position(|b| *b == b'\n') {
            let line = self.buffer.split_to(newline + 1);
            self.number += 1;
            // An overlong line that arrived whole, with its end, in one
            // chunk was never dropped: measure it as well as the flag.
            if std::mem::take(&mut self.skipping) || newline > self.max {
                return Some(Line::TooLong(self.number));
            }
            return Some(Line::Text(self.number, line.freeze().slice(..newline)));
        }
        if self.buffer.len() > self.max {
            // No newline within the limit: this line is too long. Keep
            // nothing of it; report it when its end arrives.
            self.buffer.clear();
            self.skipping = true;
        }
        None
    }

    /// The last line, once the body has ended: what follows the last `\n`,
    /// if anything does. Call after [`LineSplitter::next_line`] has returned
    /// `None`.
    pub fn finish(&mut self) -> Option<Line> {
        if self.buffer.is_empty() && !self.skipping {
            return None;
        }
        self.number += 1;
        let rest = self.buffer.split().freeze();
        Some(if std::mem::take(&mut self.skipping) || rest.len() > self.max {
            Line::TooLong(self.number)
        } else {
            Line::Text(self.number, rest)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `body` cut into chunks of `chunk` bytes.
    fn lines(body: &[u8], max: usize, chunk: usize) -> Vec<Line> {
        let mut splitter = LineSplitter::new(max);
        let mut found = Vec::new();
        for piece in body.chunks(chunk) {
            splitter.push(piece);
            found.extend(std::iter::from_fn(|| splitter.next_line()));
        }
        found.extend(splitter.finish());
        found
    }

    fn text(number: u64, text: &str) -> Line {
        Line::Text(number, Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn lines_are_numbered_and_overlong_ones_reported_whatever_the_chunks() {
        let body = b"ab\n\nabcdef\nxyz\nabcdefgh";
        let expected = vec![text(1, "ab"), text(2, ""), Line::TooLong(3), text(4, "xyz"), Line::TooLong(5)];
        for chunk in 1..=body.len() {
            assert_eq!(lines(body, 4, chunk), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_kept_and_a_trailing_newline_adds_no_line() {
        assert_eq!(lines(b"abcd\nabcd", 4, 3), vec![text(1, "abcd"), text(2, "abcd")]);
        assert_eq!(lines(b"abcd\n", 4, 2), vec![text(1, "abcd")]);
        assert_eq!(lines(b"", 4, 1), vec![]);
    }
}
