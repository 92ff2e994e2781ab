//! How each Socket Mode slot is doing, for `/readyz`, `status` and systemd's READY: its
//! state, when it last received an envelope, how often it reconnected, and how many
//! slots are connected (watchable).
//!
//! Owns `SocketHealth` (shared, cheap to clone), `SlotHealth` and `SocketState`. Must
//! never do I/O or decide anything about a socket; a panic elsewhere must never make it
//! unusable (a poisoned lock is taken over, so `SocketMode::run` can be run again).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The state of one socket slot, as `/readyz` and `status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SocketState {
    Connecting,
    Connected { since: Timestamp },
    Retrying { reason: String, retry_in_ms: u64 },
    LinkDisabled,
    Failed { reason: String },
    Stopped,
}

/// One slot's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotHealth {
    #[serde(flatten)]
    pub state: SocketState,
    pub last_envelope_at: Option<Timestamp>,
    pub reconnects: u64,
}

/// Shared, cheap-to-clone view of every socket slot.
#[derive(Debug, Clone)]
pub struct SocketHealth {
    slots: Arc<Mutex<Vec<SlotHealth>>>,
    connected: watch::Sender<usize>,
}

impl SocketHealth {
    pub fn new(slots: usize) -> Self {
        let initial = SlotHealth {
            state: SocketState::Connecting,
            last_envelope_at: None,
            reconnects: 0,
        };
        Self {
            slots: Arc::new(Mutex::new(vec![initial; slots])),
            connected: watch::Sender::new(0),
        }
    }

    /// The slots, even after a panic while they were locked: every change is a single
    /// assignment, so what a panicking holder left is still a valid health.
    fn lock(&self) -> MutexGuard<'_, Vec<SlotHealth>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes an envelope received on `slot` (the per-envelope path: one short lock, no
    /// recount, no wake-up of the connected watchers).
    pub(super) fn record_envelope(&self, slot: usize, at: Timestamp) {
        if let Some(health) = self.lock().get_mut(slot) {
            health.last_envelope_at = Some(at);
        }
    }

    pub(super) fn set_state(&self, slot: usize, state: SocketState) {
        let mut slots = self.lock();
        if let Some(health) = slots.get_mut(slot) {
            if matches!(state, SocketState::Connected { .. }) && health.last_envelope_at.is_some() {
                health.reconnects += 1;
            }
            health.state = state;
        }
        let connected = slots
            .iter()
            .filter(|health| matches!(health.state, SocketState::Connected { .. }))
            .count();
        self.connected.send_replace(connected);
    }

    pub fn snapshot(&self) -> Vec<SlotHealth> {
        self.lock().clone()
    }

    /// How many sockets have had `hello` and are still open.
    pub fn connected_count(&self) -> usize {
        *self.connected.borrow()
    }

    /// Follows [`Self::connected_count`] as it changes.
    pub fn watch_connected(&self) -> watch::Receiver<usize> {
        self.connected.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_counts_connected_slots() {
        let health = SocketHealth::new(2);
        assert_eq!(health.connected_count(), 0);
        health.set_state(
            1,
            SocketState::Connected {
                since: Timestamp::UNIX_EPOCH,
            },
        );
        assert_eq!(health.connected_count(), 1);
        health.set_state(1, SocketState::Stopped);
        assert_eq!(health.connected_count(), 0);
    }

    #[test]
    fn a_reconnect_is_counted_once_the_slot_had_envelopes() {
        let health = SocketHealth::new(1);
        let connected = SocketState::Connected {
            since: Timestamp::UNIX_EPOCH,
        };
        health.set_state(0, connected.clone());
        health.record_envelope(0, Timestamp::UNIX_EPOCH);
        health.set_state(0, SocketState::Connecting);
        health.set_state(0, connected);
        let slot = &health.snapshot()[0];
        assert_eq!(slot.reconnects, 1);
        assert_eq!(slot.last_envelope_at, Some(Timestamp::UNIX_EPOCH));
    }

    #[test]
    fn a_panic_while_locked_leaves_the_health_usable() {
        let health = SocketHealth::new(1);
        let holder = health.clone();
        let panicked = std::thread::spawn(move || {
            let _slots = holder.lock();
            panic!("a holder panics");
        })
        .join();
        assert!(panicked.is_err());
        health.set_state(0, SocketState::Stopped);
        assert_eq!(health.snapshot()[0].state, SocketState::Stopped);
    }
}
