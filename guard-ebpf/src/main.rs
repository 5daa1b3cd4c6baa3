//! guard's XDP program: drops UDP to protected ports (memcached's 11211 by default) from sources
//! that are not allowlisted, and counts every verdict.
//!
//! The decision itself is `guard_common::classify`, shared with the host tests; this file only
//! binds it to the kernel: packet access, map lookups and counters.
#![no_std]
#![no_main]

mod allowlist;
mod frame;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use guard_common::{
    Action, GuardConfig, Packet as _, Verdict, classify,
    maps::{ATTACHMENTS_MAX, Attachment},
    verdict::{COUNTER_SLOTS, Counter},
};

use crate::{allowlist::MapAllowlist, frame::Frame};

/// Protected ports and flags (one entry).
#[map]
static GUARD_CONFIG: Array<GuardConfig> = Array::with_max_entries(1, 0);

/// Packets and bytes per verdict, per CPU.
#[map]
static GUARD_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Interfaces the guard is attached to; user space's record, unused by the program.
#[map]
static GUARD_IFACES: HashMap<u32, Attachment> = HashMap::with_max_entries(ATTACHMENTS_MAX, 0);

/// The XDP entry point.
#[xdp]
pub fn guard(ctx: XdpContext) -> u32 {
    let frame = Frame::new(&ctx);
    let verdict = match GUARD_CONFIG.get(0) {
        Some(config) => classify(&frame, config, &MapAllowlist),
        // An array map always has its entry; pass rather than guess if it ever does not.
        None => Verdict::NotProtected,
    };
    count(verdict, frame.len() as u64);
    match verdict.action() {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

#[inline(always)]
fn count(verdict: Verdict, bytes: u64) {
    if let Some(counter) = GUARD_COUNTERS.get_ptr_mut(verdict.slot()) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and the pointer is valid.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

/// The program's license, as the kernel reads it.
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // A reachable panic makes the verifier reject the program ("last insn is not an exit or
    // jmp"), so a panic path can never load: see aya's ebpf-panic crate.
    loop {}
}
