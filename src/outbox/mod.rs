//! CRM write-back: the commands the domain queues ([`command`]), the delivery worker over the
//! durable outbox, its retry schedule and the per-account rate limiter. Rows are written by the
//! domain (ledger, rewards) in the same transaction as the change that caused them; this module
//! only delivers them.

pub mod command;
pub mod limiter;
pub mod retry;
pub mod worker;

pub use command::{CommandKind, CrmCommand};
pub use worker::{OutboxWorker, TickReport};
