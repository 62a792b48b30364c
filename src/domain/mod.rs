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

/// Every value of a [`names!`] type parses back from its name and serializes as that name, and
/// `unknown` is refused.
#[cfg(test)]
pub(crate) fn assert_names_round_trip<T>(all: impl IntoIterator<Item = T>, unknown: &str)
where
    T: std::str::FromStr + std::fmt::Display + serde::Serialize + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    for value in all {
        let name = value.to_string();
        assert_eq!(name.parse::<T>().unwrap(), value);
        assert_eq!(
            serde_json::to_value(&value).unwrap(),
            serde_json::json!(name)
        );
    }
    assert!(unknown.parse::<T>().is_err(), "{unknown} parsed");
}

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
