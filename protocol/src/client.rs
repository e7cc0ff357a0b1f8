//! The client session state machine (in progress).
