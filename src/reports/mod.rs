//! Reports for RevOps (SPEC §6): computed from small aggregates the store reads, formatted as JSON
//! (serde), CSV or a terminal table. The funnel report lives in [`funnel`], the per-referrer scorecards in [`scorecard`], referred vs non-referred deals in
//! [`compare`]; what every report
//! shares (rounding, percentiles, the CSV and table writers) in [`format`].

pub mod compare;
pub mod format;
pub mod funnel;
pub mod scorecard;

pub use funnel::{
    compute, report, to_csv, to_table, FunnelFacts, FunnelFilter, FunnelReport, FunnelRow,
    MatrixCell,
};
