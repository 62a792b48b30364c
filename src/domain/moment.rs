//! Advocacy moments (SPEC §4): the moments a customer is likely to say yes to a referral ask.
//! The names are what `[moments] kinds` lists, what `referral_ask_moment` holds in the CRM (a
//! pick-list `crm setup` creates) and what reports show.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MomentKind {
    /// A high NPS score (`nps.submitted`, at least `[moments] nps_min`).
    Nps,
    /// Onboarding completed (`onboarding.completed`).
    Onboarding,
    /// A usage milestone (`usage.milestone`).
    Usage,
    /// A renewal or expansion deal was won (`[renewals]`).
    Renewal,
}

impl MomentKind {
    pub const ALL: [MomentKind; 4] = [Self::Nps, Self::Onboarding, Self::Usage, Self::Renewal];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nps => "nps",
            Self::Onboarding => "onboarding",
            Self::Usage => "usage",
            Self::Renewal => "renewal",
        }
    }

    /// What a person reads in the CRM's pick-list.
    pub fn label(self) -> &'static str {
        match self {
            Self::Nps => "High NPS score",
            Self::Onboarding => "Onboarding completed",
            Self::Usage => "Usage milestone",
            Self::Renewal => "Renewal or expansion won",
        }
    }
}

/// What became of a moment: not decided yet, a referral ask, or passed over (with a reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MomentOutcome {
    Pending,
    Asked,
    Skipped,
}

impl MomentOutcome {
    pub const ALL: [MomentOutcome; 3] = [Self::Pending, Self::Asked, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Asked => "asked",
            Self::Skipped => "skipped",
        }
    }
}

names!(MomentKind, MomentOutcome);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        crate::domain::assert_names_round_trip(MomentKind::ALL, "birthday");
        crate::domain::assert_names_round_trip(MomentOutcome::ALL, "declined");
    }
}
