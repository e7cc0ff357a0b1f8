//! What the std prelude brings and a `no_std` crate must import from `alloc`: the modules
//! that use these import `crate::prelude::*`, so that the crate builds with and without std.

pub(crate) use alloc::borrow::ToOwned;
pub(crate) use alloc::boxed::Box;
pub(crate) use alloc::format;
pub(crate) use alloc::string::{String, ToString};
pub(crate) use alloc::vec;
pub(crate) use alloc::vec::Vec;
