//! Map names, sizes and key/value types shared by the XDP program and user space.
//!
//! The pin layout carries [`ABI_VERSION`]: any change to a map's name, type, key or value here
//! must bump it, so that a guard of another ABI refuses pinned state instead of misreading it.

/// Version of the pinned-state layout (map set, key and value types).
///
/// 2: the IPv4 lists gained their direct tables ([`ALLOW_V4_ROWS`] and the rest).
/// 3: the config's protected ports became a byte per port ([`crate::config::PORT_ENTRIES`]),
///    and the config map the program's global data ([`CONFIG_SECTION`]).
/// 4: each IPv4 direct table became one value of the program's global data
///    ([`V4_TABLE_SECTIONS`]): a one-entry array whose value is the whole table.
pub const ABI_VERSION: u32 = 4;

/// Config map (array, one [`crate::GuardConfig`]), as pinned.
pub const CONFIG: &str = "GUARD_CONFIG";
/// The config map's name in the object: the program's global-data section holding the
/// config, which the loader turns into a one-entry array map the program addresses directly.
pub const CONFIG_SECTION: &str = ".data.config";

/// The IPv4 direct tables, as (pin name, name in the object, size of the value in bytes):
/// global-data sections of the program, which addresses each table directly (no map lookup,
/// no key on the stack). Each is a one-entry array map whose value is the whole table; guard
/// creates those maps itself, memory-mappable, and hands them to the loader.
pub const V4_TABLE_SECTIONS: [(&str, &str, u32); 4] = [
    (ALLOW_V4_ROWS, ".bss.a4_l24", V4_ROWS_BYTES),
    (ALLOW_V4_CHUNKS, ".bss.a4_l32", V4_CHUNKS_BYTES),
    (DENY_V4_ROWS, ".bss.d4_l24", V4_ROWS_BYTES),
    (DENY_V4_CHUNKS, ".bss.d4_l32", V4_CHUNKS_BYTES),
];

/// A map's name in the object, given its pin name (they differ for [`CONFIG`] and the
/// [`V4_TABLE_SECTIONS`]).
pub fn object_name(pin_name: &str) -> &str {
    if pin_name == CONFIG {
        return CONFIG_SECTION;
    }
    match V4_TABLE_SECTIONS.iter().find(|(pin, ..)| *pin == pin_name) {
        Some((_, section, _)) => section,
        None => pin_name,
    }
}

/// Per-CPU counters map (per-CPU array of [`crate::verdict::Counter`], one slot per verdict).
pub const COUNTERS: &str = "GUARD_COUNTERS";
/// IPv4 allowlist prefixes (LPM trie, key: prefix length + 4 address bytes, value:
/// [`PrefixEntry`]). The set of record: what `guard list` shows and what bounds the list's
/// size. The program looks IPv4 sources up in the direct tables ([`ALLOW_V4_ROWS`],
/// [`ALLOW_V4_CHUNKS`]) and falls back to this trie only for a /24 marked [`slot::TRIE`].
pub const ALLOW_V4: &str = "GUARD_ALLOW_V4";
/// IPv4 allowlist, direct /24 table (one-entry array whose value is a [`V4Rows`]: a [`V4Row`]
/// per /16).
pub const ALLOW_V4_ROWS: &str = "GUARD_A4_L24";
/// IPv4 allowlist, per-address chunks of the /24s holding prefixes longer than /24 (one-entry
/// array whose value is a [`V4Chunks`]).
pub const ALLOW_V4_CHUNKS: &str = "GUARD_A4_L32";
/// IPv4 allowlist, the owner of each chunk (array of [`V4_CHUNKS`] `u64`: the /24's index
/// plus one, 0 for a free chunk). Written and read by user space only.
pub const ALLOW_V4_OWNERS: &str = "GUARD_A4_OWN";
/// IPv6 allowlist (LPM trie, key: prefix length + 16 address bytes, value: [`PrefixEntry`]).
pub const ALLOW_V6: &str = "GUARD_ALLOW_V6";
/// IPv4 denylist prefixes (LPM trie like [`ALLOW_V4`]).
pub const DENY_V4: &str = "GUARD_DENY_V4";
/// IPv4 denylist, direct /24 table (like [`ALLOW_V4_ROWS`]).
pub const DENY_V4_ROWS: &str = "GUARD_D4_L24";
/// IPv4 denylist, chunks (like [`ALLOW_V4_CHUNKS`]).
pub const DENY_V4_CHUNKS: &str = "GUARD_D4_L32";
/// IPv4 denylist, chunk owners (like [`ALLOW_V4_OWNERS`]).
pub const DENY_V4_OWNERS: &str = "GUARD_D4_OWN";
/// IPv6 denylist (LPM trie like [`ALLOW_V6`]).
pub const DENY_V6: &str = "GUARD_DENY_V6";
/// Per-source rate-limit buckets (LRU hash, key: [`crate::ratelimit::BucketKey`], value: the
/// bucket's time, `u64`).
pub const SOURCE_BUCKETS: &str = "GUARD_SRC_BKT";
/// Per-prefix rate-limit buckets (LRU hash, like [`SOURCE_BUCKETS`]).
pub const PREFIX_BUCKETS: &str = "GUARD_PFX_BKT";
/// The global rate-limit bucket (array of one `u64`, updated by compare-and-swap).
pub const GLOBAL_BUCKET: &str = "GUARD_GLOBAL";
/// Top talkers (LRU hash, key: [`crate::ratelimit::BucketKey`], value: [`TopEntry`]).
pub const TOP_TALKERS: &str = "GUARD_TOP";
/// Interfaces the guard is attached to (hash, key: ifindex, value: [`Attachment`]). Written
/// and read by user space only; it lives in the object so that it is pinned with the rest.
pub const ATTACHMENTS: &str = "GUARD_IFACES";

