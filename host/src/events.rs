//! The in-process event bus: tells live listeners that new events were stored.
//!
//! Owns only the wake-up signal. Events themselves live in storage, written in the same
//! transaction as the change they describe; listeners read them back from storage in order, so a
//! slow or lagging listener loses nothing. Must not store or order events itself.

use tokio::sync::broadcast;

use crate::models::Event;

/// Capacity of the wake-up channel; a listener that falls further behind simply re-reads storage.
const CHANNEL_CAPACITY: usize = 1024;

/// Cheap to clone; every clone publishes to the same listeners.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Announces events that have been committed to storage.
    pub fn publish(&self, events: Vec<Event>) {
        for event in events {
            tracing::debug!(event_id = %event.id, kind = ?event.kind, "event");
            // No listener is not an error.
            let _ = self.sender.send(event);
        }
    }

    /// A receiver of announcements made from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
