//! guard's user space: loading the XDP guard, attaching it, managing its allowlist and
//! reading its counters. The `guard` binary is a thin layer over [`cli`].
pub mod attach;
pub mod cli;
pub mod lists;
pub mod loader;
pub mod maps;
pub mod object;
pub mod pins;
pub mod policy;
pub mod privileges;
pub mod stats;
pub mod status;
pub mod sys;
pub mod top;
