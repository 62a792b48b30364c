//! Which processing partition an event belongs to, decided once at ingest from what the event
//! concerns: a CRM record (`hubspot:deal:123`), a referee's email, or a referrer's code. Events
//! about one thing always share a partition, so they are applied by one processor at a time and
//! in arrival order; events about different things spread over all partitions, so several
//! processors can work at once. README "Processing" explains what crosses partitions.

use sha2::{Digest, Sha256};

use super::product::{ProductEvent, ProductPayload};
use crate::store::PARTITIONS;

/// The partition of everything routed by `key`. Stable across releases and machines (SHA-256,
/// not the standard library's hasher, whose output may change), because stored events keep it.
pub fn partition_of(key: &str) -> i32 {
    let digest = Sha256::digest(key.as_bytes());
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (head % PARTITIONS as u32) as i32
}

/// The routing key of an event about a referee (by normalised email).
pub fn email_key(email: &str) -> String {
    format!("email:{email}")
}

/// The routing key of an event about a referrer.
pub fn referrer_key(code: &str) -> String {
    format!("referrer:{code}")
}

/// The routing key of an invoice's events that name no referee (refunds).
pub fn invoice_key(invoice_id: &str) -> String {
    format!("invoice:{invoice_id}")
}

/// What a product event is about: the person's email for claims, activations, payments and
/// advocacy moments, the referrer's code for partner events, the invoice for refunds (and payments
/// known by a CRM id only), the event itself otherwise. A refund may so land in another partition
/// than its payment: the reconcile step matches them.
pub fn product_route_key(event: &ProductEvent) -> String {
    match &event.payload {
        ProductPayload::ReferralCreated(d) | ProductPayload::SignupCreated(d) => {
            email_key(&d.email)
        }
        ProductPayload::SignupActivated(a) => email_key(&a.email),
        ProductPayload::InvoicePaid(i) => match &i.email {
            Some(email) => email_key(email),
            None => invoice_key(&i.invoice_id),
        },
        ProductPayload::InvoiceRefunded(r) => invoice_key(&r.invoice_id),
        ProductPayload::Moment(m) => email_key(&m.email),
        ProductPayload::PartnerInvited(p) | ProductPayload::PartnerJoined(p) => {
            referrer_key(&p.code)
        }
        ProductPayload::Unknown => format!("event:{}", event.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Pinned values: a change here would send stored events' successors elsewhere.
        assert_eq!(
            partition_of("hubspot:deal:201"),
            partition_of("hubspot:deal:201")
        );
        let pinned: Vec<i32> = [
            "hubspot:contact:101",
            "email:ana@northwind.io",
            "referrer:ACME-7",
        ]
        .iter()
        .map(|k| partition_of(k))
        .collect();
        assert_eq!(pinned, vec![PINNED[0], PINNED[1], PINNED[2]]);
        let mut used = std::collections::BTreeSet::new();
        for i in 0..2_000 {
            let p = partition_of(&format!("hubspot:contact:{i}"));
            assert!((0..PARTITIONS).contains(&p));
            used.insert(p);
        }
        assert_eq!(used.len(), PARTITIONS as usize, "every partition gets work");
    }

    const PINNED: [i32; 3] = [49, 1, 2];

    #[test]
    fn payments_go_with_their_referee_and_refunds_with_their_invoice() {
        let route = |body: serde_json::Value| {
            let event = crate::ingest::product::parse_product_event(body.to_string().as_bytes())
                .expect("a valid event");
            product_route_key(&event)
        };
        let paid = |data: serde_json::Value| {
            serde_json::json!({"id": "e", "type": "invoice.paid", "occurred_at": "2026-12-01T00:00:00Z",
                "data": data})
        };
        let fields = serde_json::json!({"invoice_id": "in_1", "amount": "10", "currency": "USD",
            "paid_at": "2026-12-01T00:00:00Z"});
        let mut by_email = fields.clone();
        by_email["email"] = "Ana@Northwind.io".into();
        let mut by_record = fields;
        by_record["crm_id"] = "hubspot:contact:101".into();
        assert_eq!(route(paid(by_email)), "email:ana@northwind.io");
        assert_eq!(route(paid(by_record)), "invoice:in_1");
        let refund = serde_json::json!({"id": "r", "type": "invoice.refunded",
            "occurred_at": "2026-12-09T00:00:00Z", "data": {"invoice_id": "in_1", "amount": "5",
            "currency": "USD", "refunded_at": "2026-12-09T00:00:00Z"}});
        assert_eq!(route(refund), "invoice:in_1");
    }

    #[test]
    fn advocacy_moments_go_with_the_persons_email() {
        let event = crate::ingest::product::parse_product_event(
            br#"{"id":"e","type":"nps.submitted","occurred_at":"2026-11-20T10:00:00Z","data":{"email":"Ana@Northwind.io","score":9}}"#,
        )
        .unwrap();
        assert_eq!(product_route_key(&event), email_key("ana@northwind.io"));
    }
}
