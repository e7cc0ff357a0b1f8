//! What the std prelude brings and a `no_std` crate must import from `alloc`: every module
//! that uses one of these imports `crate::prelude::*`, so that it builds with and without the
//! `std` feature alike.

pub(crate) use alloc::borrow::ToOwned;
pub(crate) use alloc::boxed::Box;
pub(crate) use alloc::format;
pub(crate) use alloc::string::String;
pub(crate) use alloc::vec;
pub(crate) use alloc::vec::Vec;
