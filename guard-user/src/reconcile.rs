//! Bringing the live guard to the state a config describes, by difference.
//!
//! Nothing that already matches is touched: pinned links are adopted as they are (no detach
//! and re-attach gap), and list entries are added before stale ones are removed, so that no
//! allowlisted client is dropped while a reload is applied.

use std::{collections::BTreeSet, path::Path};

use anyhow::Context as _;
use ipnet::IpNet;

use crate::{
    attach::{
        AttachOutcome, AttachRequest, adopt_renamed, attach_locked, check_modes, guarded_interface,
        linked_interfaces, remove_link, sync_deny_flag, unload,
    },
    config::{self, Desired},
    lists::{self, List},
    maps::GuardMaps,
    pins::{Lock, PinLayout},
    policy, sys,
};

/// What a reconcile changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The guard was loaded by this reconcile.
    pub loaded: bool,
    /// Interfaces newly attached.
    pub attached: Vec<String>,
    /// Interfaces detached (no longer in the config).
    pub detached: Vec<String>,
    /// Configured interfaces that do not exist (yet).
    pub missing: Vec<String>,
    /// Allowlist prefixes added and removed.
    pub allow: (usize, usize),
    /// Denylist prefixes added and removed.
    pub deny: (usize, usize),
    /// The config map (ports, policy, dry-run, sampling) changed.
    pub config_changed: bool,
}

impl Report {
    /// Did anything change?
    pub fn changed(&self) -> bool {
        *self
            != Report {
                missing: self.missing.clone(),
                ..Default::default()
            }
    }

    /// One log line.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.loaded {
            parts.push("loaded".to_string());
        }
        if !self.attached.is_empty() {
            parts.push(format!("attached {}", self.attached.join(",")));
        }
        if !self.detached.is_empty() {
            parts.push(format!("detached {}", self.detached.join(",")));
        }
        if self.allow != (0, 0) {
            parts.push(format!("allowlist +{} -{}", self.allow.0, self.allow.1));
        }
        if self.deny != (0, 0) {
            parts.push(format!("denylist +{} -{}", self.deny.0, self.deny.1));
        }
        if self.config_changed {
            parts.push("ports/policy/dry-run updated".into());
        }
        if !self.missing.is_empty() {
            parts.push(format!("waiting for {}", self.missing.join(",")));
        }
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Makes the guard under `layout` match `desired`, loading it if nothing is pinned.
pub fn reconcile(layout: &PinLayout, desired: &Desired) -> anyhow::Result<Report> {
    with_lock(layout, |lock| reconcile_locked(lock, layout, desired))
}

/// The bytes of a config file and its include files, to notice changes.
pub type Fingerprint = Vec<Option<Vec<u8>>>;

/// What [`reconcile_file`] did.
#[derive(Debug)]
pub enum Outcome {
    /// The config was read and applied.
    Applied(Box<Desired>, Report),
    /// The config was rejected (the running state is untouched).
    Rejected(anyhow::Error),
    /// The config was valid but applying it failed.
    Failed(Box<Desired>, anyhow::Error),
}

/// Reads the config at `path` and applies it, both under the pin root's lock: the command line
/// rewrites the file under the same lock, so no change it makes can fall between the read and
/// the apply (and be undone by an older copy). Also returns the fingerprint of exactly what
/// was read.
pub fn reconcile_file(layout: &PinLayout, path: &Path) -> anyhow::Result<(Outcome, Fingerprint)> {
    let existed = layout.abi_dir().exists();
    let result = with_lock(layout, |lock| {
        let text = std::fs::read(path);
        let parsed = match &text {
            Ok(bytes) => config::parse(path, &String::from_utf8_lossy(bytes)),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        };
        let mut fingerprint = vec![text.ok()];
        let outcome = match parsed {
            Err(e) => Outcome::Rejected(e),
            Ok(desired) => {
                fingerprint.extend(desired.includes.iter().map(|p| std::fs::read(p).ok()));
                match reconcile_locked(lock, layout, &desired) {
                    Ok(report) => Outcome::Applied(Box::new(desired), report),
                    Err(e) => Outcome::Failed(Box::new(desired), e),
                }
            }
        };
        Ok((outcome, fingerprint))
    });
    if !existed && matches!(result, Ok((Outcome::Failed(..), _))) {
        // A load this call started and could not finish: leave nothing behind.
        let _ = unload(layout);
    }
    result
}

/// The fingerprint of the config at `path` and the include files of `desired`, now.
pub fn fingerprint(path: &Path, desired: &Desired) -> Fingerprint {
    std::iter::once(path)
        .chain(desired.includes.iter().map(|p| p.as_path()))
        .map(|p| std::fs::read(p).ok())
        .collect()
}

fn with_lock<T>(
    layout: &PinLayout,
    f: impl FnOnce(&Lock) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    layout.check_abi()?;
    let existed = layout.abi_dir().exists();
    layout.prepare()?;
    let lock = Lock::acquire(layout)?;
    let result = f(&lock);
    if result.is_err() && !existed {
        // A load this call started and did not finish: leave nothing behind.
        drop(lock);
        let _ = unload(layout);
    }
    result
}

