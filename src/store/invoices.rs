//! Invoices' SQL: what the product said a customer paid (`invoice.paid`) and gave back
//! (`invoice.refunded`). Both are facts, stored once per invoice id and per refund: a replayed
//! event changes nothing. Which referral an invoice belongs to is derived by the reconcile step.

use serde::Serialize;

use super::bulk::{self, Col, Param};
use super::tx::on_tx;
use super::{StoreError, Tx};
use crate::clock::Millis;

/// An invoice to record.
#[derive(Debug, Clone, Serialize)]
pub struct NewInvoice {
    pub invoice_id: String,
    pub email: Option<String>,
    pub crm_id: Option<String>,
    pub amount: String,
    pub currency: String,
    pub paid_at: Millis,
    pub period_start: Option<Millis>,
    pub period_end: Option<Millis>,
    pub inbox_event_id: i64,
}

/// A refund to record.
#[derive(Debug, Clone, Serialize)]
pub struct NewRefund {
    pub refund_key: String,
    pub invoice_id: String,
    pub amount: String,
    pub currency: String,
    pub refunded_at: Millis,
    pub inbox_event_id: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Invoice {
    pub invoice_id: String,
    pub email: Option<String>,
    pub crm_id: Option<String>,
    pub amount: String,
    pub currency: String,
    pub paid_at: i64,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
    pub referral_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Refund {
    pub refund_key: String,
    pub invoice_id: String,
    pub amount: String,
    pub currency: String,
    pub refunded_at: i64,
}

/// An invoice and the referral it was found to belong to.
#[derive(Debug, Clone, Serialize)]
pub struct InvoiceReferral {
    pub invoice_id: String,
    pub referral_id: String,
}

const INVOICE_COLUMNS: &str = "i.invoice_id, i.email, i.crm_id, i.amount, i.currency, i.paid_at, \
     i.period_start, i.period_end, i.referral_id";

impl Tx {
    pub async fn insert_invoices(
        &mut self,
        invoices: &[NewInvoice],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO invoices (invoice_id, email, crm_id, amount, currency, paid_at, \
                 period_start, period_end, inbox_event_id, recorded_at) \
             SELECT r.invoice_id, r.email, r.crm_id, r.amount, r.currency, r.paid_at, \
                 r.period_start, r.period_end, r.inbox_event_id, $2 FROM {rows} WHERE true \
             ON CONFLICT (invoice_id) DO NOTHING",
            &[
                ("invoice_id", Col::Text),
                ("email", Col::Text),
                ("crm_id", Col::Text),
                ("amount", Col::Text),
                ("currency", Col::Text),
                ("paid_at", Col::BigInt),
                ("period_start", Col::BigInt),
                ("period_end", Col::BigInt),
                ("inbox_event_id", Col::BigInt),
            ],
            invoices,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    pub async fn insert_refunds(
        &mut self,
        refunds: &[NewRefund],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO invoice_refunds (refund_key, invoice_id, amount, currency, refunded_at, \
                 inbox_event_id, recorded_at) \
             SELECT r.refund_key, r.invoice_id, r.amount, r.currency, r.refunded_at, \
                 r.inbox_event_id, $2 FROM {rows} WHERE true \
             ON CONFLICT (refund_key) DO NOTHING",
            &[
                ("refund_key", Col::Text),
                ("invoice_id", Col::Text),
                ("amount", Col::Text),
                ("currency", Col::Text),
                ("refunded_at", Col::BigInt),
                ("inbox_event_id", Col::BigInt),
            ],
            refunds,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// Which of `ids` are recorded invoices.
    pub async fn known_invoices(&mut self, ids: &[&str]) -> Result<Vec<String>, StoreError> {
        let found: Vec<(String,)> = self
            .bulk_fetch(
                "SELECT i.invoice_id FROM {rows} JOIN invoices i ON i.invoice_id = r.v",
                &bulk::LIST,
                &bulk::list(ids),
                &[],
            )
            .await?;
        Ok(found.into_iter().map(|(id,)| id).collect())
    }

    /// Which of `keys` are recorded refunds.
    pub async fn known_refunds(&mut self, keys: &[&str]) -> Result<Vec<String>, StoreError> {
        let found: Vec<(String,)> = self
            .bulk_fetch(
                "SELECT f.refund_key FROM {rows} JOIN invoice_refunds f ON f.refund_key = r.v",
                &bulk::LIST,
                &bulk::list(keys),
                &[],
            )
            .await?;
        Ok(found.into_iter().map(|(key,)| key).collect())
    }

    pub async fn invoices(&mut self, ids: &[&str]) -> Result<Vec<Invoice>, StoreError> {
        self.bulk_fetch(
            &format!(
                "SELECT {INVOICE_COLUMNS} FROM {{rows}} JOIN invoices i ON i.invoice_id = r.v \
                 ORDER BY i.invoice_id"
            ),
            &bulk::LIST,
            &bulk::list(ids),
            &[],
        )
        .await
    }

    /// The refunds of `invoice_ids`, in the order they happened.
    pub async fn refunds_of(&mut self, invoice_ids: &[&str]) -> Result<Vec<Refund>, StoreError> {
        self.bulk_fetch(
            "SELECT f.refund_key, f.invoice_id, f.amount, f.currency, f.refunded_at \
             FROM {rows} JOIN invoice_refunds f ON f.invoice_id = r.v \
             ORDER BY f.refunded_at, f.refund_key",
            &bulk::LIST,
            &bulk::list(invoice_ids),
            &[],
        )
        .await
    }

    /// Record which referral each invoice belongs to.
    pub async fn set_invoice_referrals(
        &mut self,
        found: &[InvoiceReferral],
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "UPDATE invoices SET referral_id = r.referral_id \
             FROM {rows} WHERE invoices.invoice_id = r.invoice_id",
            &[("invoice_id", Col::Text), ("referral_id", Col::Text)],
            found,
            &[],
        )
        .await?;
        Ok(())
    }

    /// The invoices of a referred customer: paid by its email or by one of its linked records.
    pub async fn invoice_ids_of(
        &mut self,
        referral_id: &str,
        email: &str,
    ) -> Result<Vec<String>, StoreError> {
        let found: Vec<(String,)> = on_tx!(self, |c| sqlx::query_as(
            "SELECT invoice_id FROM invoices WHERE email = $2 OR referral_id = $1 \
             UNION SELECT i.invoice_id FROM crm_records d JOIN invoices i \
                 ON i.crm_id = d.crm || ':' || d.object_type || ':' || d.object_id \
             WHERE d.referral_id = $1"
        )
        .bind(referral_id)
        .bind(email)
        .fetch_all(c)
        .await?);
        Ok(found.into_iter().map(|(id,)| id).collect())
    }
}
