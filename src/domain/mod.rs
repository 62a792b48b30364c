//! Domain vocabulary shared by ingest, processing, rewards and write-back: small types that parse
//! their input once and are valid from then on.

pub mod channel;
pub mod crm;
pub mod email;
pub mod market;
pub mod moment;
pub mod referrer;
pub mod reward;
pub mod stage;

pub use crm::{Crm, RecordKind};
pub use email::Email;
