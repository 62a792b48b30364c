//! Referrer vocabulary: the kinds of people who refer (SPEC §3 `partner.*` events). The names are
//! what product events carry, what the `referrers.kind` column holds and what reports show.

use serde::Serialize;

/// Who a referrer is: a customer referring peers (user referrals), a partner (agencies,
/// resellers) or a creator (audiences).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartnerKind {
    Customer,
    #[default]
    Partner,
    Creator,
}

impl PartnerKind {
    pub const ALL: [PartnerKind; 3] = [Self::Customer, Self::Partner, Self::Creator];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Partner => "partner",
            Self::Creator => "creator",
        }
    }
}

names!(PartnerKind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        crate::domain::assert_names_round_trip(PartnerKind::ALL, "vendor");
    }
}
