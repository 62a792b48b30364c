//! referral-sync: keeps a write-once referral source on CRM contacts and deals, decides referral
//! rewards, and writes both back to HubSpot or Salesforce. See README.md for the module map.
#![forbid(unsafe_code)]

pub mod attribution;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crm;
pub mod domain;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod payouts;
pub mod processing;
pub mod reports;
pub mod rewards;
pub mod routes;
pub mod startup;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod web;
