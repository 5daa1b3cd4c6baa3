//! The config file (`/etc/guard/guard.toml`): schema, full validation with line numbers, and
//! the desired state it describes.
//!
//! ```toml
//! interfaces = ["eth0"]
//! mode = "auto"                      # auto | native | skb
//! ports = [11211]
//! allow = ["10.0.0.0/8", "2001:db8::/32"]
//! metrics_addr = "127.0.0.1:9211"
//! pin_path = "/sys/fs/bpf/guard"
//! ```

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::{
    attach::{ModeRequest, validate_ports, validate_top_sample},
    lists::{List, doubt, parse_cidr},
    loader::MapSizes,
    pins::DEFAULT_PIN_ROOT,
    policy::{DEFAULT_GLOBAL, DEFAULT_PER_PREFIX, DEFAULT_PER_SOURCE, PolicyKind, Rate, RateArgs},
};

/// Where `guard run` and the CLI look for the config by default.
pub const DEFAULT_CONFIG: &str = "/etc/guard/guard.toml";
/// Default metrics address: loopback only.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9211";

/// The file as written (every key optional but `interfaces`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Interfaces to guard.
    pub interfaces: Spanned<Vec<Spanned<String>>>,
    /// XDP mode: auto, native or skb.
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// Protected UDP ports (default 11211).
    #[serde(default)]
    pub ports: Option<Spanned<Vec<Spanned<i64>>>>,
    /// Allowlisted prefixes.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Files of allowlisted prefixes, one per line.
    #[serde(default)]
    pub allow_include: Vec<Spanned<String>>,
    /// Denylisted prefixes.
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    /// Files of denylisted prefixes, one per line.
    #[serde(default)]
    pub deny_include: Vec<Spanned<String>>,
    /// Policy for sources that are not allowlisted: drop or rate-limit.
    #[serde(default)]
    pub policy: Option<Spanned<String>>,
    /// Rates of the rate-limit policy.
    #[serde(default)]
    pub rate_limit: Option<Spanned<RateLimitTable>>,
    /// Would-be drops pass and count as would_drop.
    #[serde(default)]
    pub dry_run: bool,
    /// Prometheus endpoint address, or "" to serve none.
    #[serde(default)]
    pub metrics_addr: Option<Spanned<String>>,
    /// Pin root on bpffs.
    #[serde(default)]
    pub pin_path: Option<String>,
    /// Detach when `guard run` stops (default: stay attached, fail closed).
    #[serde(default)]
    pub detach_on_exit: bool,
    /// Top-talker sampling (power of two, 0: off).
    #[serde(default)]
    pub top_sample: Option<Spanned<i64>>,
    /// Per-source bucket LRU capacity (fresh load only).
    #[serde(default)]
    pub source_buckets: Option<Spanned<i64>>,
    /// Per-prefix bucket LRU capacity (fresh load only).
    #[serde(default)]
    pub prefix_buckets: Option<Spanned<i64>>,
    /// Top-talkers LRU capacity (fresh load only).
    #[serde(default)]
    pub top_talkers: Option<Spanned<i64>>,
}

/// `[rate_limit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitTable {
    /// RATE[/BURST] per source.
    pub per_source: Option<Spanned<String>>,
    /// RATE[/BURST] per prefix.
    pub per_prefix: Option<Spanned<String>>,
    /// RATE[/BURST] for the whole host.
    pub global: Option<Spanned<String>>,
    /// IPv4 prefix bucket length.
    pub prefix_v4: Option<Spanned<i64>>,
    /// IPv6 prefix bucket length.
    pub prefix_v6: Option<Spanned<i64>>,
}

