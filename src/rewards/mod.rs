//! Rewards: what a referred deal earns, once per deal and beneficiary. `calculate` is the pure
//! arithmetic and fraud checks; `engine` is the lifecycle (evaluate, hold, reverse, decide) and the
//! CRM writes each step causes.
pub mod calculate;
pub mod engine;
