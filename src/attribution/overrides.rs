//! The only way to change a recorded attribution: an explicit admin override with a reason. It
//! changes the referral, records an `override` touch, audits who/when/old/new/why, refreshes the copy
//! on every linked CRM record and queues the CRM writes — all in one transaction.

use serde::Deserialize;

use super::writeback;
use crate::clock::Millis;
use crate::config::Settings;
use crate::domain::market::Market;
use crate::ingest::product::ReferralSource;
use crate::store::{Attribution, NewAudit, NewTouch, Referral, Store, StoreError};

/// The new attribution; omitted fields keep their value. The first-touch time never changes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AttributionChange {
    pub referrer_code: Option<String>,
    pub source: Option<String>,
    pub market: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("referral {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sources a referral may have: [`ReferralSource`]'s values.
pub const SOURCES: &[&str] = ReferralSource::NAMES;

pub async fn override_attribution(
    store: &Store,
    settings: &Settings,
    referral_id: &str,
    change: &AttributionChange,
    actor: &str,
    reason: &str,
    now: Millis,
) -> Result<Referral, OverrideError> {
    if reason.trim().is_empty() {
        return Err(OverrideError::Invalid("reason is required".into()));
    }
    if let Some(source) = &change.source {
        if ReferralSource::parse(source).is_none() {
            return Err(OverrideError::Invalid(format!(
                "source must be one of {}",
                SOURCES.join(", ")
            )));
        }
    }
    let market = change
        .market
        .as_deref()
        .map(Market::parse)
        .transpose()
        .map_err(|e| OverrideError::Invalid(format!("market {e}")))?;
    let mut tx = store.begin().await?;
    // Links are derived state: never interleave with a reconcile round linking this referral.
    tx.lock_reconcile().await?;
    let before = tx
        .referral(referral_id)
        .await?
        .ok_or_else(|| OverrideError::NotFound(referral_id.to_string()))?;
    let old = before.attribution();
    let new = Attribution {
        referrer_code: change.referrer_code.clone().or(old.referrer_code.clone()),
        source: change.source.clone().or(old.source.clone()),
        market: market.map(Market::into_string).or(old.market.clone()),
        first_touch_at: old.first_touch_at,
    };
    if new == *old {
        return Err(OverrideError::Invalid(
            "the change is the attribution already recorded".into(),
        ));
    }
    tx.set_attribution(referral_id, &new, now).await?;
    tx.insert_touches(
        &[NewTouch {
            referral_id: referral_id.to_string(),
            inbox_event_id: None,
            kind: "admin_override".into(),
            referrer_code: new.referrer_code.clone(),
            source: new.source.clone(),
            market: new.market.clone(),
            occurred_at: now,
            outcome: "override".into(),
        }],
        now,
    )
    .await?;
    tx.audit(
        &NewAudit {
            actor,
            action: "attribution_override",
            entity_type: "referral",
            entity_id: referral_id,
            old_value: serde_json::to_string(&old).ok(),
            new_value: serde_json::to_string(&new).ok(),
            reason: Some(reason),
        },
        now,
    )
    .await?;
    for record in tx.records_linked_to(referral_id).await? {
        tx.link_record(&record.key(), referral_id, &new, now)
            .await?;
        let write = writeback::context_write(&mut tx, settings, &record, &new).await?;
        tx.enqueue(&write, now).await?;
    }
    let after = tx
        .referral(referral_id)
        .await?
        .ok_or_else(|| OverrideError::NotFound(referral_id.to_string()))?;
    tx.commit().await?;
    Ok(after)
}
