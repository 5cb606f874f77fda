//! Fuzz target: the body of `POST /v1/events`, one event object or a JSON
//! array of them, through `parse_publication`, the one function the handler
//! reads the body with.
//!
//! Beyond not panicking: a refusal has a message for the client; an accepted
//! event, written back as a publisher would send it, parses to the same
//! event; and an accepted array has one event per element, each the event
//! that element parses to on its own.

#![no_main]

use courtside_fuzz::{NOW_MS, publisher_json, same_event};
use gateway::live::wire::{Publication, parse_event, parse_publication};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|body: &[u8]| {
    match parse_publication(body, NOW_MS) {
        Err(message) => assert!(!message.is_empty(), "a refusal without a message"),
        Ok(Publication::One(event)) => round_trip(&event),
        Ok(Publication::Many(events)) => {
            let elements: Vec<&RawValue> =
                serde_json::from_slice(body).expect("an accepted array is a JSON array");
            assert_eq!(events.len(), elements.len(), "one event per element");
            for (event, element) in events.iter().zip(elements) {
                let alone = parse_event(element.get().as_bytes(), NOW_MS).expect("an element parses alone");
                assert_eq!(&alone, event, "an element parses alone as it does in its array");
                round_trip(event);
            }
        }
    }
});

fn round_trip(event: &domain::live::MatchEvent) {
    let json = publisher_json(event).to_string();
    let again = parse_event(json.as_bytes(), NOW_MS)
        .unwrap_or_else(|err| panic!("{event:?} written as {json} does not parse back: {err}"));
    assert!(same_event(event, &again), "{event:?} written as {json} parses back as {again:?}");
}
