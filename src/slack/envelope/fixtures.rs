//! One table: every envelope fixture under `tests/fixtures/slack-socket-mode` and the
//! typed payload it must parse to, or the field its parse error must name.
//!
//! Test-only. Reads the fixtures at compile time (`include_str!`), so it does no I/O.

use super::*;

/// A fixture's text, by file name.
macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/slack-socket-mode/",
                $name
            )),
        )
    };
}

/// What an envelope must parse to.
enum Expected {
    Command {
        text: &'static str,
    },
    Event(Event),
    Interaction(InteractionKind),
    /// Acked but not handled: the reason names this field.
    Malformed {
        type_name: &'static str,
        field: &'static str,
    },
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn some(text: &str) -> Option<String> {
    Some(text.to_string())
}

fn button(action_id: &str, block_id: &str, value: &str) -> BlockAction {
    BlockAction {
        action_id: action_id.into(),
        block_id: some(block_id),
        value: some(value),
        selected_option: None,
    }
}

fn subscribe_modal(id: &str, repository: Option<&str>) -> View {
    View {
        id: id.into(),
        view_type: ViewType::Modal,
        callback_id: "subscribe-modal".into(),
        private_metadata: "C0PRS0001".into(),
        inputs: vec![ViewInput {
            block_id: "repository-input".into(),
            action_id: "repository".into(),
            value: InputValue::Text(repository.map(str::to_string)),
        }],
    }
}

fn table() -> Vec<((&'static str, &'static str), Expected)> {
    let large_choice = "lighthouse-labs/repository-03-014/pull-requests-and-pipelines";
    vec![
        (
            fixture!("slash_commands_help.json"),
            Expected::Command { text: "" },
        ),
        (
            fixture!("slash_commands_help_with_app_id.json"),
            Expected::Command { text: "" },
        ),
        (
            fixture!("events_api_app_uninstalled.json"),
            Expected::Event(Event::AppUninstalled),
        ),
        (
            fixture!("events_api_tokens_revoked.json"),
            Expected::Event(Event::TokensRevoked {
                oauth: strings(&["U0ADA0001"]),
                bot: strings(&["U0LHB0BOT"]),
            }),
        ),
        (
            fixture!("events_api_tokens_revoked_user_tokens_only.json"),
            Expected::Event(Event::TokensRevoked {
                oauth: strings(&["U0GRC0002"]),
                bot: Vec::new(),
            }),
        ),
        (
            fixture!("events_api_app_home_opened.json"),
            Expected::Event(Event::AppHomeOpened {
                user: "U0GRC0002".into(),
                channel: "D0GRC0002".into(),
                tab: HomeTab::Home,
            }),
        ),
        (
            fixture!("events_api_app_home_opened_messages_tab.json"),
            Expected::Event(Event::AppHomeOpened {
                user: "U0ADA0001".into(),
                channel: "D0ADA0001".into(),
                tab: HomeTab::Messages,
            }),
        ),
        (
            fixture!("events_api_link_shared.json"),
            Expected::Event(Event::LinkShared(LinkShared {
                channel: "C0PRS0001".into(),
                user: "U0ADA0001".into(),
                message_ts: "1709543955.000400".into(),
                unfurl_id: some("C0PRS0001.1709543955.000400.lhbUnfurl01"),
                source: Some(LinkSource::ConversationsHistory),
                links: vec![SharedLink {
                    domain: "bitbucket.org".into(),
                    url: "https://bitbucket.org/lighthouse-labs/harbour/pull-requests/7".into(),
                }],
            })),
        ),
        (
            fixture!("events_api_link_shared_composer.json"),
            Expected::Event(Event::LinkShared(LinkShared {
                channel: "COMPOSER".into(),
                user: "U0GRC0002".into(),
                message_ts: "U0GRC0002-lhbDraft-7f3a1c".into(),
                unfurl_id: some("U0GRC0002-lhbDraft-7f3a1c.lhbUnfurl02"),
                source: Some(LinkSource::Composer),
                links: vec![
                    SharedLink {
                        domain: "bitbucket.org".into(),
                        url: "https://bitbucket.org/lighthouse-labs/harbour/commits/4f9c2e1".into(),
                    },
                    SharedLink {
                        domain: "bitbucket.org".into(),
                        url: "https://bitbucket.org/lighthouse-labs/lantern/pull-requests/12"
                            .into(),
                    },
                ],
            })),
        ),
        (
            fixture!("events_api_link_shared_older_shape.json"),
            Expected::Event(Event::LinkShared(LinkShared {
                channel: "C0PRS0001".into(),
                user: "U0GRC0002".into(),
                message_ts: "1709545240.000800".into(),
                unfurl_id: None,
                source: None,
                links: vec![SharedLink {
                    domain: "bitbucket.org".into(),
                    url: "https://bitbucket.org/lighthouse-labs/harbour".into(),
                }],
            })),
        ),
        (
            fixture!("events_api_link_shared_without_url.json"),
            Expected::Malformed {
                type_name: "link_shared",
                field: "event.links[0].url",
            },
        ),
        (
            fixture!("events_api_message_im.json"),
            Expected::Event(Event::MessageIm(MessageIm {
                channel: "D0ADA0001".into(),
                user: "U0ADA0001".into(),
                text: "hello, can you tell me when my pull request is approved?".into(),
                ts: "1709543866.000300".into(),
                thread_ts: None,
                bot_id: None,
            })),
        ),
        (
            fixture!("events_api_message_im_bot_thread_reply.json"),
            Expected::Event(Event::MessageIm(MessageIm {
                channel: "D0ADA0001".into(),
                user: "U0LHB0BOT".into(),
                text: "Pull request #7 was approved by grace.".into(),
                ts: "1709545001.000600".into(),
                thread_ts: some("1709543866.000300"),
                bot_id: some("B0LHB0001"),
            })),
        ),
        (
            fixture!("events_api_message_im_edited.json"),
            Expected::Event(Event::Unknown {
                type_name: "message".into(),
            }),
        ),
        (
            fixture!("events_api_message.json"),
            Expected::Event(Event::Unknown {
                type_name: "message".into(),
            }),
        ),
        (
            fixture!("events_api_app_mention.json"),
            Expected::Event(Event::Unknown {
                type_name: "app_mention".into(),
            }),
        ),
        (
            fixture!("interactive_block_actions.json"),
            Expected::Interaction(InteractionKind::BlockActions(Box::new(BlockActions {
                user: "U0ADA0001".into(),
                channel: some("C0PRS0001"),
                message_ts: some("1709544100.000500"),
                response_url: some(
                    "https://hooks.slack.com/actions/T0AAA0001/5550003/lhbResponseUrlSecret03",
                ),
                trigger_id: "5550003.1001.2a6f0d9c4e81b73f".into(),
                actions: vec![button("review-pr", "pr-7-actions", "harbour/7")],
                view: None,
                message_sections: strings(&["*harbour* #7 Move the tide tables to the new schema"]),
            }))),
        ),
        (
            fixture!("interactive_block_actions_home_tab.json"),
            Expected::Interaction(InteractionKind::BlockActions(Box::new(BlockActions {
                user: "U0ADA0001".into(),
                channel: None,
                message_ts: None,
                response_url: None,
                trigger_id: "5550007.1001.c83e0f5a7b2d1964".into(),
                actions: vec![button("connect-bitbucket", "home-actions", "connect")],
                view: Some(View {
                    id: "V0LHB0HOME".into(),
                    view_type: ViewType::Home,
                    callback_id: String::new(),
                    private_metadata: String::new(),
                    inputs: vec![ViewInput {
                        block_id: "home-actions".into(),
                        action_id: "personal-notifications".into(),
                        value: InputValue::Choices(strings(&["review-requested"])),
                    }],
                }),
                message_sections: Vec::new(),
            }))),
        ),
        (
            fixture!("interactive_block_actions_large.json"),
            Expected::Interaction(InteractionKind::BlockActions(Box::new(BlockActions {
                user: "U0ADA0001".into(),
                channel: None,
                message_ts: None,
                response_url: None,
                trigger_id: "5550004.1001.9e3b7c05d12a48f6".into(),
                actions: vec![BlockAction {
                    action_id: "repository".into(),
                    block_id: some("pick-repository"),
                    value: None,
                    selected_option: some(large_choice),
                }],
                view: Some(View {
                    id: "V0LHB0LARGE".into(),
                    view_type: ViewType::Modal,
                    callback_id: "subscribe-modal".into(),
                    private_metadata: String::new(),
                    inputs: vec![ViewInput {
                        block_id: "pick-repository".into(),
                        action_id: "repository".into(),
                        value: InputValue::Choice(some(large_choice)),
                    }],
                }),
                message_sections: Vec::new(),
            }))),
        ),
        (
            fixture!("interactive_view_submission.json"),
            Expected::Interaction(InteractionKind::ViewSubmission {
                user: "U0ADA0001".into(),
                view: Box::new(subscribe_modal(
                    "V0LHB0SUB1",
                    Some("lighthouse-labs/harbour"),
                )),
            }),
        ),
        (
            fixture!("interactive_view_submission_without_view_id.json"),
            Expected::Malformed {
                type_name: "view_submission",
                field: "view.id",
            },
        ),
        (
            fixture!("interactive_view_closed.json"),
            Expected::Interaction(InteractionKind::ViewClosed {
                user: "U0GRC0002".into(),
                view: Box::new(subscribe_modal("V0LHB0SUB2", None)),
                is_cleared: false,
            }),
        ),
        (
            fixture!("interactive_shortcut.json"),
            Expected::Interaction(InteractionKind::Unknown {
                type_name: "shortcut".into(),
            }),
        ),
    ]
}

#[test]
fn every_fixture_parses_to_its_typed_payload() {
    for ((name, text), expected) in table() {
        let Ok(Inbound::Envelope(envelope)) = parse_frame(text) else {
            panic!("{name}: not an envelope");
        };
        match (envelope.kind, expected) {
            (EnvelopeKind::SlashCommand(command), Expected::Command { text }) => {
                assert_eq!(command.text, text, "{name}");
                assert_eq!(command.team_id, "T0AAA0001", "{name}");
            }
            (EnvelopeKind::Event(callback), Expected::Event(event)) => {
                assert_eq!(callback.event, event, "{name}");
                assert_eq!(callback.team_id.as_deref(), Some("T0AAA0001"), "{name}");
                assert!(callback.event_id.is_some(), "{name}");
            }
            (EnvelopeKind::Interaction(interaction), Expected::Interaction(kind)) => {
                assert_eq!(interaction.kind, kind, "{name}");
                assert_eq!(interaction.team_id.as_deref(), Some("T0AAA0001"), "{name}");
                assert_eq!(interaction.enterprise_id, None, "{name}");
            }
            (EnvelopeKind::Unparsed { reason, .. }, Expected::Malformed { type_name, field }) => {
                assert!(
                    reason.contains(&format!("`{type_name}`")),
                    "{name}: {reason}"
                );
                assert!(reason.contains(&format!("`{field}`")), "{name}: {reason}");
            }
            (kind, _) => panic!("{name}: parsed to {kind:?}"),
        }
    }
}

#[test]
fn malformed_known_payloads_name_the_field_and_unknown_ones_pass() {
    let frame = |payload: &str| {
        let text = format!(r#"{{"type":"events_api","envelope_id":"e1","payload":{payload}}}"#);
        match parse_frame(&text) {
            Ok(Inbound::Envelope(envelope)) => envelope.kind,
            other => panic!("{other:?}"),
        }
    };
    let cases = [
        (
            r#"{"team_id":"T1","event":{"type":"tokens_revoked"}}"#,
            "`tokens_revoked` payload: field `event.tokens` is missing",
        ),
        (
            r#"{"team_id":"T1","event":{"type":"tokens_revoked","tokens":{"bot":"UBOT"}}}"#,
            "`tokens_revoked` payload: field `event.tokens.bot` is not a list",
        ),
        (
            r#"{"team_id":"T1","event":{"type":"app_home_opened","user":"U1","tab":"home"}}"#,
            "`app_home_opened` payload: field `event.channel` is missing",
        ),
        (
            r#"{"team_id":"T1","event":{"type":"message","channel_type":"im","channel":"D1","ts":"1","user":7}}"#,
            "`message` payload: field `event.user` is not a string",
        ),
        (
            r#"{"team_id":7,"event":{"type":"app_uninstalled"}}"#,
            "`app_uninstalled` payload: field `team_id` is not a string",
        ),
        (
            r#"{"event":{"type":5}}"#,
            "`events_api` payload: field `event.type` is not a string",
        ),
    ];
    for (payload, reason) in cases {
        assert_eq!(
            frame(payload),
            EnvelopeKind::Unparsed {
                type_name: "events_api".into(),
                reason: reason.into()
            },
            "{payload}"
        );
    }
    let EnvelopeKind::Event(callback) =
        frame(r#"{"event":{"type":"brand_new","user":{"odd":true}}}"#)
    else {
        panic!("an unknown event is still an event");
    };
    assert_eq!(
        callback.event,
        Event::Unknown {
            type_name: "brand_new".into()
        }
    );
    assert_eq!(callback.team_id, None);
}
