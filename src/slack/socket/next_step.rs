//! The Socket Mode decisions, pure: what a connected session does next (wait until an
//! instant, send a ping, give up on a silent socket, close after draining) and what a
//! slot does with what its session tells it (mark itself connected, open a replacement
//! first, close and retry, pause while Socket Mode is off, reconnect).
//!
//! Owns the timing rules: a ping every `ping_interval` (pings missed while busy are sent
//! back to back), a socket silent for longer than `idle_timeout` at a ping is dead, and
//! a draining socket (replaced: `retire_grace`; daemon stopping: `drain_timeout`; the
//! first request wins) stops pinging and closes at its deadline. Must never do I/O, read
//! a clock (`now` is passed in), sleep, or allocate: the session consults it around
//! every frame.

use std::time::{Duration, Instant};

use crate::slack::envelope::DisconnectReason;

/// A session's time limits (from `SocketModeSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SessionLimits {
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub retire_grace: Duration,
    pub drain_timeout: Duration,
}

/// What a session tells its slot.
#[derive(Debug)]
pub(super) enum SessionEvent {
    Hello,
    Disconnect(DisconnectReason),
    Ended(String),
}

/// What a slot does after its session told it something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotStep {
    /// Hello: the socket serves. The slot is connected, its backoff starts over, and the
    /// sockets this one replaces close.
    Connected,
    /// Slack will recycle this socket: it keeps serving while the slot connects its
    /// replacement now, and closes on the replacement's hello.
    OpenReplacement,
    /// Too many sockets: close this one and connect again after the backoff.
    CloseAndRetry,
    /// Socket Mode is off in the app's settings: close, wait `backoff_max`, try again.
    CloseAndPause,
    /// The session ended on its own (or its task is gone): connect again after the
    /// backoff.
    Reconnect,
}

/// The slot's decision; `None` is a session task that ended without a word.
pub(super) fn slot_step(event: Option<&SessionEvent>) -> SlotStep {
    match event {
        Some(SessionEvent::Hello) => SlotStep::Connected,
        Some(SessionEvent::Disconnect(DisconnectReason::LinkDisabled)) => SlotStep::CloseAndPause,
        Some(SessionEvent::Disconnect(DisconnectReason::TooManyWebsockets)) => {
            SlotStep::CloseAndRetry
        }
        Some(SessionEvent::Disconnect(
            DisconnectReason::Warning
            | DisconnectReason::RefreshRequested
            | DisconnectReason::Other(_),
        )) => SlotStep::OpenReplacement,
        Some(SessionEvent::Ended(_)) | None => SlotStep::Reconnect,
    }
}

/// Why a session stops reading and drains its in-flight acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drain {
    /// Its replacement is connected (or the slot closed it): wait `retire_grace`.
    Retire,
    /// The daemon is stopping: wait `drain_timeout`.
    Shutdown,
}

/// What a session does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionStep {
    /// Nothing until this instant (unless a frame, an ack or a request comes first).
    WaitUntil(Instant),
    /// Send a ping, then tell [`SessionTimers::ping_sent`].
    SendPing,
    /// Nothing heard for longer than the idle timeout: end the session (the slot
    /// reconnects).
    Dead { silent_for: Duration },
    /// The drain deadline passed with acks still pending: close now.
    Close,
}

/// A session's clocks: when it last heard from Slack, when its next ping is due and, once
/// draining, when it must close.
#[derive(Debug, Clone)]
pub(super) struct SessionTimers {
    ping_interval: Duration,
    idle_timeout: Duration,
    retire_grace: Duration,
    drain_timeout: Duration,
    last_heard: Instant,
    next_ping: Instant,
    drain_deadline: Option<Instant>,
}

impl SessionTimers {
    /// A session that connected at `now`: first ping one interval later.
    pub(super) fn new(settings: SessionLimits, now: Instant) -> Self {
        Self {
            ping_interval: settings.ping_interval,
            idle_timeout: settings.idle_timeout,
            retire_grace: settings.retire_grace,
            drain_timeout: settings.drain_timeout,
            last_heard: now,
            next_ping: now + settings.ping_interval,
            drain_deadline: None,
        }
    }

    /// A frame (any frame, pongs included) arrived at `now`.
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    pub(super) fn is_draining(&self) -> bool {
        self.drain_deadline.is_some()
    }

    /// Stop reading and pinging; close once the acks are out or at the deadline. A
    /// session already draining keeps its first deadline.
    pub(super) fn drain(&mut self, why: Drain, now: Instant) {
        if self.drain_deadline.is_none() {
            let grace = match why {
                Drain::Retire => self.retire_grace,
                Drain::Shutdown => self.drain_timeout,
            };
            self.drain_deadline = Some(now + grace);
        }
    }

    /// The ping [`SessionStep::SendPing`] asked for went out: the next one is due one
    /// interval after the one just sent was.
    pub(super) fn ping_sent(&mut self) {
        self.next_ping += self.ping_interval;
    }

    /// When the session must next consult [`Self::next_step`] if nothing else happens.
    pub(super) fn wake_at(&self) -> Instant {
        self.drain_deadline.unwrap_or(self.next_ping)
    }

