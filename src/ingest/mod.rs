//! Webhook ingest: signature schemes, body parsers for each sender, and the group-commit writer that
//! makes events durable before they are acknowledged. HTTP handling lives in `routes::webhooks`.

pub mod body;
pub mod hubspot;
pub mod partition;
pub mod product;
pub mod salesforce;
pub mod signature;
mod writer;

pub use partition::partition_of;
pub use writer::{AppendError, InboxWriter};
