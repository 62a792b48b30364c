//! The referral properties (HubSpot) and fields (Salesforce) the service writes (SPEC §5), each
//! with its configured name, the kind of value it holds and the records that carry it. `crm setup`
//! creates or checks them from this one list, and the Salesforce client sends each value the way
//! its field type wants it; the README's setup sections describe the same list.

use crate::config::{CrmFieldNames, Settings};
use crate::domain::moment::MomentKind;
use crate::domain::reward::RewardStatus;

/// What a property or field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    /// A decimal amount.
    Number,
    DateTime,
    /// One of [`RewardStatus`]: a pick-list.
    RewardStatus,
    /// One of the configured tier names: a pick-list.
    Tier,
    /// One of [`MomentKind`]: a pick-list.
    Moment,
}

impl ValueKind {
    /// HubSpot's property `type` and `fieldType`.
    pub fn hubspot_type(self) -> (&'static str, &'static str) {
        match self {
            Self::Text => ("string", "text"),
            Self::Number => ("number", "number"),
            Self::DateTime => ("datetime", "date"),
            Self::RewardStatus | Self::Tier | Self::Moment => ("enumeration", "select"),
        }
    }

    /// The Salesforce field type as `describe` reports it (`double` is a Number field).
    pub fn salesforce_type(self) -> &'static str {
        match self {
            Self::Text => "string",
            Self::Number => "double",
            Self::DateTime => "datetime",
            Self::RewardStatus | Self::Tier | Self::Moment => "picklist",
        }
    }

    /// The pick-list values `(value, label)`; empty for other kinds.
    pub fn options(self, settings: &Settings) -> Vec<(String, String)> {
        match self {
            Self::RewardStatus => RewardStatus::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), s.label().to_string()))
                .collect(),
            Self::Moment => MomentKind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), k.label().to_string()))
                .collect(),
            Self::Tier => tier_names(settings)
                .into_iter()
                .map(|name| {
                    let label = capitalised(&name);
                    (name, label)
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Which records carry a property or field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriers {
    /// Contacts and deals (Salesforce: Contact, Lead and Opportunity).
    PeopleAndDeals,
    /// Deals (Opportunity).
    Deals,
    /// The referee's contact (Salesforce: Contact, not Lead).
    Contacts,
}

impl Carriers {
    /// Whether a record of this HubSpot object type (`contact`, `deal`) carries it.
    pub fn on_hubspot(self, object_type: &str) -> bool {
        match self {
            Self::PeopleAndDeals => true,
            Self::Deals => object_type == "deal",
            Self::Contacts => object_type == "contact",
        }
    }

    /// Whether a record of this sObject carries it.
    pub fn on_salesforce(self, sobject: &str) -> bool {
        match self {
            Self::PeopleAndDeals => true,
            Self::Deals => sobject == "Opportunity",
            Self::Contacts => sobject == "Contact",
        }
    }
}

/// One referral property or field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferralField<'a> {
    /// As configured in `hubspot.properties` / `salesforce.fields`.
    pub name: &'a str,
    pub label: &'static str,
    pub kind: ValueKind,
    pub on: Carriers,
}

/// Every referral property or field, in the order setup reports them.
pub fn referral_fields(n: &CrmFieldNames) -> Vec<ReferralField<'_>> {
    use ValueKind::*;
    let by_carrier = [
        (
            Carriers::PeopleAndDeals,
            vec![
                (&n.referral_source, "Referral source", Text),
                (&n.referral_code, "Referral code", Text),
                (&n.referred_by, "Referred by", Text),
                (&n.referrer_tier, "Referrer tier", Tier),
                (&n.referral_market, "Referral market", Text),
                (&n.referral_first_touch_at, "Referral first touch", DateTime),
            ],
        ),
        (
            Carriers::Deals,
            vec![
                (&n.reward_status, "Referral reward status", RewardStatus),
                (&n.reward_amount, "Referral reward amount", Number),
                (&n.reward_currency, "Referral reward currency", Text),
                (&n.reward_hold_until, "Referral reward hold until", DateTime),
            ],
        ),
        (
            Carriers::Contacts,
            vec![
                (
                    &n.referee_reward_status,
                    "Referee reward status",
                    RewardStatus,
                ),
                (&n.referee_reward_amount, "Referee reward amount", Number),
                (&n.referee_reward_currency, "Referee reward currency", Text),
                (&n.ask_moment, "Referral ask moment", Moment),
                (&n.ask_at, "Referral ask at", DateTime),
            ],
        ),
    ];
    by_carrier
        .into_iter()
        .flat_map(|(on, fields)| {
            fields
                .into_iter()
                .map(move |(name, label, kind)| ReferralField {
                    name,
                    label,
                    kind,
                    on,
                })
        })
        .collect()
}

/// The names of every configured program's tiers, each once, in program then tier order.
pub fn tier_names(settings: &Settings) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for program in settings.programs.values() {
        for tier in &program.tiers {
            if !names.contains(&tier.name) {
                names.push(tier.name.clone());
            }
        }
    }
    names
}

fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_name_is_listed_once() {
        let settings = crate::config::Settings::load(&crate::config::ConfigSources {
            env: Some(Default::default()),
            ..Default::default()
        })
        .unwrap();
        let fields = referral_fields(&settings.hubspot.properties);
        let mut names: Vec<&str> = fields.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), fields.len());
        assert!(names.contains(&"referral_referee_reward_status"));
        assert!(names.contains(&"referral_ask_moment") && names.contains(&"referral_ask_at"));
        assert_eq!(capitalised("ambassador"), "Ambassador");
        assert_eq!(capitalised(""), "");
    }
}
