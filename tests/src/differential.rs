//! Differential testing: random scenarios (config, allowlist, denylist, policy) and
//! structure-aware random frames, judged by the loaded XDP program (BPF_PROG_TEST_RUN) and by
//! the host model; any disagreement is reported with the frame in hex and a ready-to-paste
//! regression test.

use std::fmt::Write as _;

use guard_common::{
    GuardConfig, Verdict,
    config::{MEMCACHED_PORT, POLICY_RATE_LIMIT},
    parse::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_AH, IPPROTO_DSTOPTS,
        IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_UDP,
    },
    ratelimit::RateSpec,
};
use guard_user::loader::MapSizes;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{
    kernel::Loaded,
    packets::{
        HostBuckets, HostLists, V4, ethernet, host_verdict, ipv4, ipv6, ipv6_ext, ipv6_frag, udp,
    },
};

/// One random scenario: what the guard is configured with.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The config map.
    pub config: GuardConfig,
    /// Allowlist.
    pub allow: Vec<IpNet>,
    /// Denylist.
    pub deny: Vec<IpNet>,
}

/// A disagreement between kernel and model.
#[derive(Clone, Debug)]
pub struct Disagreement {
    /// The scenario.
    pub scenario: Scenario,
    /// The frame.
    pub frame: Vec<u8>,
    /// The kernel's verdict.
    pub kernel: Verdict,
    /// The model's verdict.
    pub model: Verdict,
    /// Seed and index, to reproduce.
    pub seed: u64,
    /// Index of the frame in the run.
    pub index: u64,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.frame.iter().map(|b| format!("{b:02x}")).collect();
        let allow: Vec<String> = self
            .scenario
            .allow
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect();
        let deny: Vec<String> = self
            .scenario
            .deny
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect();
        writeln!(
            f,
            "kernel {:?} != model {:?} (seed {}, frame {})",
            self.kernel, self.model, self.seed, self.index
        )?;
        writeln!(f, "frame: {hex}")?;
        writeln!(f, "config: {:?}", ConfigSummary(&self.scenario.config))?;
        writeln!(
            f,
            "allow: [{}]\ndeny: [{}]",
            allow.join(", "),
            deny.join(", ")
        )?;
        writeln!(f, "regression test (add to tests/tests/differential.rs):\n")?;
        writeln!(
            f,
            "#[test]\nfn regression_seed_{}_frame_{}() {{",
            self.seed, self.index
        )?;
        writeln!(
            f,
            "    let frame = guard_tests::differential::unhex(\"{hex}\");"
        )?;
        writeln!(
            f,
            "    let scenario = guard_tests::differential::scenario({}, {}, &[{}], &[{}]);",
            self.seed,
            self.index,
            allow.join(", "),
            deny.join(", ")
        )?;
        writeln!(
            f,
            "    guard_tests::differential::assert_agree(&scenario, &frame);\n}}"
        )
    }
}

struct ConfigSummary<'a>(&'a GuardConfig);

impl std::fmt::Debug for ConfigSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<u16> = self.0.protected_ports().collect();
        write!(
            f,
            "ports {ports:?}, policy {}, dry_run {}, rate {:?}",
            self.0.policy,
            self.0.dry_run(),
            self.0.rate
        )
    }
}

/// Decodes hex.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// The scenario a seed and frame index drew (for regression tests), with these lists.
pub fn scenario(seed: u64, index: u64, allow: &[&str], deny: &[&str]) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed ^ index.rotate_left(17));
    let mut s = random_scenario(&mut rng);
    s.allow = allow.iter().map(|n| n.parse().unwrap()).collect();
    s.deny = deny.iter().map(|n| n.parse().unwrap()).collect();
    s.config.set_has_deny(!s.deny.is_empty());
    s
}

/// Asserts that kernel and model agree on one frame (a fresh load, so no bucket state).
pub fn assert_agree(s: &Scenario, frame: &[u8]) {
    let mut k = Loaded::new(&s.config, &s.allow, &s.deny, &MapSizes::default());
    let lists = HostLists::with_deny(&s.allow, &s.deny);
    let model = host_verdict(frame, &s.config, &lists, &HostBuckets::at(1));
    assert_eq!(k.verdict(frame), model);
}

