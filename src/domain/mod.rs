//! Domain vocabulary shared by ingest, attribution, rewards and write-back: small types that parse
//! their input once and are valid from then on.

pub mod market;
pub mod stage;