/// The validated state a config asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Interfaces to guard.
    pub interfaces: Vec<String>,
    /// XDP mode.
    pub mode: ModeRequest,
    /// Protected ports.
    pub ports: Vec<u16>,
    /// Allowlist (inline and included).
    pub allow: BTreeSet<IpNet>,
    /// Denylist (inline and included).
    pub deny: BTreeSet<IpNet>,
    /// Policy.
    pub policy: PolicyKind,
    /// Every rate resolved (defaults filled in).
    pub rates: RateArgs,
    /// Dry-run.
    pub dry_run: bool,
    /// Metrics endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// Pin root.
    pub pin_path: PathBuf,
    /// Detach on exit.
    pub detach_on_exit: bool,
    /// Top-talker sampling.
    pub top_sample: u32,
    /// Map sizes for a fresh load.
    pub sizes: MapSizes,
    /// Include files, for change detection.
    pub includes: Vec<PathBuf>,
}

/// A position in the file, for error messages.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err(&self, span: Range<usize>, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{} line {}: {msg}", self.path.display(), self.line(span))
    }
}

/// Logs a warning about the config once per process: the file is parsed on every change,
/// reload and retry, and the daemon retries every second while an interface is missing.
pub(crate) fn warn_once(message: String) {
    static SEEN: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !seen.contains(&message) {
        log::warn!("{message}");
        seen.insert(message);
    }
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> anyhow::Result<Desired> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    parse(path, &text)
}

