//! Channels (SPEC §4 "Channel baseline"): where a deal came from, so referrals can be compared
//! with every other way deals arrive. `referral` is the channel of deals linked to a referral of
//! this program; every other deal takes the channel `[channels]` maps its CRM source value to
//! (HubSpot `hs_analytics_source`, Salesforce `LeadSource`): `other` when the value is not in the
//! mapping, `unknown` when the CRM gave none.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::reward::UnknownName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Linked to a referral of this program.
    Referral,
    /// Found the company: organic search, content, social, web forms.
    Inbound,
    /// Sales prospecting, bought lists, deals a rep created.
    Outbound,
    /// Paid search, paid social, advertising.
    Paid,
    /// Resellers and other channel partners (outside the referral program).
    Partners,
    /// Trade shows, seminars, webinars.
    Events,
    /// Direct traffic.
    Direct,
    /// A CRM source value mapped to `other`, or not in the mapping.
    Other,
    /// The CRM gave no source.
    Unknown,
}

impl Channel {
    pub const ALL: [Channel; 9] = [
        Self::Referral,
        Self::Inbound,
        Self::Outbound,
        Self::Paid,
        Self::Partners,
        Self::Events,
        Self::Direct,
        Self::Other,
        Self::Unknown,
    ];
    /// What a CRM source value may be mapped to: not `referral`, which only this program's
    /// links decide, nor `unknown`, which means "no value".
    pub const MAPPABLE: [Channel; 7] = [
        Self::Inbound,
        Self::Outbound,
        Self::Paid,
        Self::Partners,
        Self::Events,
        Self::Direct,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Paid => "paid",
            Self::Partners => "partners",
            Self::Events => "events",
            Self::Direct => "direct",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownName::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_through_their_names() {
        for channel in Channel::ALL {
            assert_eq!(channel.as_str().parse::<Channel>().unwrap(), channel);
            assert_eq!(
                serde_json::to_value(channel).unwrap(),
                serde_json::json!(channel.as_str())
            );
        }
        assert!("organic".parse::<Channel>().is_err());
        assert!(!Channel::MAPPABLE.contains(&Channel::Referral));
    }
}
