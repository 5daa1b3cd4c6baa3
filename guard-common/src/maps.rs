//! Map names, sizes and key/value types shared by the XDP program and user space.
//!
//! The pin layout carries [`ABI_VERSION`]: any change to a map's name, type, key or value here
//! must bump it, so that a guard of another ABI refuses pinned state instead of misreading it.

/// Version of the pinned-state layout (map set, key and value types).
pub const ABI_VERSION: u32 = 1;

/// Config map (array, one [`crate::GuardConfig`]).
pub const CONFIG: &str = "GUARD_CONFIG";
/// Per-CPU counters map (per-CPU array of [`crate::verdict::Counter`], one slot per verdict).
pub const COUNTERS: &str = "GUARD_COUNTERS";
/// IPv4 allowlist (LPM trie, key: prefix length + 4 address bytes, value: [`PrefixEntry`]).
pub const ALLOW_V4: &str = "GUARD_ALLOW_V4";
/// IPv6 allowlist (LPM trie, key: prefix length + 16 address bytes, value: [`PrefixEntry`]).
pub const ALLOW_V6: &str = "GUARD_ALLOW_V6";
/// IPv4 denylist (LPM trie like [`ALLOW_V4`]).
pub const DENY_V4: &str = "GUARD_DENY_V4";
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

/// Capacity of the IPv4 allowlist.
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
