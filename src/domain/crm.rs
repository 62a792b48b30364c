//! The CRMs the service speaks to, and the two kinds of record it tracks in them: people
//! (HubSpot contacts, Salesforce Contacts and Leads) and deals (HubSpot deals, Opportunities).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crm {
    #[serde(rename = "hubspot")]
    HubSpot,
    Salesforce,
}

impl Crm {
    pub const ALL: [Crm; 2] = [Crm::HubSpot, Crm::Salesforce];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HubSpot => "hubspot",
            Self::Salesforce => "salesforce",
        }
    }

    /// The product's name, as people write it.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::HubSpot => "HubSpot",
            Self::Salesforce => "Salesforce",
        }
    }

    /// The object type of a deal in this CRM, as stored (`deal` / `Opportunity`).
    pub fn deal_type(self) -> &'static str {
        match self {
            Self::HubSpot => "deal",
            Self::Salesforce => "Opportunity",
        }
    }

    /// The object types of people in this CRM, as stored.
    pub fn person_types(self) -> &'static [&'static str] {
        match self {
            Self::HubSpot => &["contact"],
            Self::Salesforce => &["Contact", "Lead"],
        }
    }

    /// Whether `object_type` names a person or a deal here; `None` for anything else.
    pub fn kind_of(self, object_type: &str) -> Option<RecordKind> {
        if object_type == self.deal_type() {
            Some(RecordKind::Deal)
        } else if self.person_types().contains(&object_type) {
            Some(RecordKind::Person)
        } else {
            None
        }
    }
}

impl fmt::Display for Crm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a CRM this service knows (hubspot, salesforce)")]
pub struct UnknownCrm(pub String);

impl FromStr for Crm {
    type Err = UnknownCrm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hubspot" => Ok(Self::HubSpot),
            "salesforce" => Ok(Self::Salesforce),
            other => Err(UnknownCrm(other.to_string())),
        }
    }
}

/// A person (HubSpot contact, Salesforce Contact or Lead) or a deal (HubSpot deal, Opportunity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Person,
    Deal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_kinds_follow_each_crms_object_names() {
        assert_eq!(Crm::HubSpot.kind_of("deal"), Some(RecordKind::Deal));
        assert_eq!(Crm::HubSpot.kind_of("contact"), Some(RecordKind::Person));
        assert_eq!(Crm::HubSpot.kind_of("Contact"), None);
        assert_eq!(Crm::Salesforce.kind_of("Lead"), Some(RecordKind::Person));
        assert_eq!(
            Crm::Salesforce.kind_of("Opportunity"),
            Some(RecordKind::Deal)
        );
        assert_eq!(Crm::Salesforce.kind_of("Account"), None);
        assert_eq!("hubspot".parse::<Crm>().unwrap(), Crm::HubSpot);
        assert!("HubSpot".parse::<Crm>().is_err());
    }
}
