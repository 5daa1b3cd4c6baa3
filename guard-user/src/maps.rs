//! Typed handles on guard's maps, opened from pins or taken from a freshly loaded object.

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
};
use guard_common::{
    GuardConfig,
    maps::{ALLOW_V4, ALLOW_V6, ATTACHMENTS, AllowEntry, Attachment, CONFIG, COUNTERS},
    verdict::Counter,
};

use crate::pins::PinLayout;

/// Every map of the guard.
pub struct GuardMaps {
    /// Protected ports and flags.
    pub config: Array<MapData, GuardConfig>,
    /// Per-CPU verdict counters.
    pub counters: PerCpuArray<MapData, Counter>,
    /// IPv4 allowlist.
    pub allow_v4: LpmTrie<MapData, [u8; 4], AllowEntry>,
    /// IPv6 allowlist.
    pub allow_v6: LpmTrie<MapData, [u8; 16], AllowEntry>,
    /// Attached interfaces (user space's record).
    pub attachments: HashMap<MapData, u32, Attachment>,
}

/// The names of all maps, in pin order.
pub const MAP_NAMES: [&str; 5] = [CONFIG, COUNTERS, ALLOW_V4, ALLOW_V6, ATTACHMENTS];

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
            allow_v6: LpmTrie::try_from(Map::LpmTrie(pinned(ALLOW_V6)?))?,
            attachments: HashMap::try_from(Map::HashMap(pinned(ATTACHMENTS)?))?,
        })
    }

    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("the object has no map {name}"))
        };
        Ok(Self {
            config: Array::try_from(take(CONFIG)?)?,
            counters: PerCpuArray::try_from(take(COUNTERS)?)?,
            allow_v4: LpmTrie::try_from(take(ALLOW_V4)?)?,
            allow_v6: LpmTrie::try_from(take(ALLOW_V6)?)?,
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
