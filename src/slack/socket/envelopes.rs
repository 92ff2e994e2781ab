//! What happens to one envelope once its frame is parsed: counted, deduplicated, acked,
//! and handed to the [`EnvelopeHandler`] on a task of its own. Events and interactions
//! are acked at once; a slash command's reply rides in the ack when it is ready within
//! `reply_budget`, else the ack is empty and the reply goes to `response_url`.
//!
//! Owns acks' shape, dedup of Slack's retries and the handler tasks. Must never await a
//! handler on the session's task, let a handler's panic reach the socket, or drop an
//! envelope because the dedup store failed (handling twice beats losing one).

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::json;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::session::AckSender;
use super::{EnvelopeHandler, SocketMode};
use crate::message::Message;
use crate::metrics::{KindLabel, TypeLabel};
use crate::slack::convert;
use crate::slack::envelope::{Envelope, EnvelopeKind, EventCallback, SlashCommand};
use crate::store::DedupKind;

impl<H: EnvelopeHandler> SocketMode<H> {
    /// Acks (or starts the work that acks) one envelope. Never awaits a handler.
    pub(super) fn accept_envelope(
        self: &Arc<Self>,
        slot: usize,
        envelope: Envelope,
        acks: &AckSender,
    ) {
        let received = Instant::now();
        let now = self.clock.now();
        self.metrics
            .envelopes
            .get_or_create(&TypeLabel {
                r#type: envelope.kind.type_name().to_string(),
            })
            .inc();
        self.health.record_envelope(slot, now);
        let span = info_span!(
            "envelope",
            envelope_id = %envelope.envelope_id,
            envelope_type = envelope.kind.type_name(),
            team = envelope.kind.team_id().unwrap_or("-"),
            retry = envelope.retry_attempt,
        );
        let _entered = span.enter();
        if !self.first_sighting(&envelope, now) {
            info!("duplicate envelope acked and dropped");
            self.metrics.duplicate_envelopes.inc();
            let _ = acks.send((bare_ack(&envelope.envelope_id), received));
            return;
        }
        match envelope.kind {
            EnvelopeKind::SlashCommand(command) => {
                let this = self.clone();
                let acks = acks.clone();
                self.tracker.spawn(
                    this.answer_slash_command(
                        envelope.envelope_id,
                        envelope.accepts_response_payload,
                        command,
                        (acks, received),
                    )
                    .in_current_span(),
                );
            }
            EnvelopeKind::Event(event) => {
                let _ = acks.send((bare_ack(&envelope.envelope_id), received));
                let handler = self.handler.clone();
                self.tracker
                    .spawn(async move { handler.event(event).await }.in_current_span());
            }
            EnvelopeKind::Interaction(interaction) => {
                let _ = acks.send((bare_ack(&envelope.envelope_id), received));
                let handler = self.handler.clone();
                self.tracker
                    .spawn(async move { handler.interaction(interaction).await }.in_current_span());
            }
            EnvelopeKind::Unparsed { reason, .. } => {
                let _ = acks.send((bare_ack(&envelope.envelope_id), received));
                warn!(%reason, "acked an envelope we cannot handle");
            }
        }
    }

    /// True unless this envelope (or, for events, this event) was seen before. A store
    /// failure counts as new: handling twice beats losing an envelope.
    fn first_sighting(&self, envelope: &Envelope, now: Timestamp) -> bool {
        let check = |kind, id: &str| {
            self.dedup
                .first_sighting(kind, id, now)
                .unwrap_or_else(|error| {
                    error!(%error, "dedup store failed; handling the envelope anyway");
                    true
                })
        };
        let new_envelope = check(DedupKind::Envelope, &envelope.envelope_id);
        let new_event = match &envelope.kind {
            EnvelopeKind::Event(EventCallback {
                event_id: Some(event_id),
                ..
            }) => check(DedupKind::Event, event_id),
            _ => true,
        };
        new_envelope && new_event
    }

    async fn answer_slash_command(
        self: Arc<Self>,
        envelope_id: String,
        accepts_payload: bool,
        command: SlashCommand,
        (acks, received): (AckSender, Instant),
    ) {
        let response_url = command.response_url.clone();
        let handler = self.handler.clone();
        let mut work =
            tokio::spawn(async move { handler.slash_command(command).await }.in_current_span());
        let reply = match tokio::time::timeout(self.settings.reply_budget, &mut work).await {
            Ok(Ok(reply)) if accepts_payload => {
                let _ = acks.send((payload_ack(&envelope_id, &reply), received));
                return;
            }
            Ok(finished) => {
                let _ = acks.send((bare_ack(&envelope_id), received));
                finished
            }
            Err(_over_budget) => {
                let _ = acks.send((bare_ack(&envelope_id), received));
                drop(acks);
                debug!("slash command over budget: acked empty, replying via response_url");
                work.await
            }
        };
        let reply = reply.unwrap_or_else(|join_error| {
            error!(error = %join_error, "slash command handler failed");
            self.count_handler_error("slash_command");
            Message::text(
                "Sorry, something went wrong handling that command. The error was logged.",
            )
        });
        if let Err(error) = self.web.respond(&response_url, &reply).await {
            warn!(%error, "could not post the reply to response_url");
            self.count_handler_error("response_url");
        }
    }

    fn count_handler_error(&self, kind: &str) {
        self.metrics
            .handler_errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }
}

fn bare_ack(envelope_id: &str) -> String {
    json!({ "envelope_id": envelope_id }).to_string()
}

fn payload_ack(envelope_id: &str, reply: &Message) -> String {
    json!({ "envelope_id": envelope_id, "payload": convert::ack_payload(reply) }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_slack_shaped() {
        assert_eq!(bare_ack("e1"), r#"{"envelope_id":"e1"}"#);
        let ack: serde_json::Value =
            serde_json::from_str(&payload_ack("e2", &Message::text("hi"))).expect("json");
        assert_eq!(ack["envelope_id"], "e2");
        assert_eq!(ack["payload"]["response_type"], "ephemeral");
        assert_eq!(ack["payload"]["text"], "hi");
    }
}
