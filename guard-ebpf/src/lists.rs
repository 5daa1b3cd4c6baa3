//! The allowlist and denylist behind one narrow interface: `guard_common::Lists`.
//!
//! # IPv4: direct tables (DIR-24-8), O(1)
//!
//! An LPM trie lookup walks one node per branching bit: at 100,000 prefixes that is about 3.4
//! times the cost of a bare XDP_DROP here, each lookup a helper call (retpolines and SRSO's
//! safe RET make calls dear on this hardware). So each IPv4 list is looked up in two direct
//! tables instead, each one the program's global data: a one-entry array map whose value is
//! the whole table, addressed as a constant plus an offset computed from the address. No
//! helper, no key stored on the stack and loaded back, no bounds or null check (the indexes
//! are bytes of the address):
//!
//! 1. **Rows** (`GUARD_A4_L24`, `GUARD_D4_L24`): 65,536 rows, one per /16, indexed by the
//!    address's first two bytes; each row holds one `u16` slot per /24 (the third byte). A slot
//!    is either the list's `Match` for every address of the /24 (from prefixes of /24 or
//!    shorter, or prefixes that happen to give the whole /24 one answer), or the index of a
//!    chunk, or "look it up in the trie".
//! 2. **Chunks** (`GUARD_A4_L32`, `GUARD_D4_L32`): for a /24 that holds prefixes longer than
//!    /24, 256 bytes, the `Match` of each address (the last byte).
//!
//! So a lookup is one load from the tables for the sources of /24s without longer prefixes
//! (nearly every source: 100,000 random prefixes give 0.35% of /24s a chunk) and two for the
//! rest, with no helper call and no loop. Rows are indexed directly rather than through a
//! first level of /16 pointers: that level would add a dependent load to the common case and
//! save nothing, since 100,000 random prefixes already touch most /16s and the tables are
//! allocated whole. (As array maps of one row or chunk per entry, each lookup cost a key
//! stored to the stack and loaded back by the inlined lookup: a store-to-load round trip on
//! the packet's critical path.)
//!
//! Memory is fixed at load: 32 MiB of rows and 16 MiB of chunks per list (about 97 MiB for
//! both lists), whatever their contents. 100,000 prefixes of the usual mix (half /32s) need
//! about 58,000 chunks. When none is free, the /24 is marked for the trie: the LPM trie of
//! every prefix of the list (`GUARD_ALLOW_V4`, `GUARD_DENY_V4`), which user space keeps as
//! the set of record, answers for it, exactly but at the trie's cost. A list is therefore
//! never full before its trie is.
//!
//! User space (guard-user's `lists` module) computes the tables from the prefixes and keeps
//! them correct at every instant; the order of its writes is documented there. It creates the
//! tables' maps itself, memory-mappable (guard-user's `loader`).
//!
//! # IPv6: LPM tries
//!
//! One LPM trie per list, where it is cheap enough: IPv6 lists are short, and a direct table
//! over 128 bits is not an option.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, LpmTrie, lpm_trie::Key},
};
use guard_common::{
    Lists, Match,
    maps::{
        ALLOW_V4_MAX, ALLOW_V6_MAX, PrefixEntry, V4_CHUNKS, V4Chunk, V4Chunks, V4Row, V4Rows, slot,
    },
    matched,
};

/// IPv4 allowlist prefixes: the set of record, and the lookup of /24s marked for the trie.
#[map]
static GUARD_ALLOW_V4: LpmTrie<[u8; 4], PrefixEntry> = LpmTrie::with_max_entries(ALLOW_V4_MAX, 0);

/// IPv4 allowlist: a slot per /24 (every slot 0, no prefix, until user space writes it).
/// Global data, pinned as `GUARD_A4_L24`.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.a4_l24")]
static mut GUARD_A4_L24: V4Rows = [V4Row { slots: [0; 256] }; 65_536];

/// IPv4 allowlist: a `Match` per address of the /24s with longer prefixes. Global data,
/// pinned as `GUARD_A4_L32`.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.a4_l32")]
static mut GUARD_A4_L32: V4Chunks = [V4Chunk { matches: [0; 256] }; V4_CHUNKS as usize];

/// IPv4 allowlist: chunk owners, user space's record, unused by the program.
#[map]
static GUARD_A4_OWN: Array<u64> = Array::with_max_entries(V4_CHUNKS, BPF_F_MMAPABLE);

