//! Markets (SPEC §4: `US`, `RU`, …): the code a program, a referrer and a referral are filed
//! under. Parsed and normalised once, where it enters (product events, the admin override,
//! partner import), so reports and CRM writes only ever see a short code.
//!
//! The rule: surrounding whitespace is dropped and letters are uppercased; what remains must be
//! 2 to 16 ASCII letters and digits, starting with a letter, optionally in groups joined by
//! single hyphens (`US`, `RU`, `EU-WEST`, `APAC2`). So a market can never start with `=`, `+`,
//! `-` or `@`, the characters that make a spreadsheet cell a formula.

use std::fmt;

use serde::{Deserialize, Serialize};

pub const MAX_CHARS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Market(String);

/// Why a market code was refused; the message completes "market …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be a market code of 2 to {MAX_CHARS} letters and digits, starting with a letter, \
     groups joined by single hyphens (like US, RU or EU-WEST)"
)]
pub struct InvalidMarket;

impl Market {
    pub fn parse(raw: &str) -> Result<Self, InvalidMarket> {
        let code = raw.trim().to_ascii_uppercase();
        let well_formed = (2..=MAX_CHARS).contains(&code.len())
            && code.starts_with(|c: char| c.is_ascii_uppercase())
            && code
                .split('-')
                .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_alphanumeric()));
        if well_formed {
            Ok(Self(code))
        } else {
            Err(InvalidMarket)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Market {
    type Error = InvalidMarket;
    fn try_from(raw: String) -> Result<Self, InvalidMarket> {
        Self::parse(&raw)
    }
}

impl From<Market> for String {
    fn from(market: Market) -> String {
        market.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_trimmed_and_uppercased() {
        for (raw, code) in [
            ("US", "US"),
            (" ru ", "RU"),
            ("eu-west", "EU-WEST"),
            ("APAC2", "APAC2"),
        ] {
            assert_eq!(Market::parse(raw).unwrap().as_str(), code);
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for raw in [
            "",
            "U",
            "=HYPERLINK(\"http://x\")",
            "+1+1",
            "-2+3",
            "@SUM(1+1)",
            "2US",
            "EU--WEST",
            "EU-",
            "-EU",
            "EU WEST",
            "ÜS",
            "ABCDEFGHIJKLMNOPQ",
        ] {
            assert_eq!(Market::parse(raw), Err(InvalidMarket), "{raw:?}");
        }
    }
}
