//! Reward vocabulary (SPEC §4): who a reward is for and the states of its lifecycle. The status
//! names are also the values of the CRM pick-lists `crm setup` creates, so they are fixed here once.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Who a reward is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Beneficiary {
    Referrer,
    Referee,
}

impl Beneficiary {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referrer => "referrer",
            Self::Referee => "referee",
        }
    }
}

impl FromStr for Beneficiary {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "referrer" => Ok(Self::Referrer),
            "referee" => Ok(Self::Referee),
            other => Err(UnknownName::new(other)),
        }
    }
}

/// `pending` (hold running) → `eligible` → `approved` → `paid`; side exits `reversed`, and
/// `needs_review` → `approved` or `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardStatus {
    Pending,
    Eligible,
    Approved,
    Paid,
    Reversed,
    NeedsReview,
    Rejected,
}

impl RewardStatus {
    /// In lifecycle order, the order the CRM pick-lists show them in.
    pub const ALL: [RewardStatus; 7] = [
        Self::Pending,
        Self::Eligible,
        Self::Approved,
        Self::Paid,
        Self::Reversed,
        Self::NeedsReview,
        Self::Rejected,
    ];
    pub const NAMES: [&'static str; 7] = [
        "pending",
        "eligible",
        "approved",
        "paid",
        "reversed",
        "needs_review",
        "rejected",
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// What a person reads in the CRM's pick-list.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Eligible => "Eligible",
            Self::Approved => "Approved",
            Self::Paid => "Paid",
            Self::Reversed => "Reversed",
            Self::NeedsReview => "Needs review",
            Self::Rejected => "Rejected",
        }
    }
}

impl fmt::Display for RewardStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RewardStatus {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownName::new(s))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a known name")]
pub struct UnknownName(String);

impl UnknownName {
    pub fn new(name: &str) -> Self {
        Self(name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in RewardStatus::ALL {
            assert_eq!(status.as_str().parse::<RewardStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert!("cancelled".parse::<RewardStatus>().is_err());
        assert_eq!(
            "referee".parse::<Beneficiary>().unwrap(),
            Beneficiary::Referee
        );
    }
}