fn reconcile_locked(lock: &Lock, layout: &PinLayout, desired: &Desired) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut present = Vec::new();
    for name in &desired.interfaces {
        match sys::if_index(name) {
            Some(index) => present.push((name.clone(), index)),
            None => report.missing.push(name.clone()),
        }
    }

    if !layout.is_loaded() {
        let request = AttachRequest {
            interfaces: present.iter().map(|(n, _)| n.clone()).collect(),
            mode: desired.mode,
            ports: Some(desired.ports.clone()),
            dry_run: desired.dry_run,
            allow: desired.allow.iter().copied().collect(),
            policy: Some(desired.policy),
            rates: desired.rates.clone(),
            top_sample: Some(desired.top_sample),
            sizes: Some(desired.sizes),
            by_name: true,
        };
        let outcomes = attach_locked(lock, layout, &request, &present, Some(&desired.ports), None)?;
        report.loaded = true;
        report.allow.0 = desired.allow.len();
        report.attached = attached(outcomes);
    }

    let mut maps = GuardMaps::open(layout)?;
    if !report.loaded {
        warn_on_sizes(layout, desired);
        // The config's mode applies when an interface is attached; a live link keeps its own.
        if let Err(e) = check_modes(&maps, layout, desired.mode, &present) {
            crate::config::warn_once(format!("{e} (the config's mode applies at attach)"));
        }
    }

    // Additions first, so that nothing allowlisted in both the old and new state is dropped.
    let allow_live: BTreeSet<IpNet> = lists::entries(&maps, List::Allow)?.into_iter().collect();
    let deny_live: BTreeSet<IpNet> = lists::entries(&maps, List::Deny)?.into_iter().collect();
    let allow_add: Vec<IpNet> = desired.allow.difference(&allow_live).copied().collect();
    let deny_add: Vec<IpNet> = desired.deny.difference(&deny_live).copied().collect();
    lists::add(&mut maps, List::Allow, &allow_add)?;
    lists::add(&mut maps, List::Deny, &deny_add)?;
    sync_deny_flag(&mut maps)?;
    if !report.loaded {
        report.allow.0 = allow_add.len();
    }
    report.deny.0 = deny_add.len();

    let live = maps.read_config()?;
    let mut config = live;
    config.clear_ports();
    desired.ports.iter().for_each(|p| config.protect(*p));
    config.set_dry_run(desired.dry_run);
    policy::apply(&mut config, desired.policy, &desired.rates)?;
    config.top_sample = desired.top_sample;
    if config != live {
        maps.write_config(&config)?;
        report.config_changed = true;
    }

    // Interfaces: attach the missing ones, then detach those the config no longer names.
    if !report.loaded {
        let names: Vec<String> = present.iter().map(|(n, _)| n.clone()).collect();
        report.detached = adopt_renamed(layout, &mut maps, &names)?;
        let request = AttachRequest {
            interfaces: names,
            mode: desired.mode,
            by_name: true,
            ..Default::default()
        };
        let outcomes = attach_locked(lock, layout, &request, &present, None, None)?;
        report.attached = attached(outcomes);
    }
    for name in linked_interfaces(layout)? {
        // A link the config names by its pin's name, or by its interface's name now (renamed
        // since it was pinned), stays.
        let named = |n: &String| desired.interfaces.contains(n);
        if !named(&name) && !guarded_interface(layout, &name).is_some_and(|now| named(&now)) {
            remove_link(layout, &mut maps, &name)?;
            report.detached.push(name);
        }
    }

    // Removals last.
    let allow_remove: Vec<IpNet> = allow_live.difference(&desired.allow).copied().collect();
    let deny_remove: Vec<IpNet> = deny_live.difference(&desired.deny).copied().collect();
    lists::remove_all(&mut maps, List::Allow, &allow_remove)?;
    lists::remove_all(&mut maps, List::Deny, &deny_remove)?;
    sync_deny_flag(&mut maps)?;
    report.allow.1 = allow_remove.len();
    report.deny.1 = deny_remove.len();
    Ok(report)
}

fn attached(outcomes: Vec<(String, AttachOutcome)>) -> Vec<String> {
    outcomes
        .into_iter()
        .filter_map(|(name, o)| match o {
            AttachOutcome::Attached {
                mode, fell_back, ..
            } => {
                match fell_back {
                    Some(reason) => log::warn!(
                        "{name}: attached in {} mode (native XDP unavailable: {reason})",
                        mode.name()
                    ),
                    None => log::info!("{name}: attached in {} mode", mode.name()),
                }
                Some(name)
            }
            AttachOutcome::AlreadyAttached { .. } => None,
        })
        .collect()
}

fn warn_on_sizes(layout: &PinLayout, desired: &Desired) {
    use guard_common::maps::{PREFIX_BUCKETS, SOURCE_BUCKETS, TOP_TALKERS};
    for (name, want, key) in [
        (
            SOURCE_BUCKETS,
            desired.sizes.source_buckets,
            "source_buckets",
        ),
        (
            PREFIX_BUCKETS,
            desired.sizes.prefix_buckets,
            "prefix_buckets",
        ),
        (TOP_TALKERS, desired.sizes.top_talkers, "top_talkers"),
    ] {
        let have = aya::maps::MapData::from_pin(layout.map(name))
            .and_then(|m| m.info())
            .map(|i| i.max_entries())
            .context("reading a map size");
        if let Ok(have) = have
            && have != want
        {
            log::warn!(
                "{key} = {want} in the config, but the loaded guard's map holds {have}: sizes \
                 apply when guard loads (guard unload, then restart)"
            );
        }
    }
}
