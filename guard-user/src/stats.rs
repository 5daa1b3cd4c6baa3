//! Verdict counters: summed over CPUs, rendered as a table or JSON.

use anyhow::Context as _;
use guard_common::{
    Verdict,
    verdict::{
        COUNTER_ENTRIES, COUNTER_SLOTS, Counter, IFACE_SLOTS, SLOT_BUCKET_INSERTS, counter_index,
    },
};
use serde_json::{Map, Value, json};

use crate::maps::GuardMaps;

/// Packets and bytes per verdict, summed over CPUs, in counter-slot order, and events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals(pub Vec<(Verdict, Counter)>, pub Events);

/// Counted events that are not verdicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// Rate-limit bucket entries created (source or prefix): the LRU churn.
    pub bucket_inserts: u64,
}

/// Every counter, summed over CPUs: one block of slots per interface block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterTable(Vec<Counter>);

impl CounterTable {
    /// Reads the whole counters map.
    pub fn read(maps: &GuardMaps) -> anyhow::Result<Self> {
        let mut all = Vec::with_capacity(COUNTER_ENTRIES as usize);
        for per_cpu in maps.counters.iter() {
            let per_cpu = per_cpu.context("reading the counters map")?;
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
            all.push(sum);
        }
        Ok(Self(all))
    }

    fn sum(&self, blocks: impl Iterator<Item = u32> + Clone) -> Totals {
        let slot = |s: u32| {
            blocks.clone().fold(Counter::default(), |mut acc, b| {
                let c = self
                    .0
                    .get((b * COUNTER_SLOTS + s) as usize)
                    .copied()
                    .unwrap_or_default();
                acc.packets += c.packets;
                acc.bytes += c.bytes;
                acc
            })
        };
        Totals(
            Verdict::ALL.iter().map(|v| (*v, slot(v.slot()))).collect(),
            Events {
                bucket_inserts: slot(SLOT_BUCKET_INSERTS).packets,
            },
        )
    }

    /// Totals over every interface.
    pub fn totals(&self) -> Totals {
        self.sum(0..IFACE_SLOTS)
    }

    /// Totals of frames received on `ifindex` (and any interface sharing its block).
    pub fn interface(&self, ifindex: u32) -> Totals {
        let block = counter_index(ifindex, 0) / COUNTER_SLOTS;
        self.sum(block..block + 1)
    }
}

impl Totals {
    /// Reads and sums the per-CPU counters of every interface.
    pub fn read(maps: &GuardMaps) -> anyhow::Result<Self> {
        Ok(CounterTable::read(maps)?.totals())
    }

    /// Reads only the counters of frames received on `ifindex` (and any interface sharing
    /// its block): [`COUNTER_SLOTS`] lookups instead of the whole map.
    pub fn read_interface(maps: &GuardMaps, ifindex: u32) -> anyhow::Result<Self> {
        let block = counter_index(ifindex, 0);
        let read = |slot: u32| -> anyhow::Result<Counter> {
            let per_cpu = maps
                .counters
                .get(&(block + slot), 0)
                .context("reading the counters map")?;
            Ok(per_cpu.iter().fold(Counter::default(), |mut acc, c| {
                acc.packets += c.packets;
                acc.bytes += c.bytes;
                acc
            }))
        };
        let mut verdicts = Vec::with_capacity(Verdict::ALL.len());
        for v in Verdict::ALL {
            verdicts.push((v, read(v.slot())?));
        }
        Ok(Self(
            verdicts,
            Events {
                bucket_inserts: read(SLOT_BUCKET_INSERTS)?.packets,
            },
        ))
    }

    /// The counter of one verdict.
    pub fn get(&self, verdict: Verdict) -> Counter {
        self.0
            .iter()
            .find(|(v, _)| *v == verdict)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    /// `{"counters": {"dropped": {"packets": N, "bytes": N}, ...}, "events": {...}}`.
    pub fn to_json(&self) -> Value {
        let mut counters = Map::new();
        for (v, c) in &self.0 {
            counters.insert(
                v.name().into(),
                json!({"packets": c.packets, "bytes": c.bytes}),
            );
        }
        json!({
            "counters": counters,
            "events": { "bucket_inserts": self.1.bucket_inserts },
        })
    }

    /// A table; with `previous` and `secs`, per-second rates too.
    pub fn table(&self, previous: Option<(&Totals, f64)>) -> String {
        let mut s = String::new();
        match previous {
            None => s.push_str(&format!(
                "{:<22} {:>14} {:>16}\n",
                "VERDICT", "PACKETS", "BYTES"
            )),
            Some(_) => s.push_str(&format!(
                "{:<22} {:>14} {:>16} {:>12} {:>14}\n",
                "VERDICT", "PACKETS", "BYTES", "PKT/S", "BYTES/S"
            )),
        }
        let events = [(
            "bucket_inserts",
            self.1.bucket_inserts,
            previous.map(|(p, secs)| (p.1.bucket_inserts, secs)),
        )];
        for (v, c) in &self.0 {
            match previous {
                None => s.push_str(&format!(
                    "{:<22} {:>14} {:>16}\n",
                    v.name(),
                    c.packets,
                    c.bytes
                )),
                Some((prev, secs)) => {
                    let p = prev.get(*v);
                    let pps = c.packets.saturating_sub(p.packets) as f64 / secs;
                    let bps = c.bytes.saturating_sub(p.bytes) as f64 / secs;
                    s.push_str(&format!(
                        "{:<22} {:>14} {:>16} {:>12.0} {:>14.0}\n",
                        v.name(),
                        c.packets,
                        c.bytes,
                        pps,
                        bps
                    ));
                }
            }
        }
        for (name, n, prev) in events {
            match prev {
                None => s.push_str(&format!("{name:<22} {n:>14}\n")),
                Some((p, secs)) => s.push_str(&format!(
                    "{name:<22} {n:>14} {:>16} {:>12.0}\n",
                    "",
                    n.saturating_sub(p) as f64 / secs
                )),
            }
        }
        s
    }
}
