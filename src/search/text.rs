//! What of an event is searchable and how a search term is cut into words: the one rule the
//! index, the V9 back-fill and the highlights share.
//!
//! A message (`m.room.message`) is searched by its `content.body`, a room's name and topic state
//! events by `content.name` and `content.topic`; nothing else is indexed. An encrypted event has
//! none of these keys, so it never enters the index, and a redacted one loses its row with its
//! content. Words are runs of letters and digits, lowercased; each word of a search term matches
//! the start of a word of the text.

use serde_json::Value as JsonValue;

use crate::{
    rooms::pdu::Pdu,
    store::{EventRecord, NewSearchText},
};

/// The search keys of the spec, each with the event type it is found in.
pub const KEYS: [(&str, &str); 3] = [
    ("content.body", "m.room.message"),
    ("content.name", "m.room.name"),
    ("content.topic", "m.room.topic"),
];

/// What a new event puts into the search index, if anything.
pub fn text_of(pdu: &Pdu) -> Option<NewSearchText> {
    let content: JsonValue = serde_json::from_str(pdu.content.get()).ok()?;
    text_of_content(&pdu.kind.to_string(), pdu.state_key.as_deref(), &content)
}

/// The searchable text of a stored event (for highlights), if it has any.
pub fn text_of_record(record: &EventRecord) -> Option<NewSearchText> {
    let pdu: JsonValue = serde_json::from_str(&record.pdu).ok()?;
    text_of_content(&record.event_type, record.state_key.as_deref(), pdu.get("content")?)
}

/// What an event of this type, state key and content puts into the search index, if anything.
pub fn text_of_content(
    event_type: &str,
    state_key: Option<&str>,
    content: &JsonValue,
) -> Option<NewSearchText> {
    text_in(key_of(event_type, state_key)?, content)
}

/// The key an event of this type is searched by: messages are not state, the name and topic are
/// the room's (empty state key).
fn key_of(event_type: &str, state_key: Option<&str>) -> Option<&'static str> {
    let (key, _) = KEYS.iter().find(|(_, kind)| *kind == event_type)?;
    let is_state = event_type != "m.room.message";
    match state_key {
        None if !is_state => Some(key),
        Some("") if is_state => Some(key),
        _ => None,
    }
}

fn text_in(key: &str, content: &JsonValue) -> Option<NewSearchText> {
    let field = key.strip_prefix("content.")?;
    let text = content.get(field)?.as_str()?.replace('\0', " ");
    (!text.trim().is_empty()).then(|| NewSearchText { key: key.to_owned(), text })
}

/// The words of a search term, lowercased, each once, in the order given.
pub fn terms_of(search_term: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in words(search_term) {
        let word = word.to_lowercase();
        if !terms.contains(&word) {
            terms.push(word);
        }
    }
    terms
}

/// Runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty())
}

/// The words of `text` that a term matches (it starts with the term, ignoring case), as they
/// are written: what a client highlights.
pub fn matched_words<'a>(text: &'a str, terms: &'a [String]) -> impl Iterator<Item = &'a str> {
    words(text).filter(move |word| {
        let word = word.to_lowercase();
        terms.iter().any(|term| word.starts_with(term.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_lowercase_words_each_once() {
        assert_eq!(terms_of("Hello, WORLD! hello-world"), ["hello", "world"]);
        assert_eq!(terms_of("  \"*\" OR -- "), ["or"]);
        assert!(terms_of("*** ---").is_empty());
        assert_eq!(terms_of("Grüße 2024"), ["grüße", "2024"]);
    }

    #[test]
    fn only_a_message_body_and_the_room_name_and_topic_are_searchable() {
        assert_eq!(key_of("m.room.message", None), Some("content.body"));
        assert_eq!(key_of("m.room.message", Some("")), None, "a message is not state");
        assert_eq!(key_of("m.room.name", Some("")), Some("content.name"));
        assert_eq!(key_of("m.room.topic", Some("x")), None, "the room's own topic only");
        assert_eq!(key_of("m.room.encrypted", None), None);
        let content = serde_json::json!({ "body": "a\u{0}b", "name": 5 });
        assert_eq!(text_in("content.body", &content).unwrap().text, "a b");
        assert_eq!(text_in("content.name", &content), None, "not a string");
        assert_eq!(text_in("content.body", &serde_json::json!({ "body": " " })), None);
    }

    #[test]
    fn highlights_are_the_words_a_term_starts() {
        let terms = terms_of("hel wor");
        let words: Vec<&str> = matched_words("Hello there, World; shell", &terms).collect();
        assert_eq!(words, ["Hello", "World"]);
    }
}
