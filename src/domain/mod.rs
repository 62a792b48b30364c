//! Domain vocabulary shared by ingest, processing, rewards and write-back: small types that parse
//! their input once and are valid from then on.

/// `Display` and `FromStr` for vocabulary types from their `ALL` and `as_str`, so each keeps one
/// string mapping and an unknown name is an error naming it.
macro_rules! names {
    ($($name:ty),+ $(,)?) => {$(
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::reward::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::domain::reward::UnknownName(s.to_string()))
            }
        }
    )+};
}

pub(crate) use names;

pub mod channel;
pub mod crm;
pub mod delivery;
pub mod email;
pub mod fraud;
pub mod market;
pub mod moment;
pub mod payout;
pub mod referrer;
pub mod reward;
pub mod stage;

pub use crm::{Crm, RecordKind};
pub use delivery::{DeliveryStatus, EventSource, InboxStatus};
pub use email::Email;
