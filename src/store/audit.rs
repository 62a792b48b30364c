//! The audit log: who changed what, when and why (overrides, approvals, tamper restores, relinks).

use serde::Serialize;

use super::bulk::{Col, Param};
use super::tx::Tx;
use super::{on_pool, Store, StoreError};
use crate::clock::Millis;

/// A stored audit entry: what was written, numbered and timed by the log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub record: AuditRecord,
}

/// A new audit entry.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub reason: Option<&'a str>,
}

/// An owned audit entry, for writing many at once.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub reason: Option<String>,
}

impl From<&NewAudit<'_>> for AuditRecord {
    fn from(a: &NewAudit<'_>) -> Self {
        Self {
            actor: a.actor.to_string(),
            action: a.action.to_string(),
            entity_type: a.entity_type.to_string(),
            entity_id: a.entity_id.to_string(),
            old_value: a.old_value.clone(),
            new_value: a.new_value.clone(),
            reason: a.reason.map(str::to_string),
        }
    }
}

impl Tx {
    pub async fn audit(&mut self, entry: &NewAudit<'_>, now: Millis) -> Result<(), StoreError> {
        self.audit_all(&[AuditRecord::from(entry)], now).await
    }

    /// Write entries in the given order, one statement for all.
    pub async fn audit_all(
        &mut self,
        entries: &[AuditRecord],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO audit_log (at, actor, action, entity_type, entity_id, old_value, \
                 new_value, reason) \
             SELECT $2, r.actor, r.action, r.entity_type, r.entity_id, r.old_value, r.new_value, \
                 r.reason FROM {rows}",
            &[
                ("actor", Col::Text),
                ("action", Col::Text),
                ("entity_type", Col::Text),
                ("entity_id", Col::Text),
                ("old_value", Col::Text),
                ("new_value", Col::Text),
                ("reason", Col::Text),
            ],
            entries,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }
}

impl Store {
    pub async fn audit_entries(
        &self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT id, at, actor, action, entity_type, entity_id, old_value, new_value, reason \
             FROM audit_log WHERE entity_type = $1 AND entity_id = $2 ORDER BY id"
        )
        .bind(entity_type)
        .bind(entity_id)
        .fetch_all(p)
        .await?))
    }
}
