//! Prometheus/OpenMetrics export (prometheus-client): read from the pinned maps at each
//! scrape, so the numbers are the kernel's, whoever loaded the guard. No per-IP labels.

use std::fmt::Write as _;

use guard_common::Verdict;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    attach::AttachedMode,
    lists::{self, List},
    maps::GuardMaps,
    pins::PinLayout,
    policy::PolicyView,
    stats::Totals,
    status,
};

/// Everything exported, read at once.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Per attached interface: name, mode, state, counters.
    pub interfaces: Vec<(String, Option<AttachedMode>, bool, Totals)>,
    /// Allowlist sizes (IPv4, IPv6).
    pub allow: (usize, usize),
    /// Denylist sizes (IPv4, IPv6).
    pub deny: (usize, usize),
    /// Dry-run.
    pub dry_run: bool,
    /// Policy name.
    pub policy: &'static str,
    /// Number of protected ports.
    pub ports: usize,
}

impl Snapshot {
    /// Reads the guard under `layout`.
    pub fn read(layout: &PinLayout) -> anyhow::Result<Self> {
        crate::attach::require_loaded(layout)?;
        let maps = GuardMaps::open(layout)?;
        let config = maps.read_config()?;
        let mut interfaces = Vec::new();
        for i in status::interfaces(layout, &maps)? {
            let totals = match (i.attached(), i.ifindex) {
                (true, Some(index)) => Totals::read_interface(&maps, index)?,
                _ => Totals::default(),
            };
            let live = i.attached();
            interfaces.push((i.name, i.mode, live, totals));
        }
        Ok(Self {
            interfaces,
            allow: lists::sizes(&maps, List::Allow),
            deny: lists::sizes(&maps, List::Deny),
            dry_run: config.dry_run(),
            policy: PolicyView::of(&config).policy,
            ports: config.protected_ports().count(),
        })
    }
}

/// The collector registered with the daemon's registry.
#[derive(Debug)]
pub struct GuardCollector {
    layout: PinLayout,
}

impl GuardCollector {
    /// Exports the guard under `layout`.
    pub fn new(layout: PinLayout) -> Self {
        Self { layout }
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for GuardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snap = match Snapshot::read(&self.layout) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("metrics: cannot read the guard: {e:#}");
                return gauge(
                    &mut encoder,
                    "guard_up",
                    "1 when the pinned guard could be read.",
                    &[(vec![], 0)],
                );
            }
        };
        gauge(
            &mut encoder,
            "guard_up",
            "1 when the pinned guard could be read.",
            &[(vec![], 1)],
        )?;
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        let mut inserts = Vec::new();
        let mut attached = Vec::new();
        for (name, mode, live, totals) in &snap.interfaces {
            for v in Verdict::ALL {
                let c = totals.get(v);
                let labels = vec![
                    ("interface", name.clone()),
                    ("reason", v.name().to_string()),
                ];
                packets.push((labels.clone(), c.packets));
                bytes.push((labels, c.bytes));
            }
            inserts.push((vec![("interface", name.clone())], totals.1.bucket_inserts));
            attached.push((
                vec![
                    ("interface", name.clone()),
                    (
                        "mode",
                        mode.map_or("unknown", AttachedMode::name).to_string(),
                    ),
                ],
                i64::from(*live),
            ));
        }
        counter(
            &mut encoder,
            "guard_packets",
            "Frames judged, by interface and verdict reason.",
            &packets,
        )?;
        counter(
            &mut encoder,
            "guard_bytes",
            "Bytes of frames judged, by interface and verdict reason.",
            &bytes,
        )?;
        counter(
            &mut encoder,
            "guard_bucket_inserts",
            "Rate-limit bucket entries created (LRU churn; a spoofed flood shows here).",
            &inserts,
        )?;
        gauge(
            &mut encoder,
            "guard_attached",
            "1 per attached interface (0: stale link), with its XDP mode.",
            &attached,
        )?;
        let family = |f: &str| vec![("family", f.to_string())];
        gauge(
            &mut encoder,
            "guard_allowlist_prefixes",
            "Allowlisted prefixes.",
            &[
                (family("ipv4"), snap.allow.0 as i64),
                (family("ipv6"), snap.allow.1 as i64),
            ],
        )?;
        gauge(
            &mut encoder,
            "guard_denylist_prefixes",
            "Denylisted prefixes.",
            &[
                (family("ipv4"), snap.deny.0 as i64),
                (family("ipv6"), snap.deny.1 as i64),
            ],
        )?;
        gauge(
            &mut encoder,
            "guard_dry_run",
            "1 when would-be drops pass.",
            &[(vec![], i64::from(snap.dry_run))],
        )?;
        gauge(
            &mut encoder,
            "guard_policy",
            "The policy for sources that are not allowlisted (1 for the one in force).",
            &[
                (
                    vec![("policy", "drop".into())],
                    i64::from(snap.policy == "drop"),
                ),
                (
                    vec![("policy", "rate-limit".into())],
                    i64::from(snap.policy == "rate-limit"),
                ),
            ],
        )?;
        gauge(
            &mut encoder,
            "guard_protected_ports",
            "Protected UDP ports.",
            &[(vec![], snap.ports as i64)],
        )?;
        Ok(())
    }
}

/// A registry with the guard collector and build info.
pub fn registry(layout: &PinLayout) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(GuardCollector::new(layout.clone())));
    registry.register_collector(Box::new(BuildInfo));
    registry
}

/// `guard_build_info{version}`.
#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        gauge(
            &mut encoder,
            "guard_build_info",
            "guard's version.",
            &[(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ("abi", guard_common::maps::ABI_VERSION.to_string()),
                ],
                1,
            )],
        )
    }
}

/// The OpenMetrics text of `registry`.
pub fn encode(registry: &Registry) -> anyhow::Result<String> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// The text `guard stats --format prometheus` prints, in the Prometheus text format that
/// node_exporter's textfile collector reads: the same families, counters named with their
/// `_total` suffix in HELP and TYPE, and no OpenMetrics `# EOF` trailer.
pub fn textfile(layout: &PinLayout) -> anyhow::Result<String> {
    crate::attach::require_loaded(layout)?;
    Ok(to_prometheus_text(&encode(&registry(layout))?))
}

fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let mut line = line.to_string();
        for name in &counters {
            for kind in ["# HELP ", "# TYPE "] {
                let prefix = format!("{kind}{name} ");
                if let Some(rest) = line.strip_prefix(&prefix) {
                    line = format!("{kind}{name}_total {rest}");
                }
            }
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_suffix_in_text_format() {
        let om = "# HELP guard_packets Frames.\n# TYPE guard_packets counter\nguard_packets_total{reason=\"dropped\"} 3\n# HELP guard_up Up.\n# TYPE guard_up gauge\nguard_up 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert!(
            text.contains("# TYPE guard_packets_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP guard_packets_total Frames.\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE guard_up gauge\n"), "{text}");
        assert!(!text.contains("# EOF"));
    }
}
