#![no_std]
// This file exists to enable the library target, so that guard-user's build script can depend on
// this crate (for rebuilds) while aya-build compiles the binary target for BPF.
