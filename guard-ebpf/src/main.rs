//! guard's XDP program: drops or rate-limits UDP to protected ports (memcached's 11211 by
//! default) from sources that are not allowlisted, and counts every verdict.
//!
//! The decision itself is `guard_common::classify`, shared with the host tests; this file only
//! binds it to the kernel: packet access, map lookups and counters.
#![no_std]
#![no_main]
// Atomic compare-and-swap and fetch-add: the BPF target's core has no atomic types with them.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod atomic;
mod frame;
mod lists;
mod ratelimit;
mod top;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use guard_common::{
    Action, GuardConfig, Packet as _, Verdict, classify,
    maps::{ATTACHMENTS_MAX, Attachment},
    parse::Source,
    verdict::{COUNTER_ENTRIES, Counter, counter_index},
};

use crate::{frame::Frame, lists::MapLists, ratelimit::MapBuckets};

/// Protected ports, policy and flags: global data in its own section, which the loader turns
/// into a one-entry array map (`maps::CONFIG_SECTION`, pinned as `maps::CONFIG`). The program
/// addresses it directly: no map lookup, no null check. User space rewrites it with map
/// updates; nothing in the program writes it.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.config")]
static mut GUARD_CONFIG: GuardConfig = GuardConfig::EMPTY;

/// Packets and bytes per interface and verdict, per CPU.
#[map]
static GUARD_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_ENTRIES, 0);

/// Interfaces the guard is attached to; user space's record, unused by the program.
#[map]
static GUARD_IFACES: HashMap<u32, Attachment> = HashMap::with_max_entries(ATTACHMENTS_MAX, 0);

/// The XDP entry point.
#[xdp]
pub fn guard(ctx: XdpContext) -> u32 {
    let frame = Frame::new(&ctx);
    let bytes = frame.len() as u64;
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: only read here; user space's updates are whole-value copies, as they are for
    // any array map the program reads.
    let config: &GuardConfig = unsafe { &*core::ptr::addr_of!(GUARD_CONFIG) };
    let decision = classify(&frame, config, &MapLists, &MapBuckets::new(ifindex));
    let seen = count(ifindex, decision.verdict, bytes);
    // Cheapest and rarest first: 1 in `top_sample` frames of a verdict get past the mask.
    // (The mask in 64 bits: no zero extension; `top_sample` 0 gives all ones, then the test
    // below.)
    if seen & u64::from(config.top_sample).wrapping_sub(1) == 0
        && config.top_sample != 0
        && is_drop(decision.verdict)
        && let Some(source) = decision.source
    {
        top::record(
            &source,
            decision.verdict,
            bytes,
            u64::from(config.top_sample),
        );
        // Sampled like top talkers, so that even a flood logs at most 1 in N drops. Off unless
        // the program was loaded at debug level (AYA_LOG_LEVEL, set by user space at load).
        match source {
            Source::V4(addr) => debug!(
                &ctx,
                "{} from {:i} (1 in {} drops logged)",
                decision.verdict.name(),
                u32::from_be_bytes(*addr),
                config.top_sample
            ),
            Source::V6(addr) => debug!(
                &ctx,
                "{} from {:i} (1 in {} drops logged)",
                decision.verdict.name(),
                *addr,
                config.top_sample
            ),
        }
    }
    match decision.action {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

/// Drops (and would-be drops) are what top talkers record.
#[inline(always)]
fn is_drop(verdict: Verdict) -> bool {
    matches!(
        verdict,
        Verdict::DroppedNotAllowlisted
            | Verdict::RateLimited
            | Verdict::Denied
            | Verdict::WouldDrop
    )
}

/// Counts a frame; returns this CPU's packet count of the verdict so far.
#[inline(always)]
fn count(ifindex: u32, verdict: Verdict, bytes: u64) -> u64 {
    match GUARD_COUNTERS.get_ptr_mut(counter_index(ifindex, verdict.slot())) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and the pointer is valid.
        Some(counter) => unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
            (*counter).packets
        },
        None => 0,
    }
}

/// Counts an event (a counter slot that is not a verdict).
#[inline(always)]
pub(crate) fn count_event(ifindex: u32, slot: u32) {
    if let Some(counter) = GUARD_COUNTERS.get_ptr_mut(counter_index(ifindex, slot)) {
        // SAFETY: as in `count`.
        unsafe { (*counter).packets += 1 };
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
