//! The attribution ledger: turns stored webhook events into the write-once first touch, CRM record
//! links (deals carry a frozen copy), stage history and the tamper guard, queueing the CRM writes
//! each change causes.

pub mod decode;
pub mod overrides;
pub mod processor;
pub mod writeback;

pub use overrides::{override_attribution, AttributionChange, OverrideError};
pub use processor::InboxProcessor;
