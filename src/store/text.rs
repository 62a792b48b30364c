//! How the vocabulary types are stored: as their names, in TEXT columns, on both backends. A
//! column whose text is not a name the type knows fails to decode with that name in the error,
//! instead of falling back to a default.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::domain::payout::PayoutStatus;
use crate::domain::reward::{Beneficiary, LineKind, RewardStatus};
use crate::domain::{Crm, DeliveryStatus, EventSource, InboxStatus};
use crate::outbox::CommandKind;

/// `Type` and `Decode` of a type stored as its name: a TEXT column, parsed back with `FromStr`,
/// and a name the type does not know is an error naming the type.
macro_rules! read_as_text {
    ($($name:ty),+ $(,)?) => {$(
        impl<DB: Database> Type<DB> for $name
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $name
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let name = <&'r str as Decode<'r, DB>>::decode(value)?;
                Ok(name.parse::<$name>().map_err(|e| {
                    format!("{}: {e}", stringify!($name))
                })?)
            }
        }
    )+};
}

/// Stored as its name both ways: read as `read_as_text!` reads it, and written as its `'static` name (`as_str`).
macro_rules! stored_as_text {
    ($($name:ty),+ $(,)?) => {$(
        read_as_text!($name);

        impl<'q, DB: Database> Encode<'q, DB> for $name
        where
            &'q str: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer<'q>,
            ) -> Result<IsNull, BoxDynError> {
                <&'q str as Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }
    )+};
}

stored_as_text!(
    Crm,
    RewardStatus,
    Beneficiary,
    LineKind,
    PayoutStatus,
    InboxStatus,
    DeliveryStatus,
    CommandKind,
);

// Stored as its name like the others, but a product source's name is not `'static`: written from
// an owned `String`.
read_as_text!(EventSource);

impl<'q, DB: Database> Encode<'q, DB> for EventSource
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, DB>>::encode(self.to_string(), buf)
    }
}
