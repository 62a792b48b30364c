//! Reward vocabulary (SPEC §4): who a reward is for, the states of its lifecycle, and what kind of
//! line it is. The status names are also the values of the CRM pick-lists `crm setup` creates, so
//! they are fixed here once.

use serde::Serialize;

/// Who a reward is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Beneficiary {
    Referrer,
    Referee,
}

impl Beneficiary {
    pub const ALL: [Beneficiary; 2] = [Self::Referrer, Self::Referee];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referrer => "referrer",
            Self::Referee => "referee",
        }
    }
}

names!(Beneficiary, RewardStatus);

/// `pending` (hold running) → `eligible` → `approved` → `paid`; side exits `reversed`, and
/// `needs_review` → `approved` or `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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

/// Why a reward line changes status. [`RewardMove::transition`] is the whole lifecycle: the
/// statuses each move starts from and the one it ends in; the store applies a move only to a
/// line still in one of those, so a move happens once or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardMove {
    /// The hold ended with the deal still won.
    Release,
    /// The deal left the success stage during the hold (or while the line awaited review).
    Reverse,
    /// A reversed line's deal reached the success stage again: its hold starts over.
    Reinstate,
    /// A reversed adjustment comes back into force (its cause returned).
    Restore,
    /// An adjustment that no longer applies (its deal won again, its refund undone) is taken off.
    Withdraw,
    /// An admin approved the line (out of review, or ahead of the payout run).
    Approve,
    /// An adjustment follows the line it takes back out of review.
    ApproveWithLine,
    /// An admin rejected the line.
    Reject,
    /// An adjustment follows the line it takes back into rejection.
    RejectWithLine,
    /// An admin marked an approved line paid.
    MarkPaid,
    /// A payout statement paid the line in full.
    PaidByStatement,
}

impl RewardMove {
    /// The statuses the move starts from, and where it ends.
    pub fn transition(self) -> (&'static [RewardStatus], RewardStatus) {
        use RewardStatus::*;
        match self {
            Self::Release => (&[Pending], Eligible),
            Self::Reverse => (&[Pending, NeedsReview], Reversed),
            Self::Reinstate => (&[Reversed], Pending),
            Self::Restore => (&[Reversed], Eligible),
            Self::Withdraw => (&[Pending, Eligible, Approved, NeedsReview], Reversed),
            Self::Approve => (&[NeedsReview, Eligible], Approved),
            Self::ApproveWithLine => (&[NeedsReview], Approved),
            Self::Reject => (&[NeedsReview, Pending, Eligible], Rejected),
            Self::RejectWithLine => (&[NeedsReview, Pending, Eligible, Approved], Rejected),
            Self::MarkPaid => (&[Approved], Paid),
            Self::PaidByStatement => (&[Eligible, Approved], Paid),
        }
    }

    pub fn from(self) -> &'static [RewardStatus] {
        self.transition().0
    }

    pub fn to(self) -> RewardStatus {
        self.transition().1
    }
}

impl RewardStatus {
    /// Whether the line counts as money owed or paid (not taken off).
    pub fn in_force(self) -> bool {
        !matches!(self, Self::Reversed | Self::Rejected)
    }

    /// Whether the line is payable in full: released from its hold and not settled otherwise.
    pub fn payable(self) -> bool {
        matches!(self, Self::Eligible | Self::Approved)
    }
}

/// What made a reward line (SPEC §4 "Payouts": the kinds a statement shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A referred deal reaching its program's success stage.
    Reward,
    /// A share of a referred customer's later revenue: a paid invoice or a won renewal deal.
    Recurring,
    /// Money taken back (negative): a refund, or a deal reopened or lost after its hold.
    Adjustment,
}

impl LineKind {
    pub const ALL: [LineKind; 3] = [Self::Reward, Self::Recurring, Self::Adjustment];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reward => "reward",
            Self::Recurring => "recurring",
            Self::Adjustment => "adjustment",
        }
    }
}

names!(LineKind);

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a known name")]
pub struct UnknownName(pub(crate) String);

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
        crate::domain::assert_names_round_trip(RewardStatus::ALL, "cancelled");
        crate::domain::assert_names_round_trip(LineKind::ALL, "bonus");
        assert_eq!(
            "referee".parse::<Beneficiary>().unwrap(),
            Beneficiary::Referee
        );
    }

    #[test]
    fn a_move_never_starts_from_where_it_ends_and_settled_lines_stay_settled() {
        let moves = [
            RewardMove::Release,
            RewardMove::Reverse,
            RewardMove::Reinstate,
            RewardMove::Restore,
            RewardMove::Withdraw,
            RewardMove::Approve,
            RewardMove::ApproveWithLine,
            RewardMove::Reject,
            RewardMove::RejectWithLine,
            RewardMove::MarkPaid,
            RewardMove::PaidByStatement,
        ];
        for m in moves {
            let (from, to) = m.transition();
            assert!(!from.contains(&to), "{m:?} starts where it ends");
            // Paid and rejected are final: nothing moves a line out of them.
            assert!(!from.contains(&RewardStatus::Paid), "{m:?} leaves paid");
            assert!(
                !from.contains(&RewardStatus::Rejected),
                "{m:?} leaves rejected"
            );
        }
        assert_eq!(RewardMove::Release.from(), [RewardStatus::Pending]);
        assert_eq!(RewardMove::MarkPaid.to(), RewardStatus::Paid);
    }
}
