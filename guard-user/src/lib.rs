//! guard's user space: loading the XDP guard, attaching it, managing its allowlist and
//! reading its counters. The `guard` binary is a thin layer over [`cli`].
pub mod attach;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod journal;
pub mod lists;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod object;
pub mod persist;
pub mod pins;
pub mod policy;
pub mod privileges;
pub mod reconcile;
pub mod stats;
pub mod status;
pub mod sys;
pub mod top;
