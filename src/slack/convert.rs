//! Our domain values to slack-morphism's Block Kit types, and to ack payloads.
//!
//! Pure. The only place that decides how a [`Message`] looks in Slack.

use serde_json::{Value, json};
use slack_morphism::prelude::*;

use crate::message::{Button, Message};

/// A message as Block Kit content: the fallback text, one section per paragraph and the
/// buttons in one actions block, cut to Block Kit's limits ([`Message::within_limits`]).
pub fn message_content(message: &Message) -> SlackMessageContent {
    let reply = message.clone().within_limits();
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
    let mut blocks = blocks;
    if !reply.buttons.is_empty() {
        let elements: Vec<SlackActionBlockElement> = reply
            .buttons
            .iter()
            .map(|button| SlackActionBlockElement::Button(button_element(button)))
            .collect();
        blocks.push(SlackActionsBlock::new(elements).into());
    }
    SlackMessageContent::new()
        .with_text(reply.text.clone())
        .with_blocks(blocks)
}

fn button_element(button: &Button) -> SlackBlockButtonElement {
    let mut element =
        SlackBlockButtonElement::new(SlackBlockPlainTextOnly::from(button.text.clone()))
            .with_action_id(button.action_id.clone().into());
    if let Some(url) = button
        .url
        .as_deref()
        .and_then(|url| url::Url::parse(url).ok())
    {
        element = element.with_url(url);
    }
    if let Some(value) = &button.value {
        element = element.with_value(value.clone());
    }
    if button.primary {
        element = element.with_style(SlackBlockButtonStyle::Primary);
    }
    element
}

/// The `payload` of a slash command's ack: an ephemeral message.
pub fn ack_payload(reply: &Message) -> Value {
    let mut payload = serde_json::to_value(message_content(reply))
        .unwrap_or_else(|_| json!({"text": reply.text}));
    payload["response_type"] = json!("ephemeral");
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_never_exceeds_block_kit_limits() {
        let mut message = Message::text("many");
        message.sections = vec!["s".repeat(5000); 70];
        for n in 0..40 {
            message =
                message.with_button(Button::link(format!("b{n}"), "open", "https://x.example"));
        }
        let payload = ack_payload(&message);
        let blocks = payload["blocks"].as_array().expect("blocks");
        assert_eq!(blocks.len(), crate::message::MAX_BLOCKS);
        let actions = blocks.last().expect("actions block");
        assert_eq!(actions["elements"].as_array().map(Vec::len), Some(25));
        assert!(blocks[..blocks.len() - 1].iter().all(|block| {
            block["text"]["text"].as_str().map(|t| t.chars().count()) <= Some(3000)
        }));
    }

    #[test]
    fn buttons_become_an_actions_block() {
        let reply = Message::text("Connect").with_button(Button::link(
            "Connect Bitbucket account",
            "bitbucket_login",
            "http://intranet.example/bitbucket/login?state=abc",
        ));
        let payload = ack_payload(&reply);
        assert_eq!(
            payload["blocks"][1],
            json!({
                "type": "actions",
                "elements": [{
                    "type": "button",
                    "action_id": "bitbucket_login",
                    "text": {"type": "plain_text", "text": "Connect Bitbucket account"},
                    "url": "http://intranet.example/bitbucket/login?state=abc",
                    "style": "primary"
                }]
            })
        );
    }

    #[test]
    fn ack_payload_is_an_ephemeral_block_message() {
        let reply = Message {
            text: "fallback".into(),
            sections: vec!["*one*".into(), "two".into()],
            buttons: Vec::new(),
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
