//! The allowlist and denylist behind one narrow interface: `guard_common::Lists`.
//!
//! Today one LPM trie per list and address family; only this module knows that.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use guard_common::{
    Lists, Match,
    maps::{ALLOW_V4_MAX, ALLOW_V6_MAX, PrefixEntry},
    matched,
};

/// IPv4 allowlist.
#[map]
static GUARD_ALLOW_V4: LpmTrie<[u8; 4], PrefixEntry> = LpmTrie::with_max_entries(ALLOW_V4_MAX, 0);

/// IPv6 allowlist.
#[map]
static GUARD_ALLOW_V6: LpmTrie<[u8; 16], PrefixEntry> = LpmTrie::with_max_entries(ALLOW_V6_MAX, 0);

/// IPv4 denylist.
#[map]
static GUARD_DENY_V4: LpmTrie<[u8; 4], PrefixEntry> = LpmTrie::with_max_entries(ALLOW_V4_MAX, 0);

/// IPv6 denylist.
#[map]
static GUARD_DENY_V6: LpmTrie<[u8; 16], PrefixEntry> = LpmTrie::with_max_entries(ALLOW_V6_MAX, 0);

/// List lookups in the maps.
pub struct MapLists;

impl Lists for MapLists {
    #[inline(always)]
    fn allow_v4(&self, addr: [u8; 4]) -> Match {
        GUARD_ALLOW_V4
            .get(Key::new(32, addr))
            .map_or(0, |e| matched(e.prefix_len))
    }

    #[inline(always)]
    fn allow_v6(&self, addr: [u8; 16]) -> Match {
        GUARD_ALLOW_V6
            .get(Key::new(128, addr))
            .map_or(0, |e| matched(e.prefix_len))
    }

    #[inline(always)]
    fn deny_v4(&self, addr: [u8; 4]) -> Match {
        GUARD_DENY_V4
            .get(Key::new(32, addr))
            .map_or(0, |e| matched(e.prefix_len))
    }

    #[inline(always)]
    fn deny_v6(&self, addr: [u8; 16]) -> Match {
        GUARD_DENY_V6
            .get(Key::new(128, addr))
            .map_or(0, |e| matched(e.prefix_len))
    }
}
