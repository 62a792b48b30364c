//! Channels (SPEC §4 "Channel baseline"): where a deal came from, so referrals can be compared
//! with every other way deals arrive. `referral` is the channel of deals linked to a referral of
//! this program; every other deal takes the channel `[channels]` maps its CRM source value to
//! (HubSpot `hs_analytics_source`, Salesforce `LeadSource`): `other` when the value is not in the
//! mapping, `unknown` when the CRM gave none.

use serde::{Deserialize, Serialize};

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

    /// Whether a CRM source value may be mapped to it: not `referral`, which only this
    /// program's links decide, nor `unknown`, which means "no value".
    pub fn is_mappable(self) -> bool {
        !matches!(self, Self::Referral | Self::Unknown)
    }
}

names!(Channel);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_through_their_names() {
        crate::domain::assert_names_round_trip(Channel::ALL, "organic");
        assert!(!Channel::Referral.is_mappable());
    }
}
