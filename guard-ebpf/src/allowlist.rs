//! The allowlist behind one narrow interface: `guard_common::Allowlist`.
//!
//! Today two LPM tries, one per address family. Only this module knows that.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use guard_common::{
    Allowlist,
    maps::{ALLOW_V4_MAX, ALLOW_V6_MAX, AllowEntry},
};

/// IPv4 allowlist.
#[map]
static GUARD_ALLOW_V4: LpmTrie<[u8; 4], AllowEntry> = LpmTrie::with_max_entries(ALLOW_V4_MAX, 0);

/// IPv6 allowlist.
#[map]
static GUARD_ALLOW_V6: LpmTrie<[u8; 16], AllowEntry> = LpmTrie::with_max_entries(ALLOW_V6_MAX, 0);

/// Allowlist lookups in the pinned maps.
pub struct MapAllowlist;

impl Allowlist for MapAllowlist {
    #[inline(always)]
    fn allows_v4(&self, addr: [u8; 4]) -> bool {
        GUARD_ALLOW_V4.get(Key::new(32, addr)).is_some()
    }

    #[inline(always)]
    fn allows_v6(&self, addr: [u8; 16]) -> bool {
        GUARD_ALLOW_V6.get(Key::new(128, addr)).is_some()
    }
}
