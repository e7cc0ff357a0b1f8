//! placeholder crate docs (written with the codec)

pub mod topic;

/// The version of this crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
