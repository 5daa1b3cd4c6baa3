//! The `guard` command line: clap definitions and dispatch.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    attach::{self, AttachOutcome, AttachRequest, ModeRequest},
    config::{self, DEFAULT_CONFIG},
    daemon,
    lists::{self, List},
    loader::MapSizes,
    maps::GuardMaps,
    metrics,
    persist::ConfigStore,
    pins::{DEFAULT_PIN_ROOT, PinLayout},
    policy::{PolicyKind, PolicyView, RateArgs},
    privileges,
    stats::Totals,
    status::Status,
    top,
};

/// XDP guard against memcached UDP reflection: drops or rate-limits UDP to protected ports
/// (11211) from sources that are not allowlisted, at the driver.
#[derive(Debug, Parser)]
#[command(name = "guard", version, propagate_version = true)]
pub struct Cli {
    /// Where guard pins its program, maps and links (on bpffs).
    #[arg(long, global = true, env = "GUARD_PIN_PATH", default_value = DEFAULT_PIN_ROOT)]
    pub pin_path: PathBuf,
    /// The config file `guard run` applies; commands that change the guard keep it in step
    /// when it exists and names the same pin path.
    #[arg(long, global = true, env = "GUARD_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: apply the config, serve metrics, reload on SIGHUP or file changes.
    Run,
    /// Check a config file (default: --config) and print the state it describes.
    CheckConfig {
        /// The file.
        file: Option<PathBuf>,
    },
    /// Load the guard (once) and attach it to interfaces; it stays attached after exit.
    Attach {
        /// Interfaces to guard.
        #[arg(required = true)]
        interfaces: Vec<String>,
        /// XDP mode: auto tries native, then falls back to skb.
        #[arg(long, value_enum, default_value_t = ModeRequest::Auto)]
        mode: ModeRequest,
        /// Protected UDP port (repeat for up to 16); default 11211, or the live set.
        #[arg(long = "port", value_name = "PORT", value_parser = port_number)]
        ports: Vec<u16>,
        /// Count would-be drops as would_drop and let them pass.
        #[arg(long)]
        dry_run: bool,
        /// Allowlist these CIDRs before attaching (repeatable).
        #[arg(long = "allow", value_name = "CIDR")]
        allow: Vec<String>,
        /// Policy for sources that are not allowlisted [default: drop, or the live one].
        #[arg(long, value_enum)]
        policy: Option<PolicyKind>,
        /// Rate limits (with --policy rate-limit).
        #[command(flatten)]
        rates: RateArgs,
        /// Record one dropped datagram in N per CPU as a top talker (power of two; 0: off)
        /// [default: 1024 on a fresh load].
        #[arg(long, value_name = "N")]
        top_sample: Option<u32>,
        /// Capacity of the per-source bucket LRU (fresh load only) [default: 65536].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        source_buckets: Option<u32>,
        /// Capacity of the per-prefix bucket LRU (fresh load only) [default: 16384].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        prefix_buckets: Option<u32>,
        /// Capacity of the top-talkers LRU (fresh load only) [default: 1024].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        top_talkers: Option<u32>,
    },
    /// Detach the guard from interfaces (the allowlist stays loaded).
    Detach {
        /// Interfaces to detach from.
        interfaces: Vec<String>,
        /// Detach from every interface.
        #[arg(long, conflicts_with = "interfaces")]
        all: bool,
    },
    /// Detach everywhere and remove every pin, allowlist included.
    Unload,
    /// Allow UDP to protected ports from these sources (CIDR or address).
    Allow {
        /// Prefixes such as 10.0.0.0/8 or 2001:db8::/32.
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    /// Remove prefixes from the allowlist (each exactly as allowed).
    Revoke {
        /// Prefixes to remove.
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    /// Drop these sources outright under either policy, unless a more specific allowlist
    /// prefix holds them (on equal prefix lengths the denylist wins).
    Deny {
        /// Prefixes such as 198.51.100.0/24.
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    /// Remove prefixes from the denylist (each exactly as denied).
    Undeny {
        /// Prefixes to remove.
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    /// List the allowlist (or, with --deny, the denylist).
    List {
        /// The denylist instead.
        #[arg(long)]
        deny: bool,
        /// JSON output, both lists: {"allow": [...], "deny": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Show or set the policy for sources that are not allowlisted, live.
    Policy {
        /// drop, or rate-limit; none prints the live policy.
        #[arg(value_enum)]
        policy: Option<PolicyKind>,
        /// Rate limits (with rate-limit); unset ones keep their live values or defaults.
        #[command(flatten)]
        rates: RateArgs,
        /// JSON output (when printing).
        #[arg(long)]
        json: bool,
    },
    /// The heaviest dropped sources (sampled estimates).
    Top {
        /// How many.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show what is loaded and attached.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show verdict counters (packets and bytes), summed over CPUs.
    Stats {
        /// JSON output: {"counters": {"dropped": {"packets": N, "bytes": N}, ...}}.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Output format (prometheus: the text format node_exporter's textfile collector reads).
        #[arg(long, value_enum, default_value_t = StatsFormat::Table)]
        format: StatsFormat,
        /// Print again every SECS seconds (1 or more), with rates.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        watch: Option<u64>,
    },
    /// Show or replace the protected UDP ports, live.
    Ports {
        /// New protected ports (up to 16); none prints the current set.
        #[arg(value_parser = port_number)]
        ports: Vec<u16>,
    },
    /// Turn dry-run on or off, live.
    DryRun {
        /// on or off.
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Print shell completions.
    #[command(hide = true)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff).
    #[command(hide = true)]
    Manpage,
}

/// Output formats of `guard stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    /// A table.
    Table,
    /// JSON.
    Json,
    /// Prometheus text format.
    Prometheus,
}

/// Shells for `guard completions`.
pub use clap_complete::Shell;

/// A switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// Entry point of the `guard` binary: runs the command, prints a one-line error on failure.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // Like every other error: one line, exit status 1.
            let text = e.to_string();
            let line: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!(
                "guard: error: {} (see guard --help)",
                line.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::FAILURE;
        }
    };
    let default_level = if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guard: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let layout = PinLayout::new(&cli.pin_path);
    let store = || ConfigStore::for_layout(&cli.config, &layout);
    match cli.command {
        Command::Run => {
            privileges::require_attach()?;
            daemon::run(&cli.config)?;
        }
        Command::CheckConfig { file } => {
            let path = file.unwrap_or(cli.config.clone());
            let d = config::load(&path)?;
            println!(
                "{}: ok: interfaces {}, ports {}, {} allowlisted and {} denylisted prefixes, policy {}, pin path {}",
                path.display(),
                if d.interfaces.is_empty() {
                    "none (nothing will be guarded)".to_owned()
                } else {
                    d.interfaces.join(", ")
                },
                d.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                d.allow.len(),
                d.deny.len(),
                d.policy.name(),
                d.pin_path.display()
            );
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "guard", &mut std::io::stdout());
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        }
        Command::Attach {
            interfaces,
            mode,
            ports,
            dry_run,
            allow,
            policy,
            rates,
            top_sample,
            source_buckets,
            prefix_buckets,
            top_talkers,
        } => {
            let allow = if allow.is_empty() {
                Vec::new()
            } else {
                lists::parse_new_cidrs(&allow)?
            };
            let sizes =
                (source_buckets.is_some() || prefix_buckets.is_some() || top_talkers.is_some())
                    .then(|| {
                        let d = MapSizes::default();
                        MapSizes {
                            source_buckets: source_buckets.unwrap_or(d.source_buckets),
                            prefix_buckets: prefix_buckets.unwrap_or(d.prefix_buckets),
                            top_talkers: top_talkers.unwrap_or(d.top_talkers),
                        }
                    });
            let request = AttachRequest {
                interfaces,
                mode,
                ports: (!ports.is_empty()).then_some(ports),
                dry_run,
                allow,
                policy,
                rates,
                top_sample,
                sizes,
                by_name: false,
            };
            // Arguments first (unknown interfaces, bad ports), then privileges.
            attach::resolve_interfaces(&request.interfaces)?;
            if let Some(p) = &request.ports {
                attach::validate_ports(p)?;
            }
            privileges::require_attach()?;
            for (name, outcome) in attach::attach(&layout, &request, store()?.as_ref())? {
                match outcome {
                    AttachOutcome::Attached { mode, fell_back } => match fell_back {
                        Some(reason) => println!(
                            "{name}: attached in {} mode (native XDP unavailable: {reason})",
                            mode.name()
                        ),
                        None => println!("{name}: attached in {} mode", mode.name()),
                    },
                    AttachOutcome::AlreadyAttached { mode, pinned_as } => {
                        let mode = mode.map_or(String::new(), |m| format!(" in {} mode", m.name()));
                        match pinned_as {
                            Some(old) => println!(
                                "{name}: already attached{mode} (its link is pinned as {old}, its \
                                 name before a rename)"
                            ),
                            None => println!("{name}: already attached{mode}"),
                        }
                    }
                }
            }
        }
        Command::Detach { interfaces, all } => {
            privileges::require_attach()?;
            for d in attach::detach(&layout, &interfaces, all, store()?.as_ref())? {
                match d.pinned_as {
                    Some(pin) => println!("{}: detached (its link was pinned as {pin})", d.name),
                    None => println!("{}: detached", d.name),
                }
            }
        }
        Command::Unload => {
            privileges::require_attach()?;
            attach::unload(&layout)?;
            println!("unloaded: every link, the program and the maps are gone");
        }
        Command::Allow { cidrs } => add(&layout, List::Allow, &cidrs, "allowed", &cli.config)?,
        Command::Deny { cidrs } => add(&layout, List::Deny, &cidrs, "denied", &cli.config)?,
        Command::Revoke { cidrs } => remove(&layout, List::Allow, &cidrs, "revoked", &cli.config)?,
        Command::Undeny { cidrs } => remove(&layout, List::Deny, &cidrs, "undenied", &cli.config)?,
        Command::List { deny, json } => {
            let maps = open_for_read(&layout)?;
            if json {
                let show = |list| -> anyhow::Result<Vec<String>> {
                    Ok(lists::entries(&maps, list)?
                        .iter()
                        .map(ToString::to_string)
                        .collect())
                };
                println!(
                    "{}",
                    serde_json::json!({ "allow": show(List::Allow)?, "deny": show(List::Deny)? })
                );
            } else {
                let list = if deny { List::Deny } else { List::Allow };
                for net in lists::entries(&maps, list)? {
                    println!("{net}");
                }
            }
        }
        Command::Policy {
            policy,
            rates,
            json,
        } => match policy {
            None => {
                if rates.any() {
                    anyhow::bail!(
                        "rate settings need a policy: guard policy rate-limit --global ..."
                    );
                }
                let maps = open_for_read(&layout)?;
                let view = PolicyView::of(&maps.read_config()?);
                if json {
                    println!("{}", serde_json::to_string_pretty(&view)?);
                } else {
                    println!("{}", view.render());
                }
            }
            Some(kind) => {
                crate::policy::validate(kind, &rates)?;
                privileges::require_bpf()?;
                attach::set_policy(&layout, kind, &rates, store()?.as_ref())?;
                let maps = GuardMaps::open(&layout)?;
                println!("{}", PolicyView::of(&maps.read_config()?).render());
            }
        },
        Command::Top { n, json } => {
            let maps = open_for_read(&layout)?;
            let talkers = top::top(&maps, n)?;
            if json {
                println!("{}", serde_json::json!({ "top": talkers }));
            } else {
                print!("{}", top::render(&talkers));
            }
        }
        Command::Status { json } => {
            privileges::require_bpf()?;
            let status = Status::read(&layout)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
        }
        Command::Stats {
            json,
            format,
            watch,
        } => {
            let maps = open_for_read(&layout)?;
            if format == StatsFormat::Prometheus {
                print!("{}", metrics::textfile(&layout)?);
                return Ok(());
            }
            let json = json || format == StatsFormat::Json;
            let mut previous = Totals::read(&maps)?;
            print_stats(&previous, None, json);
            if let Some(secs) = watch {
                let secs = secs.max(1);
                loop {
                    std::thread::sleep(Duration::from_secs(secs));
                    let now = Totals::read(&maps)?;
                    print_stats(&now, Some((&previous, secs as f64)), json);
                    previous = now;
                }
            }
        }
        Command::Ports { ports } => {
            if ports.is_empty() {
                let maps = open_for_read(&layout)?;
                let config = maps.read_config()?;
                let ports: Vec<String> = config.protected_ports().map(|p| p.to_string()).collect();
                println!("{}", ports.join(" "));
            } else {
                attach::validate_ports(&ports)?;
                privileges::require_bpf()?;
                let ports = attach::set_ports(&layout, &ports, store()?.as_ref())?;
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                println!("protected ports: {}", ports.join(" "));
            }
        }
        Command::DryRun { state } => {
            privileges::require_bpf()?;
            attach::set_dry_run(&layout, state == OnOff::On, store()?.as_ref())?;
            println!("dry-run {}", if state == OnOff::On { "on" } else { "off" });
        }
    }
    Ok(())
}

fn print_stats(now: &Totals, previous: Option<(&Totals, f64)>, json: bool) {
    if json {
        let mut v = now.to_json();
        if let Some((prev, secs)) = previous {
            let mut rates = serde_json::Map::new();
            for (verdict, c) in &now.0 {
                let p = prev.get(*verdict);
                rates.insert(
                    verdict.name().into(),
                    serde_json::json!({
                        "packets_per_sec": c.packets.saturating_sub(p.packets) as f64 / secs,
                        "bytes_per_sec": c.bytes.saturating_sub(p.bytes) as f64 / secs,
                    }),
                );
            }
            rates.insert(
                "bucket_inserts".into(),
                serde_json::json!({
                    "per_sec": now.1.bucket_inserts.saturating_sub(prev.1.bucket_inserts) as f64 / secs,
                }),
            );
            v["rates"] = serde_json::Value::Object(rates);
        }
        println!("{v}");
    } else {
        print!("{}", now.table(previous));
        if previous.is_some() {
            println!();
        }
    }
}

fn open_for_read(layout: &PinLayout) -> anyhow::Result<GuardMaps> {
    privileges::require_bpf()?;
    attach::require_loaded(layout)?;
    if crate::journal::pending(layout) {
        // An interrupted change: taking the lock finishes it before anything is read.
        drop(crate::pins::Lock::acquire(layout)?);
    }
    GuardMaps::open(layout)
}

fn add(
    layout: &PinLayout,
    list: List,
    cidrs: &[String],
    done: &str,
    config: &std::path::Path,
) -> anyhow::Result<()> {
    let nets = lists::parse_new_cidrs(cidrs)?;
    privileges::require_bpf()?;
    attach::require_loaded(layout)?;
    let store = ConfigStore::for_layout(config, layout)?;
    let report = attach::add_prefixes(layout, list, &nets, store.as_ref())?;
    for net in report.added {
        println!("{done} {net}");
    }
    for net in report.present {
        println!("{net} was already {done}");
    }
    Ok(())
}

fn remove(
    layout: &PinLayout,
    list: List,
    cidrs: &[String],
    done: &str,
    config: &std::path::Path,
) -> anyhow::Result<()> {
    let nets = lists::parse_cidrs(cidrs)?;
    privileges::require_bpf()?;
    attach::require_loaded(layout)?;
    let store = ConfigStore::for_layout(config, layout)?;
    attach::remove_prefixes(layout, list, &nets, store.as_ref())?;
    for net in nets {
        println!("{done} {net}");
    }
    Ok(())
}

/// A UDP port to protect: 1 to 65535.
fn port_number(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{text} is not a port: 1 to 65535")),
        Ok(port) => Ok(port),
    }
}
