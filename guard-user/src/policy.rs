//! The policy for sources that are not allowlisted: drop, or rate-limit with a hierarchy of
//! buckets (per source, per prefix, global).

use std::{fmt, str::FromStr};

use anyhow::{bail, ensure};
use guard_common::{
    GuardConfig,
    config::{POLICY_DROP, POLICY_RATE_LIMIT},
    ratelimit::{RatePolicy, RateSpec},
};
use serde::Serialize;

/// A rate as operators write it: `RATE` or `RATE/BURST`, datagrams per second; the burst
/// defaults to one second's worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// Datagrams per second.
    pub per_sec: u64,
    /// Datagrams that may pass back to back.
    pub burst: u64,
}

impl FromStr for Rate {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (rate, burst) = match s.split_once('/') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let number = |what: &str, t: &str| -> anyhow::Result<u64> {
            let t = t.trim();
            if t.starts_with('-') {
                bail!("invalid rate {s:?}: the {what} must be positive");
            }
            t.parse::<u64>().map_err(|_| {
                anyhow::anyhow!("invalid rate {s:?}: expected RATE or RATE/BURST (datagrams per second), e.g. 100/200")
            })
        };
        let per_sec = number("rate", rate)?;
        ensure!(
            per_sec >= 1,
            "invalid rate {s:?}: the rate must be at least 1 per second"
        );
        ensure!(
            per_sec <= 1_000_000_000,
            "invalid rate {s:?}: at most 1000000000 per second"
        );
        let burst = match burst {
            Some(b) => number("burst", b)?,
            None => per_sec,
        };
        ensure!(
            burst >= 1,
            "invalid rate {s:?}: the burst must be at least 1"
        );
        let rate = Rate { per_sec, burst };
        ensure!(
            rate.spec().is_some(),
            "invalid rate {s:?}: the burst is too large for the rate"
        );
        Ok(rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.per_sec, self.burst)
    }
}

impl Rate {
    /// The bucket of this rate.
    pub fn spec(&self) -> Option<RateSpec> {
        RateSpec::new(self.per_sec, self.burst)
    }

    fn of(spec: &RateSpec) -> Option<Rate> {
        (spec.interval_ns != 0).then(|| Rate {
            per_sec: spec.per_sec(),
            burst: spec.burst(),
        })
    }
}

/// Default per-source limit.
pub const DEFAULT_PER_SOURCE: Rate = Rate {
    per_sec: 10,
    burst: 20,
};
/// Default per-prefix limit.
pub const DEFAULT_PER_PREFIX: Rate = Rate {
    per_sec: 100,
    burst: 200,
};
/// Default global limit.
pub const DEFAULT_GLOBAL: Rate = Rate {
    per_sec: 1000,
    burst: 2000,
};

/// Rate-limit settings as given on the command line; unset ones keep their live value (or
/// the default).
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct RateArgs {
    /// Per source address (IPv4 /32, IPv6 /128): RATE[/BURST] datagrams per second.
    #[arg(long, value_name = "RATE[/BURST]", allow_hyphen_values = true)]
    pub per_source: Option<Rate>,
    /// Per prefix (see --prefix-v4, --prefix-v6): RATE[/BURST].
    #[arg(long, value_name = "RATE[/BURST]", allow_hyphen_values = true)]
    pub per_prefix: Option<Rate>,
    /// For all non-allowlisted traffic on the host together: RATE[/BURST].
    #[arg(long, value_name = "RATE[/BURST]", allow_hyphen_values = true)]
    pub global: Option<Rate>,
    /// Prefix length of IPv4 prefix buckets [default: 24].
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u32).range(0..=32))]
    pub prefix_v4: Option<u32>,
    /// Prefix length of IPv6 prefix buckets [default: 64].
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u32).range(0..=128))]
    pub prefix_v6: Option<u32>,
}

impl RateArgs {
    /// Is any rate setting given?
    pub fn any(&self) -> bool {
        *self != RateArgs::default()
    }
}

/// The policy an operator asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    /// Drop every non-allowlisted datagram to a protected port.
    #[default]
    Drop,
    /// Pass non-allowlisted datagrams within the rate limits.
    RateLimit,
}

impl PolicyKind {
    /// The name operators type: `drop` or `rate-limit`.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Drop => "drop",
            PolicyKind::RateLimit => "rate-limit",
        }
    }
}

/// Checks a policy request before anything changes.
pub fn validate(kind: PolicyKind, rates: &RateArgs) -> anyhow::Result<()> {
    if kind == PolicyKind::Drop && rates.any() {
        bail!("rate settings apply to the rate-limit policy, not to drop");
    }
    Ok(())
}

