//! Typed handles on guard's maps, opened from pins or taken from a freshly loaded object.

use std::{marker::PhantomData, os::fd::AsFd as _};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
};
use guard_common::{
    GuardConfig,
    maps::{
        ALLOW_V4, ALLOW_V4_CHUNKS, ALLOW_V4_OWNERS, ALLOW_V4_ROWS, ALLOW_V6, ATTACHMENTS,
        Attachment, CONFIG, COUNTERS, DENY_V4, DENY_V4_CHUNKS, DENY_V4_OWNERS, DENY_V4_ROWS,
        DENY_V6, GLOBAL_BUCKET, PREFIX_BUCKETS, PrefixEntry, SOURCE_BUCKETS, TOP_TALKERS, TopEntry,
        V4_CHUNKS, V4_ROWS, V4Chunk, V4Row, object_name,
    },
    ratelimit::BucketKey,
    verdict::Counter,
};

use crate::{pins::PinLayout, sys::MappedArray};

/// An IPv4 direct table: a one-entry, memory-mappable array map whose value is the whole
/// table, `len` entries of `E` (a [`V4Row`] or a [`V4Chunk`]), which the program addresses
/// as global data. User space reads and changes it through a mapping.
pub struct V4Table<E> {
    map: MapData,
    len: u32,
    _entry: PhantomData<E>,
}

impl<E: Pod> V4Table<E> {
    /// The table in `map`, which must hold one value of `len` entries.
    fn new(map: MapData, len: u32, name: &str) -> anyhow::Result<Self> {
        let info = map
            .info()
            .with_context(|| format!("reading {name}'s map info"))?;
        let bytes = u64::from(len) * size_of::<E>() as u64;
        if info.max_entries() != 1 || u64::from(info.value_size()) != bytes {
            bail!(
                "{name} holds {} values of {} bytes, not one of {bytes}",
                info.max_entries(),
                info.value_size()
            );
        }
        Ok(Self {
            map,
            len,
            _entry: PhantomData,
        })
    }

    /// Number of entries (rows or chunks).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maps the whole table into this process, read-write.
    pub fn mapped(&self) -> anyhow::Result<MappedArray> {
        MappedArray::new(self.map.fd().as_fd(), self.len as usize * size_of::<E>())
            .context("mapping an IPv4 table into memory")
    }

    /// Entry `index` as it is now (for checks; changes go through `lists`).
    pub fn get(&self, index: u32) -> anyhow::Result<E> {
        if index >= self.len {
            bail!("entry {index} is beyond the table's {}", self.len);
        }
        let memory = self.mapped()?;
        // SAFETY: the mapping holds `len` entries of `E`, which is valid for any bytes; the
        // entry may change under us, as any map value read by syscall may.
        Ok(unsafe {
            memory
                .as_ptr()
                .cast::<E>()
                .add(index as usize)
                .read_volatile()
        })
    }

    /// Overwrites entry `index` (for tests that break a table on purpose).
    pub fn set(&self, index: u32, value: &E) -> anyhow::Result<()> {
        if index >= self.len {
            bail!("entry {index} is beyond the table's {}", self.len);
        }
        let memory = self.mapped()?;
        // SAFETY: as in `get`; the mapping is writable.
        unsafe {
            memory
                .as_ptr()
                .cast::<E>()
                .add(index as usize)
                .write_volatile(*value)
        };
        Ok(())
    }
}

/// An IPv4 table's rows.
pub type V4RowsMap = V4Table<V4Row>;
/// An IPv4 list's chunks.
pub type V4ChunksMap = V4Table<V4Chunk>;

fn rows(map: MapData, name: &str) -> anyhow::Result<V4RowsMap> {
    V4Table::new(map, V4_ROWS, name)
}

fn chunks(map: MapData, name: &str) -> anyhow::Result<V4ChunksMap> {
    V4Table::new(map, V4_CHUNKS, name)
}

/// The `MapData` of a table map taken from a loaded object.
fn array_data(map: Map, name: &str) -> anyhow::Result<MapData> {
    match map {
        Map::Array(data) => Ok(data),
        _ => bail!("{name} is not an array map"),
    }
}

/// Every map of the guard.
pub struct GuardMaps {
    /// Protected ports, policy and flags.
    pub config: Array<MapData, GuardConfig>,
    /// Per-CPU verdict counters.
    pub counters: PerCpuArray<MapData, Counter>,
    /// IPv4 allowlist prefixes (the set of record, and the fallback lookup).
    pub allow_v4: LpmTrie<MapData, [u8; 4], PrefixEntry>,
    /// IPv4 allowlist, direct /24 table.
    pub allow_v4_rows: V4RowsMap,
    /// IPv4 allowlist, per-address chunks.
    pub allow_v4_chunks: V4ChunksMap,
    /// IPv4 allowlist, chunk owners.
    pub allow_v4_owners: Array<MapData, u64>,
    /// IPv6 allowlist.
    pub allow_v6: LpmTrie<MapData, [u8; 16], PrefixEntry>,
    /// IPv4 denylist prefixes (the set of record, and the fallback lookup).
    pub deny_v4: LpmTrie<MapData, [u8; 4], PrefixEntry>,
    /// IPv4 denylist, direct /24 table.
    pub deny_v4_rows: V4RowsMap,
    /// IPv4 denylist, per-address chunks.
    pub deny_v4_chunks: V4ChunksMap,
    /// IPv4 denylist, chunk owners.
    pub deny_v4_owners: Array<MapData, u64>,
    /// IPv6 denylist.
    pub deny_v6: LpmTrie<MapData, [u8; 16], PrefixEntry>,
    /// Per-source rate-limit buckets (LRU).
    pub source_buckets: HashMap<MapData, BucketKey, u64>,
    /// Per-prefix rate-limit buckets (LRU).
    pub prefix_buckets: HashMap<MapData, BucketKey, u64>,
    /// The global rate-limit bucket.
    pub global_bucket: Array<MapData, u64>,
    /// Top talkers (LRU).
    pub top: HashMap<MapData, BucketKey, TopEntry>,
    /// Attached interfaces (user space's record).
    pub attachments: HashMap<MapData, u32, Attachment>,
}