/// Validates config `text` (read from `path`, which also anchors relative include paths).
pub fn parse(path: &Path, text: &str) -> anyhow::Result<Desired> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        match line {
            Some(line) => anyhow!("{} line {line}: {}", path.display(), e.message()),
            None => anyhow!("{}: {}", path.display(), e.message()),
        }
    })?;
    let src = Source { path, text };

    let mut interfaces = Vec::new();
    for name in file.interfaces.get_ref() {
        let n = name.get_ref();
        if n.is_empty() || n.len() > 15 || n.contains('/') || n.contains(char::is_whitespace) {
            return Err(src.err(name.span(), format!("invalid interface name {n:?}")));
        }
        if !interfaces.contains(n) {
            interfaces.push(n.clone());
        }
    }

    let mode = match &file.mode {
        None => ModeRequest::Auto,
        Some(m) => match m.get_ref().as_str() {
            "auto" => ModeRequest::Auto,
            "native" => ModeRequest::Native,
            "skb" => ModeRequest::Skb,
            other => {
                return Err(src.err(
                    m.span(),
                    format!("invalid mode {other:?}: auto, native or skb"),
                ));
            }
        },
    };

    let ports = match &file.ports {
        None => vec![guard_common::config::MEMCACHED_PORT],
        Some(list) => {
            let mut ports = Vec::new();
            for p in list.get_ref() {
                let v = *p.get_ref();
                let port = u16::try_from(v)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| src.err(p.span(), format!("invalid port {v}: 1 to 65535")))?;
                ports.push(port);
            }
            validate_ports(&ports).map_err(|e| src.err(list.span(), e))?
        }
    };

    let base = path.parent().unwrap_or(Path::new("."));
    let mut includes = Vec::new();
    let mut lists = |inline: &[Spanned<String>],
                     files: &[Spanned<String>],
                     list: List|
     -> anyhow::Result<BTreeSet<IpNet>> {
        let mut set = BTreeSet::new();
        for c in inline {
            let net = parse_cidr(c.get_ref()).map_err(|e| src.err(c.span(), e))?;
            if let Some(why) = doubt(c.get_ref().trim(), net) {
                // Loaded as before (the command line refuses these): a file that loaded
                // before still does.
                warn_once(format!(
                    "{} line {}: {why}",
                    path.display(),
                    src.line(c.span())
                ));
            }
            set.insert(net);
        }
        for f in files {
            let p = base.join(f.get_ref());
            let body = std::fs::read_to_string(&p).map_err(|e| {
                src.err(
                    f.span(),
                    format!("{} include {}: {e}", list.name(), p.display()),
                )
            })?;
            set.extend(parse_include(&p, &body)?);
            includes.push(p);
        }
        Ok(set)
    };
    let allow = lists(&file.allow, &file.allow_include, List::Allow)?;
    let deny = lists(&file.deny, &file.deny_include, List::Deny)?;

    let policy = match &file.policy {
        None => PolicyKind::Drop,
        Some(p) => match p.get_ref().as_str() {
            "drop" => PolicyKind::Drop,
            "rate-limit" => PolicyKind::RateLimit,
            other => {
                return Err(src.err(
                    p.span(),
                    format!("invalid policy {other:?}: drop or rate-limit"),
                ));
            }
        },
    };
    let rates = match &file.rate_limit {
        None => RateArgs::default(),
        Some(t) => {
            if policy == PolicyKind::Drop {
                return Err(src.err(
                    t.span(),
                    "[rate_limit] applies to policy = \"rate-limit\", not to drop",
                ));
            }
            let t = t.get_ref();
            let rate = |r: &Option<Spanned<String>>| -> anyhow::Result<Option<Rate>> {
                r.as_ref()
                    .map(|r| {
                        r.get_ref()
                            .parse::<Rate>()
                            .map_err(|e| src.err(r.span(), e))
                    })
                    .transpose()
            };
            let len = |l: &Option<Spanned<i64>>, max: i64| -> anyhow::Result<Option<u32>> {
                l.as_ref()
                    .map(|l| {
                        let v = *l.get_ref();
                        if (0..=max).contains(&v) {
                            Ok(v as u32)
                        } else {
                            Err(src.err(l.span(), format!("invalid prefix length {v}: 0 to {max}")))
                        }
                    })
                    .transpose()
            };
            RateArgs {
                per_source: rate(&t.per_source)?,
                per_prefix: rate(&t.per_prefix)?,
                global: rate(&t.global)?,
                prefix_v4: len(&t.prefix_v4, 32)?,
                prefix_v6: len(&t.prefix_v6, 128)?,
            }
        }
    };
    let rates = match policy {
        PolicyKind::Drop => RateArgs::default(),
        PolicyKind::RateLimit => RateArgs {
            per_source: rates.per_source.or(Some(DEFAULT_PER_SOURCE)),
            per_prefix: rates.per_prefix.or(Some(DEFAULT_PER_PREFIX)),
            global: rates.global.or(Some(DEFAULT_GLOBAL)),
            prefix_v4: rates.prefix_v4.or(Some(24)),
            prefix_v6: rates.prefix_v6.or(Some(64)),
        },
    };

    let metrics_addr = match &file.metrics_addr {
        None => Some(DEFAULT_METRICS_ADDR.parse().expect("valid default")),
        Some(a) if a.get_ref().is_empty() => None,
        Some(a) => Some(a.get_ref().parse::<SocketAddr>().map_err(|_| {
            src.err(
                a.span(),
                format!(
                    "invalid metrics_addr {:?}: HOST:PORT such as 127.0.0.1:9211",
                    a.get_ref()
                ),
            )
        })?),
    };

    let positive = |v: &Option<Spanned<i64>>, what: &str, default: u32| -> anyhow::Result<u32> {
        match v {
            None => Ok(default),
            Some(v) => u32::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    src.err(
                        v.span(),
                        format!("invalid {what} {}: a positive count", v.get_ref()),
                    )
                }),
        }
    };
    let defaults = MapSizes::default();
    let sizes = MapSizes {
        source_buckets: positive(
            &file.source_buckets,
            "source_buckets",
            defaults.source_buckets,
        )?,
        prefix_buckets: positive(
            &file.prefix_buckets,
            "prefix_buckets",
            defaults.prefix_buckets,
        )?,
        top_talkers: positive(&file.top_talkers, "top_talkers", defaults.top_talkers)?,
    };
    let top_sample = match &file.top_sample {
        None => guard_common::config::DEFAULT_TOP_SAMPLE,
        Some(v) => u32::try_from(*v.get_ref())
            .map_err(|_| anyhow!("invalid top_sample {}: out of range", v.get_ref()))
            .and_then(validate_top_sample)
            .map_err(|e| src.err(v.span(), e))?,
    };

    Ok(Desired {
        interfaces,
        mode,
        ports,
        allow,
        deny,
        policy,
        rates,
        dry_run: file.dry_run,
        metrics_addr,
        pin_path: file
            .pin_path
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_ROOT)),
        detach_on_exit: file.detach_on_exit,
        top_sample,
        sizes,
        includes,
    })
}