/// Name of the XDP program in the object.
pub const PROGRAM: &str = "guard";

/// Capacity of the IPv4 allowlist (and of the IPv4 denylist), in prefixes: the size of its
/// trie. The direct tables never make a list full: a /24 that finds no free chunk is looked
/// up in the trie instead.
pub const ALLOW_V4_MAX: u32 = 131_072;
/// Capacity of the IPv6 allowlist.
pub const ALLOW_V6_MAX: u32 = 32_768;
/// Default capacity of the per-source bucket map (set at load time).
pub const SOURCE_BUCKETS_DEFAULT: u32 = 65_536;
/// Default capacity of the per-prefix bucket map (set at load time).
pub const PREFIX_BUCKETS_DEFAULT: u32 = 16_384;
/// Default capacity of the top-talkers map (set at load time).
pub const TOP_TALKERS_DEFAULT: u32 = 1_024;
/// Capacity of the attachments map.
pub const ATTACHMENTS_MAX: u32 = 256;

/// Rows of an IPv4 direct table: one per /16, indexed by the address's first two bytes.
///
/// The maps of the IPv4 tables (rows, chunks, owners) are `BPF_F_MMAPABLE` arrays: user space
/// maps them into memory and reads and changes them in place.
pub const V4_ROWS: u32 = 65_536;
/// Chunks of an IPv4 list: at most this many /24s hold prefixes longer than /24 in the direct
/// tables; beyond it, such a /24 is looked up in the trie.
pub const V4_CHUNKS: u32 = 65_280;

/// An IPv4 direct table's rows: the value of its one-entry rows map (32 MiB).
pub type V4Rows = [V4Row; V4_ROWS as usize];
/// An IPv4 list's chunks: the value of its one-entry chunks map (16 MiB less 64 KiB).
pub type V4Chunks = [V4Chunk; V4_CHUNKS as usize];
/// Size of a rows map's value, bytes.
pub const V4_ROWS_BYTES: u32 = V4_ROWS * 512;
/// Size of a chunks map's value, bytes.
pub const V4_CHUNKS_BYTES: u32 = V4_CHUNKS * 256;

/// A row of an IPv4 direct table: the [`slot`] of each /24 of one /16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V4Row {
    /// Indexed by the address's third byte.
    pub slots: [u16; 256],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for V4Row {}

/// A chunk: the `Match` (longest matching prefix length plus one, 0 for none) of each address
/// of one /24.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V4Chunk {
    /// Indexed by the address's last byte.
    pub matches: [u8; 256],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for V4Chunk {}

/// What a /24's slot in a [`V4Row`] holds.
pub mod slot {
    /// Slots up to this value are the `Match` of every address of the /24 (0: no prefix holds
    /// it; `len + 1`: the longest prefix holding it is `len` long).
    pub const MAX_MATCH: u16 = 33;
    /// "Look this /24 up in the trie" (any value above [`MAX_MATCH`] and below [`CHUNK_BASE`]
    /// reads the same): the /24 needs a chunk and none was free.
    pub const TRIE: u16 = 255;
    /// Slots from this value on point to chunk `slot - CHUNK_BASE`.
    pub const CHUNK_BASE: u16 = 256;
}

/// Value of an allowlist or denylist entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixEntry {
    /// The entry's own prefix length, so that a lookup learns how specific its match is.
    pub prefix_len: u32,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for PrefixEntry {}

/// Value of a top-talkers entry: sampled, weighted estimates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopEntry {
    /// Dropped datagrams (estimate).
    pub packets: u64,
    /// Dropped bytes (estimate).
    pub bytes: u64,
    /// The last verdict recorded for the source (a `Verdict` slot).
    pub verdict: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for TopEntry {}

/// XDP attach modes, as recorded in [`Attachment::mode`].
pub mod mode {
    /// Native (driver) XDP.
    pub const NATIVE: u32 = 1;
    /// Generic (skb) XDP.
    pub const SKB: u32 = 2;
}

/// What user space records about one attached interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attachment {
    /// [`mode::NATIVE`] or [`mode::SKB`].
    pub mode: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Interface name, NUL-padded (IFNAMSIZ).
    pub name: [u8; 16],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Attachment {}

const _: () = assert!(size_of::<V4Rows>() == V4_ROWS_BYTES as usize);
const _: () = assert!(size_of::<V4Chunks>() == V4_CHUNKS_BYTES as usize);
// Every chunk index fits a slot, and every slot from the base on names a chunk (the program
// relies on it: it reads a chunk without a bounds check), and a slot cannot be both a `Match`
// and a chunk.
const _: () = assert!(slot::CHUNK_BASE as u32 + V4_CHUNKS - 1 == u16::MAX as u32);
const _: () = assert!(slot::MAX_MATCH < slot::TRIE && slot::TRIE < slot::CHUNK_BASE);
