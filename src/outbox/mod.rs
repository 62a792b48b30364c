//! CRM write-back: the delivery worker over the durable outbox, its retry schedule and the
//! per-account rate limiter. Rows are written by the domain (ledger, rewards) in the same
//! transaction as the change that caused them; this module only delivers them.

pub mod limiter;
pub mod retry;
pub mod worker;

pub use worker::{OutboxWorker, TickReport};
