//! What an outbox row asks of a CRM, as one type. Every CRM write the domain causes (referral
//! context, a restore of a tampered source, reward fields, a note, a Platform Event, a read) is
//! built here as a [`CrmCommand`] for one record, and the delivery worker decodes the same type
//! back; nothing else knows the stored `kind` names or payload shapes.
//!
//! Stored as two columns: `kind` (the serde tag, [`CommandKind`]) and `payload` (the variant's
//! fields as JSON), so a row reads the same in SQL as it did before the type existed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;
use crate::domain::Crm;
use crate::store::{CrmRecord, NewOutbox};

/// One CRM call's worth of intent for one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum CrmCommand {
    /// Set properties (HubSpot) or fields (Salesforce); an empty value clears one. Consecutive
    /// updates of a record are merged into one call, later values winning.
    UpdateProperties {
        properties: BTreeMap<String, String>,
    },
    /// A note on a HubSpot deal.
    CreateNote { body: String, timestamp: Millis },
    /// A Salesforce Platform Event (`event` is its API name).
    PublishEvent { event: String, fields: Value },
    /// Read the record (and a deal's contact associations) and hand the answer to the inbox.
    ReadRecord {},
}

/// The stored name of a [`CrmCommand`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    UpdateProperties,
    CreateNote,
    PublishEvent,
    ReadRecord,
}

impl CommandKind {
    pub const ALL: [CommandKind; 4] = [
        Self::UpdateProperties,
        Self::CreateNote,
        Self::PublishEvent,
        Self::ReadRecord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpdateProperties => "update_properties",
            Self::CreateNote => "create_note",
            Self::PublishEvent => "publish_event",
            Self::ReadRecord => "read_record",
        }
    }
}

crate::domain::names!(CommandKind);

/// A stored payload that is not what its kind says.
#[derive(Debug, thiserror::Error)]
#[error("stored {kind} payload cannot be read: {source}")]
pub struct UnreadableCommand {
    kind: CommandKind,
    source: serde_json::Error,
}

impl CrmCommand {
    pub fn kind(&self) -> CommandKind {
        match self {
            Self::UpdateProperties { .. } => CommandKind::UpdateProperties,
            Self::CreateNote { .. } => CommandKind::CreateNote,
            Self::PublishEvent { .. } => CommandKind::PublishEvent,
            Self::ReadRecord {} => CommandKind::ReadRecord,
        }
    }

    /// The `payload` column: the variant's fields.
    pub fn payload(&self) -> String {
        let tagged = serde_json::to_value(self).expect("a command serializes");
        tagged
            .get("payload")
            .map_or_else(|| "{}".to_string(), Value::to_string)
    }

    /// The command a stored row holds.
    pub fn decode(kind: CommandKind, payload: &str) -> Result<Self, UnreadableCommand> {
        let fields: Value =
            serde_json::from_str(payload).map_err(|source| UnreadableCommand { kind, source })?;
        serde_json::from_value(serde_json::json!({ "kind": kind, "payload": fields }))
            .map_err(|source| UnreadableCommand { kind, source })
    }

    /// Set `properties` on `record`.
    pub fn update(properties: BTreeMap<String, String>) -> Self {
        Self::UpdateProperties { properties }
    }

    /// This command, for `record`.
    pub fn on(self, record: &CrmRecord) -> NewOutbox {
        self.on_object(
            record.crm,
            &record.account,
            &record.object_type,
            &record.object_id,
        )
    }

    /// This command, for the record `crm`/`object_type`/`object_id` in `account`.
    pub fn on_object(
        self,
        crm: Crm,
        account: &str,
        object_type: &str,
        object_id: &str,
    ) -> NewOutbox {
        NewOutbox {
            crm,
            account: account.to_string(),
            object_type: object_type.to_string(),
            object_id: object_id.to_string(),
            command: self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_their_stored_columns() {
        let commands = [
            CrmCommand::update(
                [("referral_source".to_string(), "partner".to_string())]
                    .into_iter()
                    .collect(),
            ),
            CrmCommand::CreateNote {
                body: "Referral reward eligible".into(),
                timestamp: 1_700_000_000_000,
            },
            CrmCommand::PublishEvent {
                event: "Referral_Reward__e".into(),
                fields: serde_json::json!({"Status__c": "eligible"}),
            },
            CrmCommand::ReadRecord {},
        ];
        for command in commands {
            let kind = command.kind();
            assert_eq!(kind.as_str().parse::<CommandKind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_value(&command).unwrap()["kind"],
                serde_json::json!(kind.as_str())
            );
            assert_eq!(
                CrmCommand::decode(kind, &command.payload()).unwrap(),
                command
            );
        }
        // The shapes rows were stored in before the type existed.
        assert_eq!(
            CrmCommand::decode(CommandKind::ReadRecord, "{}").unwrap(),
            CrmCommand::ReadRecord {}
        );
        assert_eq!(
            CrmCommand::update(BTreeMap::new()).payload(),
            r#"{"properties":{}}"#
        );
    }

    #[test]
    fn a_payload_that_is_not_its_kind_is_an_error_naming_the_kind() {
        let err = CrmCommand::decode(CommandKind::CreateNote, r#"{"properties":{}}"#).unwrap_err();
        assert!(err.to_string().contains("create_note"), "{err}");
        assert!(CrmCommand::decode(CommandKind::UpdateProperties, "not json").is_err());
    }
}