fn random_scenario(rng: &mut StdRng) -> Scenario {
    let mut config = GuardConfig::EMPTY;
    config.protect(MEMCACHED_PORT);
    for _ in 0..rng.random_range(0..3) {
        config.protect(rng.random_range(1..=u16::MAX));
    }
    config.set_dry_run(rng.random_bool(0.1));
    if rng.random_bool(0.4) {
        config.policy = POLICY_RATE_LIMIT;
        // Buckets that refill once an hour: the kernel's clock cannot refill them during a run.
        let hour = 3_600_000_000_000u64;
        let spec = |burst: u64| RateSpec {
            interval_ns: hour,
            tolerance_ns: burst * hour,
        };
        config.rate.source = spec(rng.random_range(1..4));
        config.rate.prefix = spec(rng.random_range(1..8));
        config.rate.global = spec(rng.random_range(1..64));
        config.rate.prefix_v4 = rng.random_range(8..=32);
        config.rate.prefix_v6 = rng.random_range(16..=128);
    }
    let prefix = |rng: &mut StdRng| -> IpNet {
        if rng.random_bool(0.6) {
            let len = rng.random_range(0..=32);
            Ipv4Net::new(pool_v4(rng).into(), len)
                .unwrap()
                .trunc()
                .into()
        } else {
            let len = rng.random_range(0..=128);
            Ipv6Net::new(pool_v6(rng).into(), len)
                .unwrap()
                .trunc()
                .into()
        }
    };
    let mut allow: Vec<IpNet> = (0..rng.random_range(0..12)).map(|_| prefix(rng)).collect();
    let mut deny: Vec<IpNet> = (0..rng.random_range(0..4)).map(|_| prefix(rng)).collect();
    allow.sort();
    allow.dedup();
    deny.sort();
    deny.dedup();
    config.set_has_deny(!deny.is_empty());
    Scenario {
        config,
        allow,
        deny,
    }
}

/// Sources from a small pool, so that prefixes and sources overlap often.
fn pool_v4(rng: &mut StdRng) -> [u8; 4] {
    [
        [10, 0, 0, 0],
        [192, 0, 2, 0],
        [203, 0, 113, 0],
        [198, 51, 100, 0],
    ][rng.random_range(0..4)]
    .map(|b| b)
    .into_iter()
    .enumerate()
    .map(|(i, b)| {
        if i >= 2 && rng.random_bool(0.5) {
            rng.random()
        } else {
            b
        }
    })
    .collect::<Vec<u8>>()
    .try_into()
    .unwrap()
}

fn pool_v6(rng: &mut StdRng) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0x20;
    a[1] = 0x01;
    a[2] = 0x0d;
    a[3] = 0xb8;
    a[5] = rng.random_range(0..4);
    for b in &mut a[12..] {
        if rng.random_bool(0.5) {
            *b = rng.random();
        }
    }
    a
}

