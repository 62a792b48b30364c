//! Reports for RevOps (SPEC §6): computed from small aggregates the store reads, formatted as JSON
//! (serde), CSV or a terminal table. The funnel report lives in [`funnel`].

pub mod funnel;

pub use funnel::{
    compute, report, to_csv, to_table, FunnelFacts, FunnelFilter, FunnelReport, FunnelRow,
    MatrixCell,
};
