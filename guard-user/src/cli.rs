//! The `guard` command line: clap definitions and dispatch.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    allowlist,
    attach::{self, AttachOutcome, AttachRequest, ModeRequest},
    maps::GuardMaps,
    pins::{DEFAULT_PIN_ROOT, Lock, PinLayout},
    privileges,
    stats::Totals,
    status::Status,
};

/// XDP guard against memcached UDP reflection: drops UDP to protected ports (11211) from
/// sources that are not allowlisted, at the driver.
#[derive(Debug, Parser)]
#[command(name = "guard", version, propagate_version = true)]
pub struct Cli {
    /// Where guard pins its program, maps and links (on bpffs).
    #[arg(long, global = true, env = "GUARD_PIN_PATH", default_value = DEFAULT_PIN_ROOT)]
    pub pin_path: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the guard (once) and attach it to interfaces; it stays attached after exit.
    Attach {
        /// Interfaces to guard.
        #[arg(required = true)]
        interfaces: Vec<String>,
        /// XDP mode: auto tries native, then falls back to skb.
        #[arg(long, value_enum, default_value_t = ModeRequest::Auto)]
        mode: ModeRequest,
        /// Protected UDP port (repeat for up to 16); default 11211, or the live set.
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<u16>,
        /// Count would-be drops as would_drop and let them pass.
        #[arg(long)]
        dry_run: bool,
        /// Allowlist these CIDRs before attaching (repeatable).
        #[arg(long = "allow", value_name = "CIDR")]
        allow: Vec<String>,
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
    /// List the allowlist.
    List {
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
        #[arg(long)]
        json: bool,
        /// Print again every SECS seconds, with rates.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
    /// Show or replace the protected UDP ports, live.
    Ports {
        /// New protected ports (up to 16); none prints the current set.
        ports: Vec<u16>,
    },
    /// Turn dry-run on or off, live.
    DryRun {
        /// on or off.
        #[arg(value_enum)]
        state: OnOff,
    },
}

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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
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
    match cli.command {
        Command::Attach {
            interfaces,
            mode,
            ports,
            dry_run,
            allow,
        } => {
            let allow = if allow.is_empty() {
                Vec::new()
            } else {
                allowlist::parse_cidrs(&allow)?
            };
            let request = AttachRequest {
                interfaces,
                mode,
                ports: (!ports.is_empty()).then_some(ports),
                dry_run,
                allow,
            };
            // Arguments first (unknown interfaces, bad ports), then privileges.
            attach::resolve_interfaces(&request.interfaces)?;
            if let Some(p) = &request.ports {
                attach::validate_ports(p)?;
            }
            privileges::require_attach()?;
            for (name, outcome) in attach::attach(&layout, &request)? {
                match outcome {
                    AttachOutcome::Attached { mode, fell_back } => match fell_back {
                        Some(reason) => println!(
                            "{name}: attached in {} mode (native XDP unavailable: {reason})",
                            mode.name()
                        ),
                        None => println!("{name}: attached in {} mode", mode.name()),
                    },
                    AttachOutcome::AlreadyAttached => println!("{name}: already attached"),
                }
            }
        }
        Command::Detach { interfaces, all } => {
            privileges::require_attach()?;
            for name in attach::detach(&layout, &interfaces, all)? {
                println!("{name}: detached");
            }
        }
        Command::Unload => {
            privileges::require_attach()?;
            attach::unload(&layout)?;
            println!("unloaded: every link, the program and the maps are gone");
        }
        Command::Allow { cidrs } => {
            let nets = allowlist::parse_cidrs(&cidrs)?;
            let mut maps = open_for_change(&layout)?;
            let _lock = Lock::acquire(&layout)?;
            let report = allowlist::allow(&mut maps, &nets)?;
            for net in report.added {
                println!("allowed {net}");
            }
            for net in report.present {
                println!("{net} was already allowed");
            }
        }
        Command::Revoke { cidrs } => {
            let nets = allowlist::parse_cidrs(&cidrs)?;
            let mut maps = open_for_change(&layout)?;
            let _lock = Lock::acquire(&layout)?;
            allowlist::revoke(&mut maps, &nets)?;
            for net in nets {
                println!("revoked {net}");
            }
        }
        Command::List { json } => {
            let maps = open_for_read(&layout)?;
            let nets = allowlist::list(&maps)?;
            if json {
                let v: Vec<String> = nets.iter().map(ToString::to_string).collect();
                println!("{}", serde_json::json!({ "allow": v }));
            } else {
                for net in nets {
                    println!("{net}");
                }
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
        Command::Stats { json, watch } => {
            let maps = open_for_read(&layout)?;
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
                let ports = attach::set_ports(&layout, &ports)?;
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                println!("protected ports: {}", ports.join(" "));
            }
        }
        Command::DryRun { state } => {
            privileges::require_bpf()?;
            attach::set_dry_run(&layout, state == OnOff::On)?;
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
    GuardMaps::open(layout)
}

fn open_for_change(layout: &PinLayout) -> anyhow::Result<GuardMaps> {
    open_for_read(layout)
}
