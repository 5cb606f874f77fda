//! Fuzz target: a WebSocket client's text message on `/v1/live`, through
//! `parse_client_message`, the function each connection calls.
//!
//! Only what a connection can receive is tried: valid UTF-8 (a text frame)
//! of at most 4 KiB (the message limit; larger ones close the connection
//! before parsing). Beyond not panicking: a refusal carries one of the
//! documented codes and a message; an accepted subscribe names a valid match
//! id; and an accepted command, written back, parses to the same command.

#![no_main]

use domain::live::MatchId;
use gateway::live::Football;
use libfuzzer_sys::fuzz_target;
use livefeed::ws::ClientCommand;
use serde_json::json;

/// The WebSocket message limit of `/v1/live`.
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// The parser as a connection of the football feed runs it.
fn parse_client_message(text: &str) -> Result<ClientCommand, livefeed::ws::InvalidMessage> {
    livefeed::ws::parse_client_message::<Football>(text)
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_CLIENT_MESSAGE {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let command = match parse_client_message(text) {
        Ok(command) => command,
        Err(invalid) => {
            assert!(
                matches!(invalid.code, "invalid_json" | "unknown_command" | "invalid_message"),
                "undocumented code {:?}",
                invalid.code
            );
            assert!(!invalid.message.is_empty(), "a refusal without a message");
            return;
        }
    };
    let written = match &command {
        ClientCommand::Subscribe { id, since } => {
            assert!(
                MatchId::parse(id).is_ok_and(|parsed| parsed.as_str() == id),
                "subscribed to an invalid id"
            );
            match since {
                Some(since) => json!({ "op": "subscribe", "match": id, "since": since }),
                None => json!({ "op": "subscribe", "match": id }),
            }
        }
        ClientCommand::Unsubscribe { id } => json!({ "op": "unsubscribe", "match": id }),
    };
    assert_eq!(parse_client_message(&written.to_string()), Ok(command), "{written}");
});
