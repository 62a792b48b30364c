//! Referrer vocabulary: the kinds of people who refer (SPEC §3 `partner.*` events). The names are
//! what product events carry, what the `referrers.kind` column holds and what reports show.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::reward::UnknownName;

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

impl fmt::Display for PartnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PartnerKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownName::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in PartnerKind::ALL {
            assert_eq!(kind.as_str().parse::<PartnerKind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert!("vendor".parse::<PartnerKind>().is_err());
    }
}
