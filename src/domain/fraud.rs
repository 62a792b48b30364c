//! Fraud flags (SPEC §4): the names the reward calculation raises and programs block on, and what
//! each means in words for the people who review a flagged reward.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FraudFlag {
    SelfReferral,
    SharedIp,
    ExistingCustomer,
    DisposableDomain,
    Velocity,
}

impl FraudFlag {
    pub const ALL: [FraudFlag; 5] = [
        Self::SelfReferral,
        Self::SharedIp,
        Self::ExistingCustomer,
        Self::DisposableDomain,
        Self::Velocity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SelfReferral => "self_referral",
            Self::SharedIp => "shared_ip",
            Self::ExistingCustomer => "existing_customer",
            Self::DisposableDomain => "disposable_domain",
            Self::Velocity => "velocity",
        }
    }

    /// What the flag says, for a reviewer.
    pub fn describe(self) -> &'static str {
        match self {
            Self::SelfReferral => {
                "Self-referral: the referee has the referrer's email, or the same company domain \
                 (outside the free-mail list)"
            }
            Self::SharedIp => {
                "Shared signup IP: other referees of this referrer signed up from the same IP \
                 address within the window"
            }
            Self::ExistingCustomer => {
                "Already known: the referee was a CRM contact before the first touch"
            }
            Self::DisposableDomain => {
                "Disposable email: the referee's email domain is a throwaway-mail provider"
            }
            Self::Velocity => {
                "Velocity: the referrer made more referrals within the window than the limit allows"
            }
        }
    }
}

names!(FraudFlag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_the_config_accepts_has_words() {
        for name in crate::config::FRAUD_FLAGS {
            let flag: FraudFlag = name.parse().unwrap();
            assert_eq!(flag.as_str(), *name);
            assert!(flag.describe().len() > 20);
        }
        assert_eq!(FraudFlag::ALL.len(), crate::config::FRAUD_FLAGS.len());
        assert!("sybil".parse::<FraudFlag>().is_err());
    }
}
