//! An email address as an identity: trimmed and lowercased once, where it enters the service, so
//! one person's address always compares (and is stored) equal.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// The normalised form of `raw`; `None` when nothing is left after trimming, or when it holds
    /// control characters (no address does).
    pub fn normalize(raw: &str) -> Option<Email> {
        let trimmed = raw.trim();
        (!trimmed.is_empty() && !trimmed.chars().any(char::is_control))
            .then(|| Email(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lowercased_and_blank_is_none() {
        assert_eq!(
            Email::normalize(" Ana@Northwind.IO ").unwrap().as_str(),
            "ana@northwind.io"
        );
        assert_eq!(Email::normalize("   "), None);
        assert_eq!(Email::normalize("ana\u{0}@x.io"), None);
    }
}