/// The names of all maps.
pub const MAP_NAMES: [&str; 17] = [
    CONFIG,
    COUNTERS,
    ALLOW_V4,
    ALLOW_V4_ROWS,
    ALLOW_V4_CHUNKS,
    ALLOW_V4_OWNERS,
    ALLOW_V6,
    DENY_V4,
    DENY_V4_ROWS,
    DENY_V4_CHUNKS,
    DENY_V4_OWNERS,
    DENY_V6,
    SOURCE_BUCKETS,
    PREFIX_BUCKETS,
    GLOBAL_BUCKET,
    TOP_TALKERS,
    ATTACHMENTS,
];

impl GuardMaps {
    /// Opens the pinned maps under `layout`.
    pub fn open(layout: &PinLayout) -> anyhow::Result<Self> {
        let pinned = |name: &str| {
            let path = layout.map(name);
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))
        };
        Ok(Self {
            config: Array::try_from(Map::Array(pinned(CONFIG)?))?,
            counters: PerCpuArray::try_from(Map::PerCpuArray(pinned(COUNTERS)?))?,
            allow_v4: LpmTrie::try_from(Map::LpmTrie(pinned(ALLOW_V4)?))?,
            allow_v4_rows: rows(pinned(ALLOW_V4_ROWS)?, ALLOW_V4_ROWS)?,
            allow_v4_chunks: chunks(pinned(ALLOW_V4_CHUNKS)?, ALLOW_V4_CHUNKS)?,
            allow_v4_owners: Array::try_from(Map::Array(pinned(ALLOW_V4_OWNERS)?))?,
            allow_v6: LpmTrie::try_from(Map::LpmTrie(pinned(ALLOW_V6)?))?,
            deny_v4: LpmTrie::try_from(Map::LpmTrie(pinned(DENY_V4)?))?,
            deny_v4_rows: rows(pinned(DENY_V4_ROWS)?, DENY_V4_ROWS)?,
            deny_v4_chunks: chunks(pinned(DENY_V4_CHUNKS)?, DENY_V4_CHUNKS)?,
            deny_v4_owners: Array::try_from(Map::Array(pinned(DENY_V4_OWNERS)?))?,
            deny_v6: LpmTrie::try_from(Map::LpmTrie(pinned(DENY_V6)?))?,
            source_buckets: HashMap::try_from(Map::LruHashMap(pinned(SOURCE_BUCKETS)?))?,
            prefix_buckets: HashMap::try_from(Map::LruHashMap(pinned(PREFIX_BUCKETS)?))?,
            global_bucket: Array::try_from(Map::Array(pinned(GLOBAL_BUCKET)?))?,
            top: HashMap::try_from(Map::LruHashMap(pinned(TOP_TALKERS)?))?,
            attachments: HashMap::try_from(Map::HashMap(pinned(ATTACHMENTS)?))?,
        })
    }

    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let mut take = |name: &str| {
            let name = object_name(name);
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("the object has no map {name}"))
        };
        Ok(Self {
            config: Array::try_from(take(CONFIG)?)?,
            counters: PerCpuArray::try_from(take(COUNTERS)?)?,
            allow_v4: LpmTrie::try_from(take(ALLOW_V4)?)?,
            allow_v4_rows: rows(
                array_data(take(ALLOW_V4_ROWS)?, ALLOW_V4_ROWS)?,
                ALLOW_V4_ROWS,
            )?,
            allow_v4_chunks: chunks(
                array_data(take(ALLOW_V4_CHUNKS)?, ALLOW_V4_CHUNKS)?,
                ALLOW_V4_CHUNKS,
            )?,
            allow_v4_owners: Array::try_from(take(ALLOW_V4_OWNERS)?)?,
            allow_v6: LpmTrie::try_from(take(ALLOW_V6)?)?,
            deny_v4: LpmTrie::try_from(take(DENY_V4)?)?,
            deny_v4_rows: rows(array_data(take(DENY_V4_ROWS)?, DENY_V4_ROWS)?, DENY_V4_ROWS)?,
            deny_v4_chunks: chunks(
                array_data(take(DENY_V4_CHUNKS)?, DENY_V4_CHUNKS)?,
                DENY_V4_CHUNKS,
            )?,
            deny_v4_owners: Array::try_from(take(DENY_V4_OWNERS)?)?,
            deny_v6: LpmTrie::try_from(take(DENY_V6)?)?,
            source_buckets: HashMap::try_from(take(SOURCE_BUCKETS)?)?,
            prefix_buckets: HashMap::try_from(take(PREFIX_BUCKETS)?)?,
            global_bucket: Array::try_from(take(GLOBAL_BUCKET)?)?,
            top: HashMap::try_from(take(TOP_TALKERS)?)?,
            attachments: HashMap::try_from(take(ATTACHMENTS)?)?,
        })
    }

    /// The live configuration.
    pub fn read_config(&self) -> anyhow::Result<GuardConfig> {
        self.config.get(&0, 0).context("reading the config map")
    }

    /// Replaces the live configuration.
    pub fn write_config(&mut self, config: &GuardConfig) -> anyhow::Result<()> {
        self.config
            .set(0, config, 0)
            .context("writing the config map")
    }
}
