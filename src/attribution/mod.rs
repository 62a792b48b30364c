//! The attribution ledger's edges: the CRM writes it causes (referral context on linked records,
//! restores of a tampered referral source, reads of records announced by id only) and the only
//! way to change a recorded attribution, an audited admin override. Applying events to the ledger
//! is [`crate::processing`]'s job.

pub mod overrides;
pub mod writeback;

pub use overrides::{override_attribution, AttributionChange, OverrideError};
