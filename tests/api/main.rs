//! Integration tests: one binary, so the throwaway PostgreSQL cluster starts once per run.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod attribution;
mod browser;
mod channels;
mod cli;
mod config;
mod console;
mod delivery;
mod fidelity;
mod funnel;
mod fuzz_corpus;
mod health;
mod hostile;
mod moments;
mod payouts;
mod portal;
mod processing;
mod rewards;
mod store_contract;
mod webhooks;