fn random_frame(rng: &mut StdRng, config: &GuardConfig) -> Vec<u8> {
    if rng.random_bool(0.03) {
        let len = rng.random_range(14..200);
        return (0..len).map(|_| rng.random()).collect();
    }
    let tags: Vec<u16> = (0..[0, 0, 0, 1, 2, 3][rng.random_range(0..6)])
        .map(|_| [ETH_P_8021Q, ETH_P_8021AD][rng.random_range(0..2)])
        .collect();
    let ports: Vec<u16> = config.protected_ports().collect();
    let dport = if rng.random_bool(0.8) {
        ports[rng.random_range(0..ports.len())]
    } else {
        rng.random()
    };
    let payload: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
    let mut frame = if rng.random_bool(0.6) {
        let h = V4 {
            src: pool_v4(rng),
            proto: if rng.random_bool(0.9) {
                IPPROTO_UDP
            } else {
                rng.random()
            },
            ihl: if rng.random_bool(0.85) {
                5
            } else {
                rng.random_range(0..16)
            },
            version: if rng.random_bool(0.97) {
                4
            } else {
                rng.random_range(0..16)
            },
            frag: if rng.random_bool(0.8) {
                0
            } else {
                (u16::from(rng.random_bool(0.5)) << 13) | rng.random_range(0..3)
            },
            total_len: rng.random_bool(0.1).then(|| rng.random()),
        };
        let l4 = udp(rng.random(), dport, &payload);
        let cut = if rng.random_bool(0.1) {
            rng.random_range(0..8)
        } else {
            l4.len()
        };
        [ethernet(&tags, ETH_P_IP), ipv4(h, &l4[..cut])].concat()
    } else if rng.random_bool(0.9) {
        let mut chain = Vec::new();
        let n = [0, 0, 1, 2, 3, 7, 8, 9, 10][rng.random_range(0..9)];
        let kinds = [
            IPPROTO_HOPOPTS,
            IPPROTO_ROUTING,
            IPPROTO_DSTOPTS,
            IPPROTO_FRAGMENT,
            IPPROTO_AH,
        ];
        let mut types = Vec::new();
        for _ in 0..n {
            types.push(kinds[rng.random_range(0..kinds.len())]);
        }
        let last = if rng.random_bool(0.9) {
            IPPROTO_UDP
        } else {
            rng.random()
        };
        for (i, kind) in types.iter().enumerate() {
            let next = types.get(i + 1).copied().unwrap_or(last);
            if *kind == IPPROTO_FRAGMENT {
                let offset = if rng.random_bool(0.7) {
                    0
                } else {
                    rng.random_range(1..100)
                };
                chain.extend(ipv6_frag(next, offset, rng.random_bool(0.5)));
            } else {
                chain.extend(ipv6_ext(*kind, next, rng.random_range(1..4)));
            }
        }
        let first = types.first().copied().unwrap_or(last);
        let l4 = udp(rng.random(), dport, &payload);
        let body = [chain, l4].concat();
        let len = rng.random_bool(0.1).then(|| rng.random());
        [
            ethernet(&tags, ETH_P_IPV6),
            ipv6(pool_v6(rng), first, &body, len),
        ]
        .concat()
    } else {
        [ethernet(&tags, rng.random()), payload].concat()
    };
    // Mutations: flip bytes, truncate.
    if rng.random_bool(0.15) {
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..frame.len());
            frame[i] = rng.random();
        }
    }
    if rng.random_bool(0.15) {
        let len = rng.random_range(14..=frame.len().max(14));
        frame.truncate(len);
    }
    while frame.len() < 14 {
        frame.push(0);
    }
    frame
}

/// Counts of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Frames checked.
    pub frames: u64,
    /// Scenarios drawn.
    pub scenarios: u64,
    /// Frames per verdict (the model's).
    pub verdicts: std::collections::BTreeMap<&'static str, u64>,
}

impl Stats {
    /// One line.
    pub fn summary(&self) -> String {
        let mut s = format!("{} frames in {} scenarios:", self.frames, self.scenarios);
        for (k, v) in &self.verdicts {
            let _ = write!(s, " {k} {v}");
        }
        s
    }
}

/// Checks `frames` frames drawn from `seed`, a new scenario (and a fresh load) every
/// `per_scenario` frames. Stops at the first disagreement.
pub fn run(seed: u64, frames: u64, per_scenario: u64) -> Result<Stats, Box<Disagreement>> {
    let mut stats = Stats::default();
    let mut index = 0;
    while index < frames {
        let mut rng = StdRng::seed_from_u64(seed ^ index.rotate_left(17));
        let scenario = random_scenario(&mut rng);
        let mut k = Loaded::new(
            &scenario.config,
            &scenario.allow,
            &scenario.deny,
            &MapSizes::default(),
        );
        let lists = HostLists::with_deny(&scenario.allow, &scenario.deny);
        let buckets = HostBuckets::at(1);
        stats.scenarios += 1;
        for _ in 0..per_scenario.min(frames - index) {
            let frame = random_frame(&mut rng, &scenario.config);
            let model = host_verdict(&frame, &scenario.config, &lists, &buckets);
            let kernel = k.verdict(&frame);
            if kernel != model {
                return Err(Box::new(Disagreement {
                    scenario,
                    frame,
                    kernel,
                    model,
                    seed,
                    index,
                }));
            }
            *stats.verdicts.entry(model.name()).or_default() += 1;
            stats.frames += 1;
            index += 1;
        }
    }
    Ok(stats)
}
