//! Rewards: what a referred deal earns, once per deal and beneficiary, and what the customer's
//! later revenue earns (recurring rewards) or gives back (adjustments). `calculate` and
//! `recurring` are the pure arithmetic and fraud checks; `engine` is the lifecycle (evaluate, hold,
//! reverse, claw back, decide) and the CRM writes each step causes.
pub mod calculate;
pub mod engine;
pub mod recurring;
