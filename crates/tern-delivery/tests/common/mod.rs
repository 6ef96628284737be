//! Helpers shared by this crate's integration tests.
#![allow(dead_code)] // each test file uses what it needs

use tern_delivery::outbound::RemoteRecipient;

/// A queued recipient at `index` whose stored address is `text`, read as
/// the queue reads it: a text that no longer parses makes an unreadable
/// recipient.
pub(crate) fn stored(index: usize, text: &str) -> RemoteRecipient {
    match tern_queue::envelope::read_address(text) {
        Ok(m) => RemoteRecipient::new(index, m),
        Err(error) => RemoteRecipient {
            unreadable: Some(tern_queue::UnreadableAddress {
                text: text.to_owned(),
                error,
            }),
            ..RemoteRecipient::new(index, tern_queue::envelope::unreadable_placeholder())
        },
    }
}

/// A sender for a message that lives as long as the test.
pub(crate) fn sender(text: &str) -> &'static tern_types::ReversePath {
    Box::leak(Box::new(tern_queue::envelope::read_sender(text).unwrap()))
}
