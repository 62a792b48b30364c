//! Rewards: what a referred deal earns, once per deal and beneficiary.
pub mod calculate;
