//! Modals as plain data ([`Modal`], [`ModalInput`]) and their Block Kit JSON for
//! `views.open`.
//!
//! Pure. The only place that decides how a modal looks in Block Kit; what a modal asks
//! is decided by its caller. Every text is cut to Block Kit's limits; nothing here is
//! sent anywhere.

use serde_json::{Value, json};

use crate::message::truncate;

/// Block Kit's limits for a modal.
const MAX_TITLE_CHARS: usize = 24;
const MAX_METADATA_CHARS: usize = 3000;
const MAX_LABEL_CHARS: usize = 2000;
const MAX_OPTION_CHARS: usize = 75;
const MAX_INITIAL_TEXT_CHARS: usize = 3000;

/// A modal: a title, a section of text, inputs, and a submit button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modal {
    pub callback_id: String,
    pub title: String,
    pub submit: String,
    /// Handed back with the submission (never shown): what the modal is about.
    pub private_metadata: String,
    /// mrkdwn shown above the inputs.
    pub intro: String,
    pub inputs: Vec<ModalInput>,
}

/// One input of a modal; `block_id` and `action_id` are where the submission's state
/// holds its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModalInput {
    Text {
        block_id: String,
        action_id: String,
        label: String,
        multiline: bool,
        optional: bool,
        initial: Option<String>,
    },
    /// A single choice among `(value, label)` options.
    Select {
        block_id: String,
        action_id: String,
        label: String,
        options: Vec<(String, String)>,
        initial: Option<String>,
    },
    /// One checkbox `(value, label)`.
    Checkbox {
        block_id: String,
        action_id: String,
        label: String,
        option: (String, String),
        checked: bool,
    },
}

fn plain(text: &str, max: usize) -> Value {
    json!({"type": "plain_text", "text": truncate(text, max)})
}

fn option((value, label): &(String, String)) -> Value {
    json!({"text": plain(label, MAX_OPTION_CHARS), "value": value})
}

impl Modal {
    /// The `view` of `views.open`.
    pub fn to_view(&self) -> Value {
        let mut blocks = vec![json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&self.intro, crate::message::MAX_SECTION_CHARS)}
        })];
        for input in &self.inputs {
            blocks.push(match input {
                ModalInput::Text {
                    block_id,
                    action_id,
                    label,
                    multiline,
                    optional,
                    initial,
                } => {
                    let mut element = json!({
                        "type": "plain_text_input",
                        "action_id": action_id,
                        "multiline": multiline,
                    });
                    if let Some(initial) = initial {
                        element["initial_value"] = json!(truncate(initial, MAX_INITIAL_TEXT_CHARS));
                    }
                    json!({"type": "input", "block_id": block_id, "optional": optional,
                           "label": plain(label, MAX_LABEL_CHARS), "element": element})
                }
                ModalInput::Select {
                    block_id,
                    action_id,
                    label,
                    options,
                    initial,
                } => {
                    let mut element = json!({
                        "type": "static_select",
                        "action_id": action_id,
                        "options": options.iter().take(100).map(option).collect::<Vec<_>>(),
                    });
                    if let Some(initial) = initial
                        .as_ref()
                        .and_then(|initial| options.iter().find(|(value, _)| value == initial))
                    {
                        element["initial_option"] = option(initial);
                    }
                    json!({"type": "input", "block_id": block_id,
                           "label": plain(label, MAX_LABEL_CHARS), "element": element})
                }
                ModalInput::Checkbox {
                    block_id,
                    action_id,
                    label,
                    option: choice,
                    checked,
                } => {
                    let mut element = json!({
                        "type": "checkboxes",
                        "action_id": action_id,
                        "options": [option(choice)],
                    });
                    if *checked {
                        element["initial_options"] = json!([option(choice)]);
                    }
                    json!({"type": "input", "block_id": block_id, "optional": true,
                           "label": plain(label, MAX_LABEL_CHARS), "element": element})
                }
            });
        }
        json!({
            "type": "modal",
            "callback_id": self.callback_id,
            "private_metadata": truncate(&self.private_metadata, MAX_METADATA_CHARS),
            "title": plain(&self.title, MAX_TITLE_CHARS),
            "submit": plain(&self.submit, MAX_TITLE_CHARS),
            "close": plain("Cancel", MAX_TITLE_CHARS),
            "blocks": blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modal_becomes_a_view_with_its_inputs() {
        let modal = Modal {
            callback_id: "merge".into(),
            title: "Merge pull request #7 of acme/api".into(),
            submit: "Merge".into(),
            private_metadata: "acme/api#7".into(),
            intro: "Merge *#7*?".into(),
            inputs: vec![
                ModalInput::Select {
                    block_id: "strategy".into(),
                    action_id: "strategy".into(),
                    label: "Merge strategy".into(),
                    options: vec![
                        ("merge_commit".into(), "Merge commit".into()),
                        ("squash".into(), "Squash".into()),
                    ],
                    initial: Some("squash".into()),
                },
                ModalInput::Checkbox {
                    block_id: "close".into(),
                    action_id: "close".into(),
                    label: "Source branch".into(),
                    option: ("close".into(), "Close the source branch".into()),
                    checked: true,
                },
            ],
        };
        let view = modal.to_view();
        assert_eq!(view["type"], "modal");
        assert_eq!(
            view["title"]["text"].as_str().map(|t| t.chars().count()),
            Some(24)
        );
        assert_eq!(
            view["blocks"][1]["element"]["initial_option"]["value"],
            "squash"
        );
        assert_eq!(
            view["blocks"][2]["element"]["initial_options"][0]["value"],
            "close"
        );
        assert_eq!(view["private_metadata"], "acme/api#7");
    }
}
