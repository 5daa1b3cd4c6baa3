//! The XDP object, built by build.rs and embedded in the binary.

/// The BPF ELF object holding guard's XDP program and maps.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard"));
