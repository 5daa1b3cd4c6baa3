//! Verdict counters: summed over CPUs, rendered as a table or JSON.

use anyhow::Context as _;
use guard_common::{
    Verdict,
    verdict::{Counter, SLOT_BUCKET_INSERTS},
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

impl Totals {
    /// Reads and sums the per-CPU counters.
    pub fn read(maps: &GuardMaps) -> anyhow::Result<Self> {
        let mut out = Vec::with_capacity(Verdict::ALL.len());
        for verdict in Verdict::ALL {
            let per_cpu = maps
                .counters
                .get(&verdict.slot(), 0)
                .with_context(|| format!("reading counter {}", verdict.name()))?;
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
            out.push((verdict, sum));
        }
        let inserts = maps
            .counters
            .get(&SLOT_BUCKET_INSERTS, 0)
            .context("reading counter bucket_inserts")?
            .iter()
            .map(|c| c.packets)
            .sum();
        Ok(Self(
            out,
            Events {
                bucket_inserts: inserts,
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