/// IPv6 allowlist.
#[map]
static GUARD_ALLOW_V6: LpmTrie<[u8; 16], PrefixEntry> = LpmTrie::with_max_entries(ALLOW_V6_MAX, 0);

/// IPv4 denylist prefixes.
#[map]
static GUARD_DENY_V4: LpmTrie<[u8; 4], PrefixEntry> = LpmTrie::with_max_entries(ALLOW_V4_MAX, 0);

/// IPv4 denylist: a slot per /24. Global data, pinned as `GUARD_D4_L24`.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.d4_l24")]
static mut GUARD_D4_L24: V4Rows = [V4Row { slots: [0; 256] }; 65_536];

/// IPv4 denylist: a `Match` per address of the /24s with longer prefixes. Global data,
/// pinned as `GUARD_D4_L32`.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.d4_l32")]
static mut GUARD_D4_L32: V4Chunks = [V4Chunk { matches: [0; 256] }; V4_CHUNKS as usize];

/// IPv4 denylist: chunk owners, user space's record, unused by the program.
#[map]
static GUARD_D4_OWN: Array<u64> = Array::with_max_entries(V4_CHUNKS, BPF_F_MMAPABLE);

/// IPv6 denylist.
#[map]
static GUARD_DENY_V6: LpmTrie<[u8; 16], PrefixEntry> = LpmTrie::with_max_entries(ALLOW_V6_MAX, 0);

/// List lookups in the maps.
pub struct MapLists;

/// The `Match` of an IPv4 source in one list's direct tables, or in its trie for a /24 marked
/// so.
#[inline(always)]
fn lookup_v4(
    rows: &V4Rows,
    chunks: &V4Chunks,
    trie: &LpmTrie<[u8; 4], PrefixEntry>,
    addr: &[u8; 4],
) -> Match {
    // A 16-bit row index and an 8-bit slot: always inside the table, with no bounds check.
    let row = (usize::from(addr[0]) << 8) | usize::from(addr[1]);
    let slot = rows[row].slots[usize::from(addr[2])];
    if slot >= slot::CHUNK_BASE {
        // In 64 bits: no mask back to 16 after the subtraction.
        let chunk = usize::from(slot) - usize::from(slot::CHUNK_BASE);
        // SAFETY: the base plus `V4_CHUNKS` is 65,536 (asserted where the constants are
        // defined), so any u16 slot from the base on names a chunk; the verifier checks the
        // access again from the slot's range.
        unsafe { core::hint::assert_unchecked(chunk < V4_CHUNKS as usize) };
        return Match::from(chunks[chunk].matches[usize::from(addr[3])]);
    } else if slot <= slot::MAX_MATCH {
        return Match::from(slot);
    }
    trie.get(Key::new(32, *addr))
        .map_or(0, |e| matched(e.prefix_len))
}

/// A table of the program's global data.
#[inline(always)]
fn table<T>(table: *const T) -> &'static T {
    // SAFETY: global data lives as long as the program, and the program only reads it. User
    // space changes single slots with atomic stores (guard-user's `lists::direct`).
    unsafe { &*table }
}

impl Lists for MapLists {
    #[inline(always)]
    fn allow_v4(&self, addr: &[u8; 4]) -> Match {
        lookup_v4(
            table(core::ptr::addr_of!(GUARD_A4_L24)),
            table(core::ptr::addr_of!(GUARD_A4_L32)),
            &GUARD_ALLOW_V4,
            addr,
        )
    }

    #[inline(always)]
    fn allow_v6(&self, addr: &[u8; 16]) -> Match {
        GUARD_ALLOW_V6
            .get(Key::new(128, *addr))
            .map_or(0, |e| matched(e.prefix_len))
    }

    #[inline(always)]
    fn deny_v4(&self, addr: &[u8; 4]) -> Match {
        lookup_v4(
            table(core::ptr::addr_of!(GUARD_D4_L24)),
            table(core::ptr::addr_of!(GUARD_D4_L32)),
            &GUARD_DENY_V4,
            addr,
        )
    }

    #[inline(always)]
    fn deny_v6(&self, addr: &[u8; 16]) -> Match {
        GUARD_DENY_V6
            .get(Key::new(128, *addr))
            .map_or(0, |e| matched(e.prefix_len))
    }
}
