//! Types shared by guard's XDP program and user space, and the reference classifier.
//!
//! Everything here is `no_std` and allocation-free: the XDP program (guard-ebpf) compiles the
//! very same [`classify()`] function that host tests run, so the kernel's verdict and the host
//! model cannot drift apart. Map lookups are injected through the [`Lists`] and
//! [`ratelimit::Buckets`] traits and packet
//! reads through the [`Packet`] trait.
#![no_std]

pub mod classify;
pub mod config;
pub mod maps;
pub mod parse;
pub mod ratelimit;
pub mod verdict;

pub use classify::{Decision, Lists, Match, classify, matched};
pub use config::GuardConfig;
pub use parse::Packet;
pub use verdict::{Action, Verdict};
