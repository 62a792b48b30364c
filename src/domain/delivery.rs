//! The states of the two queues the service keeps: inbox events (what processing decided for a
//! webhook event) and outbox rows (what became of a CRM write).

use serde::Serialize;

/// What processing decided for an inbox event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    /// Stored, not processed yet.
    Pending,
    Processed,
    /// Nothing in it concerns the service (an object type or property it does not track).
    Ignored,
    /// A deal stage no `stage_map` names; replayable once the map has it.
    Unmapped,
    /// Refused with a reason; replayable.
    Failed,
}

impl InboxStatus {
    pub const ALL: [InboxStatus; 5] = [
        Self::Pending,
        Self::Processed,
        Self::Ignored,
        Self::Unmapped,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Unmapped => "unmapped",
            Self::Failed => "failed",
        }
    }
}

names!(InboxStatus);

/// What became of a CRM write or read in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    Delivered,
    /// Refused by the CRM for good, or out of attempts; replayable.
    Dead,
    /// Folded into a later write of the same record that carries its values.
    Coalesced,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] =
        [Self::Pending, Self::Delivered, Self::Dead, Self::Coalesced];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Coalesced => "coalesced",
        }
    }
}

names!(DeliveryStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_states_round_trip_through_their_names() {
        crate::domain::assert_names_round_trip(InboxStatus::ALL, "done");
        crate::domain::assert_names_round_trip(DeliveryStatus::ALL, "sent");
    }
}