/// Applies a policy request to `config`: unset rates keep their live values, or defaults.
pub fn apply(config: &mut GuardConfig, kind: PolicyKind, rates: &RateArgs) -> anyhow::Result<()> {
    validate(kind, rates)?;
    match kind {
        PolicyKind::Drop => config.policy = POLICY_DROP,
        PolicyKind::RateLimit => {
            let live = &config.rate;
            let pick = |given: Option<Rate>, live: &RateSpec, default: Rate| -> RateSpec {
                given
                    .or_else(|| Rate::of(live))
                    .unwrap_or(default)
                    .spec()
                    .expect("validated when parsed")
            };
            config.rate = RatePolicy {
                source: pick(rates.per_source, &live.source, DEFAULT_PER_SOURCE),
                prefix: pick(rates.per_prefix, &live.prefix, DEFAULT_PER_PREFIX),
                global: pick(rates.global, &live.global, DEFAULT_GLOBAL),
                prefix_v4: rates.prefix_v4.unwrap_or(live.prefix_v4),
                prefix_v6: rates.prefix_v6.unwrap_or(live.prefix_v6),
            };
            config.policy = POLICY_RATE_LIMIT;
        }
    }
    Ok(())
}

/// The live policy, for status and `guard policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    /// `drop` or `rate-limit`.
    pub policy: &'static str,
    /// Per-source limit (rate-limit only).
    pub per_source: Option<String>,
    /// Per-prefix limit (rate-limit only).
    pub per_prefix: Option<String>,
    /// Global limit (rate-limit only).
    pub global: Option<String>,
    /// IPv4 prefix bucket length.
    pub prefix_v4: u32,
    /// IPv6 prefix bucket length.
    pub prefix_v6: u32,
}

impl PolicyView {
    /// The policy in `config`.
    pub fn of(config: &GuardConfig) -> Self {
        let limited = config.rate_limited();
        let show = |s: &RateSpec| {
            limited
                .then(|| Rate::of(s))
                .flatten()
                .map(|r| r.to_string())
        };
        Self {
            policy: if limited { "rate-limit" } else { "drop" },
            per_source: show(&config.rate.source),
            per_prefix: show(&config.rate.prefix),
            global: show(&config.rate.global),
            prefix_v4: config.rate.prefix_v4,
            prefix_v6: config.rate.prefix_v6,
        }
    }

    /// One line for humans.
    pub fn render(&self) -> String {
        match (&self.per_source, &self.per_prefix, &self.global) {
            (Some(s), Some(p), Some(g)) => format!(
                "rate-limit: per source {s}, per prefix (/{} /{}) {p}, global {g} (datagrams per second/burst)",
                self.prefix_v4, self.prefix_v6
            ),
            _ => "drop".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            "100".parse::<Rate>().unwrap(),
            Rate {
                per_sec: 100,
                burst: 100
            }
        );
        assert_eq!(
            "100/5".parse::<Rate>().unwrap(),
            Rate {
                per_sec: 100,
                burst: 5
            }
        );
        for bad in ["0", "-1", "10/0", "10/-2", "x", "", "1/2/3", "10/", "/10"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let e = "0".parse::<Rate>().unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
        let e = "10/0".parse::<Rate>().unwrap_err().to_string();
        assert!(e.contains("burst must be at least 1"), "{e}");
    }

    #[test]
    fn rates_on_a_drop_policy_are_refused() {
        let rates = RateArgs {
            global: Some(Rate {
                per_sec: 1,
                burst: 1,
            }),
            ..Default::default()
        };
        assert!(validate(PolicyKind::Drop, &rates).is_err());
        let mut c = GuardConfig::EMPTY;
        assert!(apply(&mut c, PolicyKind::Drop, &rates).is_err());
        assert_eq!(c, GuardConfig::EMPTY);
    }

    #[test]
    fn unset_rates_keep_live_values_then_defaults() {
        let mut c = GuardConfig::EMPTY;
        apply(&mut c, PolicyKind::RateLimit, &RateArgs::default()).unwrap();
        let v = PolicyView::of(&c);
        assert_eq!(v.per_source.as_deref(), Some("10/20"));
        assert_eq!(v.global.as_deref(), Some("1000/2000"));
        let only_global = RateArgs {
            global: Some("5000/100".parse().unwrap()),
            ..Default::default()
        };
        apply(&mut c, PolicyKind::RateLimit, &only_global).unwrap();
        let v = PolicyView::of(&c);
        assert_eq!(v.per_source.as_deref(), Some("10/20"));
        assert_eq!(v.global.as_deref(), Some("5000/100"));
        apply(&mut c, PolicyKind::Drop, &RateArgs::default()).unwrap();
        assert_eq!(PolicyView::of(&c).render(), "drop");
    }
}
