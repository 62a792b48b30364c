//! Product events (`ingest::product::parse_product_event`): any bytes must give an event or an
//! error, never a panic, and an accepted event must be as normalised as the module promises.

use referral_sync::ingest::product::{
    normalize_email, parse_product_event, ProductPayload, MAX_CODE_CHARS, MAX_ID_CHARS,
};

pub fn check(data: &[u8]) {
    let event = match parse_product_event(data) {
        Ok(event) => event,
        Err(error) => {
            // Malformed (400) means the body is not a JSON object; anything else is a rule (422).
            let is_object = serde_json::from_slice::<serde_json::Value>(data)
                .is_ok_and(|value| value.is_object());
            assert_eq!(error.is_malformed(), !is_object, "{error}");
            return;
        }
    };
    assert!(!event.id.is_empty() && event.id.trim() == event.id);
    assert!(event.id.chars().count() <= MAX_ID_CHARS);
    assert!(!event.event_type.is_empty() && event.event_type.trim() == event.event_type);
    let emails: Vec<&str> = match &event.payload {
        ProductPayload::PartnerInvited(partner) | ProductPayload::PartnerJoined(partner) => {
            assert!(!partner.code.is_empty());
            assert!(!partner.code.chars().any(char::is_whitespace));
            assert!(partner.code.chars().count() <= MAX_CODE_CHARS);
            if matches!(event.payload, ProductPayload::PartnerInvited(_)) {
                assert!(partner.email.is_some(), "partner.invited without an email");
            }
            partner.email.as_deref().into_iter().collect()
        }
        ProductPayload::ReferralCreated(referral) | ProductPayload::SignupCreated(referral) => {
            if matches!(event.payload, ProductPayload::ReferralCreated(_)) {
                assert!(
                    referral.referral_code.is_some(),
                    "referral.created without a code"
                );
            }
            vec![referral.email.as_str()]
        }
        ProductPayload::SignupActivated(activation) => vec![activation.email.as_str()],
        ProductPayload::InvoicePaid(invoice) => {
            assert!(invoice.amount.is_sign_positive() && !invoice.amount.is_zero());
            assert!(invoice.email.is_some() || invoice.crm_id.is_some());
            assert_eq!(invoice.currency.len(), 3);
            invoice.email.as_deref().into_iter().collect()
        }
        ProductPayload::InvoiceRefunded(refund) => {
            assert!(refund.amount.is_sign_positive() && !refund.amount.is_zero());
            assert!(!refund.key().is_empty());
            Vec::new()
        }
        ProductPayload::Moment(moment) => {
            assert!(moment.score.is_none_or(|s| s <= 10), "{:?}", moment.score);
            vec![moment.email.as_str()]
        }
        ProductPayload::Unknown => Vec::new(),
    };
    for email in emails {
        assert!(email.contains('@'), "{email:?}");
        // One person's address always compares equal: normalising twice changes nothing.
        assert_eq!(normalize_email(email), email, "email not normalised");
    }
    serde_json::to_string(&event).expect("an accepted event serialises");
}