    /// What to do at `now`.
    pub(super) fn next_step(&self, now: Instant) -> SessionStep {
        if let Some(deadline) = self.drain_deadline {
            return if now >= deadline {
                SessionStep::Close
            } else {
                SessionStep::WaitUntil(deadline)
            };
        }
        if now < self.next_ping {
            return SessionStep::WaitUntil(self.next_ping);
        }
        let silent_for = now.saturating_duration_since(self.last_heard);
        if silent_for > self.idle_timeout {
            SessionStep::Dead { silent_for }
        } else {
            SessionStep::SendPing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SessionLimits {
        SessionLimits {
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            retire_grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
        }
    }

    /// What happens to a session, at seconds after it connected.
    #[derive(Clone, Copy)]
    enum Then {
        Heard(u64),
        PingSent,
        Drain(Drain, u64),
    }

    #[test]
    fn session_steps() {
        use SessionStep::*;
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let silent = |seconds: u64| Dead {
            silent_for: Duration::from_secs(seconds),
        };
        let cases: &[(&str, &[Then], u64, SessionStep)] = &[
            (
                "just connected: wait for the first ping",
                &[],
                0,
                WaitUntil(at(10)),
            ),
            (
                "before the first ping",
                &[Then::Heard(3)],
                9,
                WaitUntil(at(10)),
            ),
            ("ping due", &[], 10, SendPing),
            (
                "after a ping: wait for the next",
                &[Then::PingSent],
                10,
                WaitUntil(at(20)),
            ),
            (
                "frames do not move the ping schedule",
                &[Then::Heard(15), Then::PingSent],
                16,
                WaitUntil(at(20)),
            ),
            (
                "silent exactly the idle timeout: still a ping",
                &[Then::PingSent, Then::PingSent],
                30,
                SendPing,
            ),
            (
                "pong overdue: silent past the idle timeout at a ping",
                &[Then::PingSent, Then::PingSent, Then::PingSent],
                40,
                silent(40),
            ),
            (
                "heard lately: a late ping is still a ping",
                &[
                    Then::PingSent,
                    Then::PingSent,
                    Then::PingSent,
                    Then::Heard(39),
                ],
                40,
                SendPing,
            ),
            (
                "late wake-up: missed pings go out back to back",
                &[Then::Heard(24), Then::PingSent],
                25,
                SendPing,
            ),
            (
                "late wake-up: caught up",
                &[Then::Heard(24), Then::PingSent, Then::PingSent],
                25,
                WaitUntil(at(30)),
            ),
            (
                "replaced: wait the retire grace, no more pings",
                &[Then::Drain(Drain::Retire, 9)],
                10,
                WaitUntil(at(14)),
            ),
            (
                "shutdown while waiting: wait the drain timeout",
                &[Then::Drain(Drain::Shutdown, 9)],
                10,
                WaitUntil(at(29)),
            ),
            (
                "drain deadline passed: close",
                &[Then::Drain(Drain::Retire, 9)],
                14,
                Close,
            ),
            (
                "a silent socket that drains closes at its deadline, not as dead",
                &[Then::Drain(Drain::Shutdown, 35)],
                45,
                WaitUntil(at(55)),
            ),
            (
                "shutdown after a retire keeps the retire deadline",
                &[
                    Then::Drain(Drain::Retire, 9),
                    Then::Drain(Drain::Shutdown, 10),
                ],
                14,
                Close,
            ),
        ];
        for (name, history, now, expected) in cases {
            let mut timers = SessionTimers::new(settings(), start);
            for then in *history {
                match *then {
                    Then::Heard(seconds) => timers.heard(at(seconds)),
                    Then::PingSent => timers.ping_sent(),
                    Then::Drain(why, seconds) => timers.drain(why, at(seconds)),
                }
            }
            assert_eq!(timers.next_step(at(*now)), *expected, "{name}");
            if let WaitUntil(instant) = expected {
                assert_eq!(timers.wake_at(), *instant, "{name}: wake_at");
            }
        }
    }

    #[test]
    fn slot_steps() {
        use SlotStep::*;
        let disconnect = |reason| Some(SessionEvent::Disconnect(reason));
        let cases = [
            ("hello", Some(SessionEvent::Hello), Connected),
            (
                "disconnect warning",
                disconnect(DisconnectReason::Warning),
                OpenReplacement,
            ),
            (
                "disconnect refresh_requested",
                disconnect(DisconnectReason::RefreshRequested),
                OpenReplacement,
            ),
            (
                "a disconnect reason Slack invents later",
                disconnect(DisconnectReason::Other("new_reason".into())),
                OpenReplacement,
            ),
            (
                "too many websockets",
                disconnect(DisconnectReason::TooManyWebsockets),
                CloseAndRetry,
            ),
            (
                "Socket Mode switched off",
                disconnect(DisconnectReason::LinkDisabled),
                CloseAndPause,
            ),
            (
                "the session ended",
                Some(SessionEvent::Ended("connection lost".into())),
                Reconnect,
            ),
            ("the session task is gone", None, Reconnect),
        ];
        for (name, event, expected) in cases {
            assert_eq!(slot_step(event.as_ref()), expected, "{name}");
        }
    }
}
