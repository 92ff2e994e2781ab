//! Reading what a Slack message says, as the tests assert on it: the text of its section
//! blocks (sent as a JSON array, or as a JSON string in form-encoded calls).

use serde_json::Value;

/// The section blocks' text, one per line; the `text` field when there are no blocks.
pub fn section_text(payload: &Value) -> String {
    let blocks = match &payload["blocks"] {
        Value::String(encoded) => serde_json::from_str(encoded).unwrap_or(Value::Null),
        other => other.clone(),
    };
    match blocks.as_array() {
        Some(blocks) => blocks
            .iter()
            .filter_map(|block| block["text"]["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        None => payload["text"].as_str().unwrap_or("").to_string(),
    }
}

/// The fallback `text`, then the section blocks' text.
pub fn message_text(payload: &Value) -> String {
    format!(
        "{}\n{}",
        payload["text"].as_str().unwrap_or(""),
        section_text(payload)
    )
}
