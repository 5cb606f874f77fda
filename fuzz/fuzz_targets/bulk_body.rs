//! Fuzz target: the body of `POST /v1/events/bulk` (NDJSON), cut into lines
//! by the handler's `LineSplitter` and each line parsed with `parse_line`.
//!
//! Input layout: byte 0 sets the line limit (times 4, so 0 to 1020 bytes and
//! both outcomes of the limit are reached), byte 1 the chunk size the body
//! arrives in (1 to 256 bytes), the rest is the body.
//!
//! Beyond not panicking: whatever the chunks, the lines are exactly the body
//! split at `\n` (a trailing `\n` adds no line), numbered from 1, those over
//! the limit reported as too long; a blank line is skipped and any other is
//! an event or a refusal with a message; and the accepted events, written
//! back one per line, come out again as the same events in the same order.

#![no_main]

use courtside_fuzz::{NOW_MS, publisher_json, same_event};
use gateway::live::{
    ndjson::{Line, LineSplitter},
    wire::parse_line,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [limit, chunk, body @ ..] = data else { return };
    let max = usize::from(*limit) * 4;
    let chunk = usize::from(*chunk) + 1;

    let lines = split(body, max, chunk);
    assert_eq!(lines, expected_lines(body, max), "lines of {body:?} (limit {max}, chunks of {chunk})");

    let mut events = Vec::new();
    for line in &lines {
        let Line::Text(_, text) = line else { continue };
        match parse_line(text, NOW_MS) {
            None => assert!(text.iter().all(u8::is_ascii_whitespace), "a line with content skipped"),
            Some(Err(message)) => assert!(!message.is_empty(), "a refusal without a message"),
            Some(Ok(event)) => events.push(event),
        }
    }

    // The accepted events as a body of their own, with a blank line between
    // each: as many events come out as went in, in order.
    let mut ndjson = String::new();
    for event in &events {
        ndjson.push_str(&publisher_json(event).to_string());
        ndjson.push_str("\n\n");
    }
    let again: Vec<_> = split(ndjson.as_bytes(), usize::MAX, chunk)
        .into_iter()
        .filter_map(|line| match line {
            Line::Text(_, text) => parse_line(&text, NOW_MS),
            Line::TooLong(number) => panic!("line {number} too long without a limit"),
        })
        .collect::<Result<_, _>>()
        .unwrap_or_else(|err| panic!("accepted events written back do not parse: {err}\n{ndjson}"));
    assert_eq!(again.len(), events.len(), "{ndjson}");
    for (event, again) in events.iter().zip(&again) {
        assert!(same_event(event, again), "{event:?} parses back as {again:?}");
    }
});

/// The lines as the handler reads them, the body arriving `chunk` bytes at a
/// time.
fn split(body: &[u8], max: usize, chunk: usize) -> Vec<Line> {
    let mut splitter = LineSplitter::new(max);
    let mut lines = Vec::new();
    for piece in body.chunks(chunk) {
        splitter.push(piece);
        lines.extend(std::iter::from_fn(|| splitter.next_line()));
    }
    lines.extend(splitter.finish());
    assert_eq!(splitter.finish(), None, "a second finish found another line");
    lines
}

/// The lines by definition: the whole body in hand, split at every `\n`.
fn expected_lines(body: &[u8], max: usize) -> Vec<Line> {
    let mut pieces: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if pieces.last().is_some_and(|last| last.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .zip(1..)
        .map(|(piece, number)| {
            if piece.len() > max { Line::TooLong(number) } else { Line::Text(number, piece.to_vec().into()) }
        })
        .collect()
}
