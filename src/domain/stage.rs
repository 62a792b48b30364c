//! Canonical deal stages (SPEC §4): every CRM pipeline stage maps onto this ladder.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `lead < qualified < demo < proposal < negotiation < won`, plus `lost` beside the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanonicalStage {
    Lead,
    Qualified,
    Demo,
    Proposal,
    Negotiation,
    Won,
    Lost,
}

impl CanonicalStage {
    pub const ALL: [CanonicalStage; 7] = [
        Self::Lead,
        Self::Qualified,
        Self::Demo,
        Self::Proposal,
        Self::Negotiation,
        Self::Won,
        Self::Lost,
    ];
    pub const NAMES: [&'static str; 7] = [
        "lead",
        "qualified",
        "demo",
        "proposal",
        "negotiation",
        "won",
        "lost",
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Closed stages end the sales cycle.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Won | Self::Lost)
    }

    /// A deal at this stage has reached `qualified` (`lost` is beside the ladder).
    pub fn is_qualified(self) -> bool {
        self >= Self::Qualified && self != Self::Lost
    }
}

impl fmt::Display for CanonicalStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a canonical stage")]
pub struct UnknownStage(String);

impl FromStr for CanonicalStage {
    type Err = UnknownStage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| UnknownStage(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_keep_the_ladder_order() {
        for stage in CanonicalStage::ALL {
            assert_eq!(stage.as_str().parse::<CanonicalStage>().unwrap(), stage);
        }
        assert!(CanonicalStage::Lead < CanonicalStage::Qualified);
        assert!(CanonicalStage::Negotiation < CanonicalStage::Won);
        assert!("closedwon".parse::<CanonicalStage>().is_err());
    }
}
