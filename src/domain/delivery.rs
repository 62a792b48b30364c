//! The two queues the service keeps: where an inbox event came from and what processing decided
//! for it, and what became of an outbox row (a CRM write).

use serde::Serialize;

use super::reward::UnknownName;

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
    /// In the order of [`Self::ALL`].
    pub const NAMES: [&'static str; 4] = ["pending", "delivered", "dead", "coalesced"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

names!(DeliveryStatus);

/// Where an inbox event came from, stored as its name (`hubspot`, `hubspot-api`, `salesforce`,
/// `salesforce-callout`, `signup:<product source>`) and used as the `source` label of the
/// webhook metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventSource {
    /// A HubSpot webhook.
    HubSpot,
    /// A HubSpot record the service read through the API (a record announced by id only).
    HubSpotApi,
    /// A Salesforce Outbound Message.
    Salesforce,
    /// A Salesforce Apex callout, signed as a Standard Webhook.
    SalesforceCallout,
    /// A product event from the `[[product_sources]]` entry of this name.
    Product(String),
}

impl EventSource {
    const PRODUCT_PREFIX: &'static str = "signup:";
}

impl std::fmt::Display for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HubSpot => f.write_str("hubspot"),
            Self::HubSpotApi => f.write_str("hubspot-api"),
            Self::Salesforce => f.write_str("salesforce"),
            Self::SalesforceCallout => f.write_str("salesforce-callout"),
            Self::Product(name) => write!(f, "{}{name}", Self::PRODUCT_PREFIX),
        }
    }
}

impl std::str::FromStr for EventSource {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "hubspot" => Self::HubSpot,
            "hubspot-api" => Self::HubSpotApi,
            "salesforce" => Self::Salesforce,
            "salesforce-callout" => Self::SalesforceCallout,
            _ => match s.strip_prefix(Self::PRODUCT_PREFIX) {
                Some(name) if !name.is_empty() => Self::Product(name.to_string()),
                _ => return Err(UnknownName::new(s)),
            },
        })
    }
}

impl Serialize for EventSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_states_round_trip_through_their_names() {
        crate::domain::assert_names_round_trip(InboxStatus::ALL, "done");
        crate::domain::assert_names_round_trip(DeliveryStatus::ALL, "sent");
        for source in [
            EventSource::HubSpot,
            EventSource::HubSpotApi,
            EventSource::Salesforce,
            EventSource::SalesforceCallout,
            EventSource::Product("app".into()),
        ] {
            assert_eq!(source.to_string().parse::<EventSource>().unwrap(), source);
        }
        assert_eq!(EventSource::Product("app".into()).to_string(), "signup:app");
        for unknown in ["signup:", "stripe", "HubSpot"] {
            assert!(unknown.parse::<EventSource>().is_err(), "{unknown}");
        }
    }
}