/// Parses an include file: one CIDR per line, `#` comments and blank lines ignored.
pub fn parse_include(path: &Path, body: &str) -> anyhow::Result<BTreeSet<IpNet>> {
    let mut set = BTreeSet::new();
    for (i, line) in body.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let net =
            parse_cidr(line).map_err(|e| anyhow!("{} line {}: {e}", path.display(), i + 1))?;
        if let Some(why) = doubt(line, net) {
            warn_once(format!("{} line {}: {why}", path.display(), i + 1));
        }
        set.insert(net);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> anyhow::Result<Desired> {
        parse(Path::new("/etc/guard/guard.toml"), text)
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse_str(text).unwrap_err())
    }

    const MINIMAL: &str = r#"interfaces = ["eth0"]
mode = "auto"                      # auto | native | skb
ports = [11211]
allow = ["10.0.0.0/8", "2001:db8::/32"]
metrics_addr = "127.0.0.1:9211"
pin_path = "/sys/fs/bpf/guard"
"#;

    #[test]
    fn the_minimal_file_reads_naturally() {
        let d = parse_str(MINIMAL).unwrap();
        assert_eq!(d.interfaces, vec!["eth0"]);
        assert_eq!(d.mode, ModeRequest::Auto);
        assert_eq!(d.ports, vec![11211]);
        assert_eq!(d.allow.len(), 2);
        assert_eq!(d.metrics_addr.unwrap().to_string(), "127.0.0.1:9211");
        assert_eq!(d.pin_path, Path::new("/sys/fs/bpf/guard"));
        assert_eq!(d.policy, PolicyKind::Drop);
        assert!(!d.dry_run && !d.detach_on_exit);
    }

    #[test]
    fn prefixes_the_command_line_refuses_still_load_from_a_file() {
        // Files written before guard refused these (by `guard allow`, or by hand) keep
        // loading, as they always read: a daemon must not stop at an upgrade.
        let d =
            parse_str("interfaces = [\"eth0\"]\nallow = [\"::ffff:10.0.0.1\", \"010.0.0.0/8\"]\n")
                .unwrap();
        let allow: Vec<String> = d.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["10.0.0.0/8", "::ffff:10.0.0.1/128"]);
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let d = parse_str("interfaces = [\"eth0\"]\npolicy = \"rate-limit\"\n").unwrap();
        assert_eq!(d.ports, vec![11211]);
        assert_eq!(d.metrics_addr.unwrap().to_string(), DEFAULT_METRICS_ADDR);
        assert_eq!(d.rates.per_source, Some(DEFAULT_PER_SOURCE));
        assert_eq!(d.rates.global, Some(DEFAULT_GLOBAL));
        assert_eq!(d.rates.prefix_v4, Some(24));
        assert_eq!(d.sizes, MapSizes::default());
        let off = parse_str("interfaces = []\nmetrics_addr = \"\"\n").unwrap();
        assert!(off.metrics_addr.is_none() && off.interfaces.is_empty());
    }

    #[test]
    fn every_rejection_names_the_line_and_the_reason() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "interfaces = [\"eth0\"]\nallow = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n",
                4,
                "invalid CIDR",
            ),
            (
                "interfaces = [\"eth0\"]\nallow = [\"10.0.0.1/8\"]\n",
                2,
                "did you mean 10.0.0.0/8",
            ),
            (
                "interfaces = [\"eth0\"]\ndeny = [\"foo\"]\n",
                2,
                "invalid CIDR",
            ),
            (
                "interfaces = [\"eth0\"]\nallowlist = [\"10.0.0.0/8\"]\n",
                2,
                "unknown field",
            ),
            ("interfaces = [\"eth0\"\n", 1, ""),
            (
                "interfaces = [\"eth0\"]\nmode = \"turbo\"\n",
                2,
                "invalid mode",
            ),
            (
                "interfaces = [\"eth0\"]\nports = [0]\n",
                2,
                "invalid port 0",
            ),
            (
                "interfaces = [\"eth0\"]\nports = [70000]\n",
                2,
                "invalid port 70000",
            ),
            (
                "interfaces = [\"eth0\"]\nports = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]\n",
                2,
                "at most 16",
            ),
            ("interfaces = [\"eth0\"]\nports = []\n", 2, "no port"),
            (
                "interfaces = [\"eth0\"]\npolicy = \"block\"\n",
                2,
                "invalid policy",
            ),
            (
                "interfaces = [\"eth0\"]\n[rate_limit]\nglobal = \"10\"\n",
                2,
                "not to drop",
            ),
            (
                "interfaces = [\"eth0\"]\npolicy = \"rate-limit\"\n[rate_limit]\nper_source = \"0\"\n",
                4,
                "at least 1",
            ),
            (
                "interfaces = [\"eth0\"]\npolicy = \"rate-limit\"\n[rate_limit]\nglobal = \"10/0\"\n",
                4,
                "burst must be at least 1",
            ),
            (
                "interfaces = [\"eth0\"]\npolicy = \"rate-limit\"\n[rate_limit]\nprefix_v4 = 33\n",
                4,
                "0 to 32",
            ),
            (
                "interfaces = [\"eth0\"]\npolicy = \"rate-limit\"\n[rate_limit]\nburst = 3\n",
                4,
                "unknown field",
            ),
            (
                "interfaces = [\"eth0\"]\nmetrics_addr = \"localhost\"\n",
                2,
                "invalid metrics_addr",
            ),
            (
                "interfaces = [\"eth0\"]\ntop_sample = 3\n",
                2,
                "power of two",
            ),
            (
                "interfaces = [\"eth0\"]\nsource_buckets = 0\n",
                2,
                "positive",
            ),
            ("interfaces = [\"eth 0\"]\n", 1, "invalid interface name"),
            (
                "interfaces = [\"eth0\"]\nallow_include = [\"/nonexistent/allow.txt\"]\n",
                2,
                "No such file",
            ),
            ("mode = \"auto\"\n", 1, "missing field `interfaces`"),
        ];
        for (text, line, reason) in cases {
            let e = err(text);
            assert!(e.contains(&format!("line {line}")), "{text:?}: {e}");
            assert!(e.contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn include_files_are_read_and_their_errors_located() {
        let dir = std::env::temp_dir().join(format!("guard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("allow.txt"),
            "# office\n192.0.2.0/24\n\n198.51.100.7 # a host\n",
        )
        .unwrap();
        std::fs::write(dir.join("bad.txt"), "192.0.2.0/24\n192.0.2.1/24\n").unwrap();
        let cfg = dir.join("guard.toml");
        let d = parse(
            &cfg,
            "interfaces = [\"eth0\"]\nallow = [\"10.0.0.0/8\"]\nallow_include = [\"allow.txt\"]\n",
        )
        .unwrap();
        assert_eq!(d.allow.len(), 3);
        assert_eq!(d.includes, vec![dir.join("allow.txt")]);
        let e = format!(
            "{:#}",
            parse(
                &cfg,
                "interfaces = [\"eth0\"]\ndeny_include = [\"bad.txt\"]\n"
            )
            .unwrap_err()
        );
        assert!(
            e.contains("bad.txt line 2") && e.contains("did you mean 192.0.2.0/24"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
