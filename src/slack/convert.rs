//! Our domain values to slack-morphism's Block Kit types, and to ack payloads.
//!
//! Pure. The only place that decides how a [`Reply`] looks in Slack.

use serde_json::{Value, json};
use slack_morphism::prelude::*;

use crate::commands::Reply;

/// A reply as message content: the fallback text and one section per paragraph.
pub fn message_content(reply: &Reply) -> SlackMessageContent {
    let blocks: Vec<SlackBlock> = reply
        .sections
        .iter()
        .map(|section| {
            SlackSectionBlock::new()
                .with_text(SlackBlockText::MarkDown(SlackBlockMarkDownText::new(
                    section.clone(),
                )))
                .into()
        })
        .collect();
    SlackMessageContent::new()
        .with_text(reply.text.clone())
        .with_blocks(blocks)
}

/// The `payload` of a slash command's ack: an ephemeral message.
pub fn ack_payload(reply: &Reply) -> Value {
    let mut payload = serde_json::to_value(message_content(reply))
        .unwrap_or_else(|_| json!({"text": reply.text}));
    payload["response_type"] = json!("ephemeral");
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_payload_is_an_ephemeral_block_message() {
        let reply = Reply {
            text: "fallback".into(),
            sections: vec!["*one*".into(), "two".into()],
        };
        assert_eq!(
            ack_payload(&reply),
            json!({
                "response_type": "ephemeral",
                "text": "fallback",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": "*one*"}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "two"}}
                ]
            })
        );
    }
}
