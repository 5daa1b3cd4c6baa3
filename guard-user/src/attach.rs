//! Loading the guard once, attaching it to interfaces with pinned bpf_links, and detaching.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLinkId,
    },
};
use guard_common::{
    GuardConfig,
    config::{MAX_PORTS, MEMCACHED_PORT},
    maps::{Attachment, mode},
};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    journal,
    lists::{self, List},
    loader::{self, MapSizes},
    maps::GuardMaps,
    persist::{Change, ConfigStore},
    pins::{Lock, PinLayout},
    policy::{self, PolicyKind, RateArgs},
    sys,
};

/// The XDP mode an operator asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeRequest {
    /// Native if the driver supports it, else generic (skb).
    #[default]
    Auto,
    /// Native (driver) XDP only.
    Native,
    /// Generic (skb) XDP only.
    Skb,
}

/// The XDP mode an interface got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    /// Native (driver) XDP.
    Native,
    /// Generic (skb) XDP.
    Skb,
}

impl AttachedMode {
    fn code(self) -> u32 {
        match self {
            AttachedMode::Native => mode::NATIVE,
            AttachedMode::Skb => mode::SKB,
        }
    }

    /// The mode recorded as `code`, if known.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            mode::NATIVE => Some(AttachedMode::Native),
            mode::SKB => Some(AttachedMode::Skb),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
        }
    }
}

/// What `guard attach` asks for.
#[derive(Clone, Debug, Default)]
pub struct AttachRequest {
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    /// XDP mode.
    pub mode: ModeRequest,
    /// Protected ports; `None` keeps the live set (11211 on a fresh load).
    pub ports: Option<Vec<u16>>,
    /// Turn dry-run on.
    pub dry_run: bool,
    /// Prefixes to allowlist before any interface is attached.
    pub allow: Vec<IpNet>,
    /// Policy for non-allowlisted sources; `None` keeps the live one (drop on a fresh load).
    pub policy: Option<PolicyKind>,
    /// Rate settings for the rate-limit policy.
    pub rates: RateArgs,
    /// Top-talker sampling (a power of two, 0 = off); `None` keeps the live value
    /// (`DEFAULT_TOP_SAMPLE`, 1024, on a fresh load).
    pub top_sample: Option<u32>,
    /// Capacities of the load-time sized maps; only a fresh load can apply them.
    pub sizes: Option<MapSizes>,
    /// When a link is pinned under an interface's name but guards another interface (renamed
    /// since, the name reused): detach it and attach the interface that has the name now
    /// (`guard run`, whose config names the interfaces), rather than refuse (the CLI).
    pub by_name: bool,
}

/// Validates a top-talker sampling interval.
pub fn validate_top_sample(n: u32) -> anyhow::Result<u32> {
    if n != 0 && !n.is_power_of_two() {
        bail!("invalid top sample {n}: a power of two (1, 2, 4, ...) or 0 to turn it off");
    }
    Ok(n)
}

/// What happened to one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachOutcome {
    /// Newly attached in this mode; `fell_back` when auto mode had to use skb.
    Attached {
        /// The mode it got.
        mode: AttachedMode,
        /// Native was tried first and failed for this reason.
        fell_back: Option<String>,
    },
    /// Already attached by guard; left as it was.
    AlreadyAttached {
        /// The mode it was attached in, as recorded.
        mode: Option<AttachedMode>,
        /// The name its link is pinned under, when that is not the interface's name now
        /// (renamed since).
        pinned_as: Option<String>,
    },
}

/// Validates a port list: 1 to [`MAX_PORTS`] distinct ports, none zero.
pub fn validate_ports(ports: &[u16]) -> anyhow::Result<Vec<u16>> {
    let mut v: Vec<u16> = ports.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        bail!("no port given");
    }
    if v.contains(&0) {
        bail!("invalid port 0: ports are 1 to 65535");
    }
    if v.len() > MAX_PORTS {
        bail!(
            "{} ports given: guard protects at most {MAX_PORTS}",
            v.len()
        );
    }
    Ok(v)
}

/// Resolves interface names, failing on the first unknown one.
pub fn resolve_interfaces(names: &[String]) -> anyhow::Result<Vec<(String, u32)>> {
    if names.is_empty() {
        bail!("no interface given");
    }
    let mut out: Vec<(String, u32)> = Vec::new();
    for name in names {
        let index = sys::if_index(name).ok_or_else(|| anyhow!("unknown interface {name:?}"))?;
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.clone(), index));
        }
    }
    Ok(out)
}

enum Program {
    Fresh(Box<Ebpf>),
    Pinned(Box<Xdp>),
}

impl Program {
    fn xdp(&mut self) -> anyhow::Result<&mut Xdp> {
        match self {
            Program::Fresh(ebpf) => loader::program(ebpf),
            Program::Pinned(xdp) => Ok(xdp),
        }
    }
}

/// Loads the guard if needed (maps and program pinned under `layout`), applies the request's
/// configuration and allowlist, then attaches to every interface, all or none; with a
/// `store`, the config file records the change in the same step.
pub fn attach(
    layout: &PinLayout,
    request: &AttachRequest,
    store: Option<&ConfigStore>,
) -> anyhow::Result<Vec<(String, AttachOutcome)>> {
    // Validate everything before touching anything.
    let interfaces = resolve_interfaces(&request.interfaces)?;
    let ports = request.ports.as_deref().map(validate_ports).transpose()?;
    if let Some(kind) = request.policy {
        policy::validate(kind, &request.rates)?;
    } else if request.rates.any() {
        bail!("rate settings need --policy rate-limit");
    }
    if let Some(n) = request.top_sample {
        validate_top_sample(n)?;
    }
    layout.check_abi()?;
    if layout.is_loaded()
        && let Some(sizes) = &request.sizes
    {
        check_sizes(layout, sizes)?;
    }
    let existed = layout.abi_dir().exists();
    layout.prepare()?;
    let lock = Lock::acquire(layout)?;
    if existed && layout.is_loaded() {
        check_modes(&GuardMaps::open(layout)?, layout, request.mode, &interfaces)
            .map_err(|e| anyhow!("{e}: nothing was changed"))?;
    }
    let result = attach_locked(&lock, layout, request, &interfaces, ports.as_deref(), store);
    if result.is_err() && !existed {
        // This call created the state: leave nothing behind.
        drop(lock);
        let _ = unload(layout);
    }
    result
}

/// [`attach`] with the lock held and the request validated.
pub(crate) fn attach_locked(
    _lock: &Lock,
    layout: &PinLayout,
    request: &AttachRequest,
    interfaces: &[(String, u32)],
    ports: Option<&[u16]>,
    store: Option<&ConfigStore>,
) -> anyhow::Result<Vec<(String, AttachOutcome)>> {
    let (mut program, mut maps) = if layout.is_loaded() {
        let xdp = Xdp::from_pin(layout.prog(), aya_obj::programs::XdpAttachType::Interface)
            .with_context(|| format!("opening the pinned program {}", layout.prog().display()))?;
        (Program::Pinned(Box::new(xdp)), GuardMaps::open(layout)?)
    } else {
        let sizes = request.sizes.unwrap_or_default();
        let mut ebpf = loader::load_pinned(layout, &sizes)?;
        let maps = GuardMaps::take(&mut ebpf)?;
        (Program::Fresh(Box::new(ebpf)), maps)
    };

    // Configuration and allowlist first, so that no interface is ever guarded by a half
    // configured program; both are rolled back if any interface fails.
    let old_config = maps.read_config()?;
    // A fresh config map is all zeroes; start it from the defaults (prefix bucket lengths).
    let mut config = match program {
        Program::Fresh(_) => GuardConfig::EMPTY,
        Program::Pinned(_) => old_config,
    };
    if let Some(ports) = ports {
        config.clear_ports();
        ports.iter().for_each(|p| config.protect(*p));
    } else if config.protected_ports().next().is_none() {
        config.protect(MEMCACHED_PORT);
    }
    if request.dry_run {
        config.set_dry_run(true);
    }
    if let Some(kind) = request.policy {
        policy::apply(&mut config, kind, &request.rates)?;
    }
    match request.top_sample {
        Some(n) => config.top_sample = n,
        None if matches!(program, Program::Fresh(_)) => {
            config.top_sample = guard_common::config::DEFAULT_TOP_SAMPLE
        }
        None => {}
    }
    maps.write_config(&config)?;
    let added = if request.allow.is_empty() {
        Vec::new()
    } else {
        match lists::allow(&mut maps, &request.allow) {
            Ok(report) => report.added,
            Err(e) => {
                let _ = maps.write_config(&old_config);
                return Err(e);
            }
        }
    };
    if let Program::Fresh(_) = program {
        // Pinned last: its presence is what marks the guard as loaded.
        program
            .xdp()?
            .pin(layout.prog())
            .with_context(|| format!("pinning the program at {}", layout.prog().display()))?;
    }

    let mut done: Vec<(String, AttachOutcome)> = Vec::new();
    let mut failure = None;
    for (name, index) in interfaces {
        match attach_one(layout, &mut program, &mut maps, name, *index, request) {
            Ok(outcome) => done.push((name.clone(), outcome)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if failure.is_none()
        && let Some(store) = store
    {
        let mut changes = vec![Change::AddInterfaces(
            interfaces.iter().map(|(n, _)| n.clone()).collect(),
        )];
        if let Some(ports) = ports {
            changes.push(Change::Ports(ports.to_vec()));
        }
        if request.dry_run {
            changes.push(Change::DryRun(true));
        }
        if let Some(kind) = request.policy {
            changes.push(Change::Policy(kind, request.rates.clone()));
        }
        if !request.allow.is_empty() {
            changes.push(Change::AddPrefixes(List::Allow, request.allow.clone()));
        }
        if let Err(e) = store.apply(&changes) {
            failure = Some(e.context(format!("updating {}", store.path().display())));
        }
    }
    if let Some(e) = failure {
        for (undo, outcome) in &done {
            if matches!(outcome, AttachOutcome::Attached { .. }) {
                let _ = remove_link(layout, &mut maps, undo);
            }
        }
        let _ = lists::revoke(&mut maps, &added);
        let _ = maps.write_config(&old_config);
        return Err(e);
    }
    Ok(done)
}

fn attach_one(
    layout: &PinLayout,
    program: &mut Program,
    maps: &mut GuardMaps,
    name: &str,
    index: u32,
    request: &AttachRequest,
) -> anyhow::Result<AttachOutcome> {
    let pin = layout.link(name);
    if let Some(pinned) = guarding_pin(layout, name, index) {
        if pinned != name && pin.exists() && guarded_interface(layout, name).is_none() {
            // A stale pin under the name asked for, whose interface is guarded under another
            // pin: it holds nothing, so it goes (if it can; it changes no traffic).
            if let Err(e) = remove_link(layout, maps, name) {
                log::warn!("{name}: removing its stale link: {e:#}");
            }
        }
        return Ok(AttachOutcome::AlreadyAttached {
            mode: recorded_mode(maps, index),
            pinned_as: (pinned != name).then_some(pinned),
        });
    }
    if pin.exists() {
        match guarded_interface(layout, name) {
            // Renamed since, and the name reused: the link still guards its interface.
            Some(now) if !request.by_name => bail!(
                "the link pinned as {name} guards {now}, which was {name} before a rename; \
                 guard does not detach {now} for the new {name}: `guard detach {now}` first, \
                 then attach both"
            ),
            Some(now) => {
                log::warn!(
                    "detaching {now} (pinned as {name}, its name before a rename): the config \
                     names {name}, which is another interface now"
                );
                remove_link(layout, maps, name)?;
            }
            // Stale: the interface went away.
            None => remove_link(layout, maps, name)?,
        }
    }
    let xdp = program.xdp()?;
    let attempts: &[(XdpMode, AttachedMode)] = match request.mode {
        ModeRequest::Auto => &[
            (XdpMode::Driver, AttachedMode::Native),
            (XdpMode::Skb, AttachedMode::Skb),
        ],
        ModeRequest::Native => &[(XdpMode::Driver, AttachedMode::Native)],
        ModeRequest::Skb => &[(XdpMode::Skb, AttachedMode::Skb)],
    };
    let mut fell_back = None;
    let mut attached: Option<(XdpLinkId, AttachedMode)> = None;
    for (xdp_mode, mode) in attempts {
        match xdp.attach_to_if_index(index, *xdp_mode) {
            Ok(id) => {
                attached = Some((id, *mode));
                break;
            }
            Err(e) if is_busy(&e) => bail!(
                "{name} already has an XDP program that guard does not own; refusing to replace \
                 it (see `ip link show dev {name}`; remove it first if it is not needed)"
            ),
            Err(e) => {
                let reason = describe(&e);
                if *mode == AttachedMode::Native && request.mode == ModeRequest::Auto {
                    log::warn!("{name}: native XDP failed ({reason}); falling back to skb mode");
                    fell_back = Some(reason);
                } else {
                    bail!("attaching to {name} in {} mode: {reason}", mode.name());
                }
            }
        }
    }
    let (id, mode) = attached.ok_or_else(|| anyhow!("attaching to {name}: no mode worked"))?;
    let link = xdp.take_link(id)?;
    let link = FdLink::try_from(link).map_err(|_| {
        anyhow!(
            "{name}: this kernel attached XDP through netlink, not a bpf_link (needs Linux 5.9+)"
        )
    })?;
    let pinned: PinnedLink = link
        .pin(&pin)
        .with_context(|| format!("pinning the link of {name} at {}", pin.display()))?;
    drop(pinned);
    let mut record = Attachment {
        mode: mode.code(),
        ..Default::default()
    };
    set_record_name(&mut record, name);
    maps.attachments
        .insert(index, record, 0)
        .context("recording the attachment")?;
    Ok(AttachOutcome::Attached { mode, fell_back })
}

/// Refuses an interface already guarded in another mode than the one asked for, before
/// anything changes: switching modes means a moment unguarded, so it takes a detach.
pub(crate) fn check_modes(
    maps: &GuardMaps,
    layout: &PinLayout,
    request: ModeRequest,
    interfaces: &[(String, u32)],
) -> anyhow::Result<()> {
    let Some(wanted) = request.fixed() else {
        return Ok(());
    };
    for (name, index) in interfaces {
        if guarding_pin(layout, name, *index).is_some()
            && let Some(mode) = recorded_mode(maps, *index)
            && wanted != mode
        {
            bail!(
                "{name} is already guarded in {} mode; to switch it to {} mode, `guard detach \
                 {name}` and attach it again",
                mode.name(),
                wanted.name()
            );
        }
    }
    Ok(())
}

impl ModeRequest {
    /// The one mode asked for, unless auto.
    fn fixed(self) -> Option<AttachedMode> {
        match self {
            ModeRequest::Auto => None,
            ModeRequest::Native => Some(AttachedMode::Native),
            ModeRequest::Skb => Some(AttachedMode::Skb),
        }
    }
}

/// The link pin of guard's own link on interface `index`, now named `name`: the pin of that
/// name, or one pinned under an older name of the interface.
pub fn guarding_pin(layout: &PinLayout, name: &str, index: u32) -> Option<String> {
    let on_index =
        |pin: &str| matches!(sys::link_details(&layout.link(pin)), Ok(d) if d.ifindex == index);
    if on_index(name) {
        return Some(name.to_owned());
    }
    linked_interfaces(layout)
        .ok()?
        .into_iter()
        .find(|pin| on_index(pin))
}

/// The mode recorded for interface `index`.
fn recorded_mode(maps: &GuardMaps, index: u32) -> Option<AttachedMode> {
    maps.attachments
        .get(&index, 0)
        .ok()
        .and_then(|a| AttachedMode::from_code(a.mode))
}

/// The interface the link pinned as `pin` is on, by its name now; `None` when it is gone
/// (a stale link).
pub(crate) fn guarded_interface(layout: &PinLayout, pin: &str) -> Option<String> {
    sys::link_details(&layout.link(pin))
        .ok()
        .filter(|d| d.ifindex != 0)
        .and_then(|d| sys::if_name(d.ifindex))
}

/// Records an interface name in an attachment (NUL-terminated, cut to fit).
fn set_record_name(record: &mut Attachment, name: &str) {
    record.name = [0; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(record.name.len() - 1);
    record.name[..n].copy_from_slice(&bytes[..n]);
}

fn is_busy(e: &ProgramError) -> bool {
    let errno = match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    matches!(errno, Some(libc::EBUSY) | Some(libc::EEXIST))
}

fn describe(e: &ProgramError) -> String {
    match e {
        ProgramError::SyscallError(s) => s.io_error.to_string(),
        other => format!("{other:#}"),
    }
}

/// Moves the link pinned as `from` to the free pin `to` (an atomic rename in bpffs: the link
/// stays attached throughout), and its record with it.
fn repin(layout: &PinLayout, maps: &mut GuardMaps, from: &str, to: &str) -> anyhow::Result<()> {
    let index = sys::link_details(&layout.link(from))
        .with_context(|| format!("reading the link pinned as {from}"))?
        .ifindex;
    sys::rename_noreplace(&layout.link(from), &layout.link(to))
        .with_context(|| format!("moving the link pinned as {from} to {to}"))?;
    if let Ok(mut record) = maps.attachments.get(&index, 0) {
        set_record_name(&mut record, to);
        if let Err(e) = maps.attachments.insert(index, record, 0) {
            let _ = sys::rename_noreplace(&layout.link(to), &layout.link(from));
            return Err(e).context("recording the attachment");
        }
    }
    Ok(())
}

/// Re-pins every link whose interface was renamed to one of `names` (a config's) under that
/// name, when its pin is free or stale, so that the old name is free for another interface
/// and no link is detached for it; repeated so that chains of renames resolve. A pin held by
/// a link whose interface the config does not name by its name now is taken over (that link
/// detached, as the config's names decide). Returns the interfaces so detached, by their
/// names now; an error stops the reconcile before it attaches anything.
pub(crate) fn adopt_renamed(
    layout: &PinLayout,
    maps: &mut GuardMaps,
    names: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut detached = Vec::new();
    loop {
        let mut progress = false;
        for pin in linked_interfaces(layout)? {
            let Some(now) = guarded_interface(layout, &pin) else {
                continue;
            };
            if now == pin || !names.contains(&now) {
                continue;
            }
            if layout.link(&now).exists() {
                match guarded_interface(layout, &now) {
                    // Stale: its interface is gone.
                    None => {}
                    // Held by a link that moves to its own interface's name: a later pass.
                    Some(holder) if names.contains(&holder) => continue,
                    // Held by a link whose interface the config no longer names (by its name
                    // now): the config means this interface by the name.
                    Some(holder) => {
                        log::warn!(
                            "detaching {holder} (pinned as {now}, its name before a rename): \
                             the config names {now}, which is another interface now"
                        );
                        detached.push(holder);
                    }
                }
                remove_link(layout, maps, &now)?;
            }
            repin(layout, maps, &pin, &now)?;
            log::info!("{now}: its link, pinned as {pin} before a rename, is pinned as {now}");
            progress = true;
        }
        if !progress {
            return Ok(detached);
        }
    }
}

/// Removes the link pin of `name` (detaching it) and its record.
pub(crate) fn remove_link(
    layout: &PinLayout,
    maps: &mut GuardMaps,
    name: &str,
) -> anyhow::Result<()> {
    let pin = layout.link(name);
    let index = sys::link_details(&pin).ok().map(|d| d.ifindex);
    match std::fs::remove_file(&pin) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", pin.display())),
    }
    // The record of the link's interface; for a stale link, records of that name whose
    // interface is gone (a live interface's record stays, whatever its name).
    let stale: Vec<u32> = match index {
        Some(index) if index != 0 => vec![index],
        _ => maps
            .attachments
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, a)| attachment_name(a) == name && sys::if_name(*k).is_none())
            .map(|(k, _)| k)
            .collect(),
    };
    for k in stale {
        let _ = maps.attachments.remove(&k);
    }
    Ok(())
}

/// The interface name recorded in an attachment.
pub fn attachment_name(a: &Attachment) -> String {
    let len = a.name.iter().position(|b| *b == 0).unwrap_or(a.name.len());
    String::from_utf8_lossy(&a.name[..len]).into_owned()
}

/// Names of the interfaces with a link pin.
pub fn linked_interfaces(layout: &PinLayout) -> anyhow::Result<Vec<String>> {
    let dir = layout.links_dir();
    let mut names = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                names.push(e?.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    names.sort();
    Ok(names)
}

/// Fails unless a guard is loaded under `layout`.
pub fn require_loaded(layout: &PinLayout) -> anyhow::Result<()> {
    layout.check_abi()?;
    if !layout.is_loaded() {
        bail!(
            "no guard is loaded at {} (run `guard attach IFACE` first)",
            layout.root().display()
        );
    }
    Ok(())
}

/// One interface [`detach`] detached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    /// The name asked for (the pin's name with `--all`).
    pub name: String,
    /// The name its link was pinned under, when it differs (renamed since).
    pub pinned_as: Option<String>,
}

/// Detaches guard from the named interfaces (all must be attached), or from all; with a
/// `store`, the config file forgets them in the same step.
///
/// A name is the interface's: its link is found on it whatever name the link was pinned
/// under. A pin whose own name no interface has any more (a stale link, or the name of an
/// interface before a rename) can be named too.
pub fn detach(
    layout: &PinLayout,
    interfaces: &[String],
    all: bool,
    store: Option<&ConfigStore>,
) -> anyhow::Result<Vec<Detached>> {
    require_loaded(layout)?;
    let _lock = Lock::acquire(layout)?;
    let linked = linked_interfaces(layout)?;
    let mut targets: Vec<(String, String)> = Vec::new();
    if all {
        targets = linked.iter().map(|p| (p.clone(), p.clone())).collect();
    } else {
        if interfaces.is_empty() {
            bail!("name the interfaces to detach, or use --all");
        }
        for name in interfaces {
            let pin = detach_target(layout, &linked, name)?;
            if !targets.iter().any(|(_, p)| *p == pin) {
                targets.push((name.clone(), pin));
            }
        }
    }
    let mut maps = GuardMaps::open(layout)?;
    let snapshot = store.map(ConfigStore::snapshot).transpose()?;
    // Every link's interface name now, read before any pin goes.
    let now: BTreeMap<String, Option<String>> = linked
        .iter()
        .map(|p| (p.clone(), guarded_interface(layout, p)))
        .collect();
    if let Some(store) = store {
        store.apply(&forget_detached(&linked, &now, &targets, store)?)?;
    }
    for (i, (_, pin)) in targets.iter().enumerate() {
        if let Err(e) = remove_link(layout, &mut maps, pin) {
            if let (Some(store), Some(text)) = (store, &snapshot) {
                // The config forgets what was detached before the failure, and only that.
                let _ = store.restore(text).and_then(|()| {
                    store.apply(&forget_detached(&linked, &now, &targets[..i], store)?)
                });
            }
            return Err(e);
        }
    }
    Ok(targets
        .into_iter()
        .map(|(name, pin)| Detached {
            pinned_as: (pin != name).then_some(pin),
            name,
        })
        .collect())
}

/// The config edit for a detach of `targets` (name asked for, pin), given every link's
/// interface name before it (`now`): the config may know a detached link by the name asked
/// for, its pin's name or its interface's name now, and forgets all three; except a name
/// under which it knows a link that stays, which it keeps, and a link that stays whose only
/// name in the config goes (its pin's, after renames) is named by its interface's name now,
/// so that `guard run` keeps it and nothing else.
fn forget_detached(
    linked: &[String],
    now: &BTreeMap<String, Option<String>>,
    targets: &[(String, String)],
    store: &ConfigStore,
) -> anyhow::Result<Vec<Change>> {
    let configured = store.desired()?.interfaces;
    let now_of = |pin: &String| now.get(pin).cloned().flatten();
    let mut forget: BTreeSet<String> = BTreeSet::new();
    for (name, pin) in targets {
        forget.insert(name.clone());
        forget.insert(pin.clone());
        forget.extend(now_of(pin));
    }
    // Names the detached interfaces have now: never kept for a stale link's sake.
    let detached_now: BTreeSet<String> = targets.iter().filter_map(|(_, p)| now_of(p)).collect();
    let mut add = Vec::new();
    for pin in linked
        .iter()
        .filter(|p| !targets.iter().any(|(_, t)| t == *p))
    {
        let known = |n: &String| configured.contains(n);
        match now_of(pin) {
            Some(now) if known(pin) || known(&now) => {
                if forget.contains(pin) && !known(&now) {
                    add.push(now.clone());
                }
                forget.remove(&now);
            }
            Some(_) => {}
            None if known(pin) && !detached_now.contains(pin) => {
                forget.remove(pin);
            }
            None => {}
        }
    }
    Ok(vec![
        Change::RemoveInterfaces(forget.into_iter().collect()),
        Change::AddInterfaces(add),
    ])
}

/// The link pin `guard detach NAME` means: the pin of that name when its link is on the
/// interface of that name; else the pin of the link on the interface of that name, whatever
/// its pin's name (renamed since); else the pin of that name when its interface is gone (a
/// stale link) or no interface has the name (the interface's name before a rename).
fn detach_target(layout: &PinLayout, linked: &[String], name: &str) -> anyhow::Result<String> {
    let index = sys::if_index(name);
    let pinned = linked.iter().any(|p| p == name);
    let on = pinned.then(|| guarded_interface(layout, name)).flatten();
    if pinned && on.as_deref() == Some(name) {
        return Ok(name.to_owned());
    }
    if let Some(pin) = index.and_then(|i| guarding_pin(layout, name, i)) {
        return Ok(pin);
    }
    match on {
        _ if !pinned => bail!("guard is not attached to {name:?}: nothing was detached"),
        Some(now) if index.is_some() => bail!(
            "guard is not attached to {name:?}: the link pinned as {name} guards {now}, renamed \
             since (`guard detach {now}` detaches it); nothing was detached"
        ),
        _ => Ok(name.to_owned()),
    }
}

/// Detaches everywhere and removes every pin: the guard is gone, allowlist included.
pub fn unload(layout: &PinLayout) -> anyhow::Result<()> {
    layout.check_abi()?;
    if !layout.abi_dir().exists() {
        bail!("no guard is loaded at {}", layout.root().display());
    }
    let _lock = Lock::acquire(layout)?;
    for name in linked_interfaces(layout)? {
        std::fs::remove_file(layout.link(&name))
            .with_context(|| format!("removing the link of {name}"))?;
    }
    let _ = std::fs::remove_file(layout.prog());
    for name in crate::maps::MAP_NAMES {
        let _ = std::fs::remove_file(layout.map(name));
    }
    for dir in [layout.links_dir(), layout.maps_dir(), layout.abi_dir()] {
        let _ = std::fs::remove_dir(&dir);
    }
    // The root too, when nothing else lives there.
    let _ = std::fs::remove_dir(layout.root());
    Ok(())
}

/// Replaces the protected ports, live.
pub fn set_ports(
    layout: &PinLayout,
    ports: &[u16],
    store: Option<&ConfigStore>,
) -> anyhow::Result<Vec<u16>> {
    let ports = validate_ports(ports)?;
    update_config(
        layout,
        |c| {
            c.clear_ports();
            ports.iter().for_each(|p| c.protect(*p));
        },
        store.map(|s| (s, Change::Ports(ports.clone()))),
    )?;
    Ok(ports)
}

/// Fails when pinned maps were created with other sizes than requested.
fn check_sizes(layout: &PinLayout, sizes: &MapSizes) -> anyhow::Result<()> {
    use guard_common::maps::{PREFIX_BUCKETS, SOURCE_BUCKETS, TOP_TALKERS};
    for (name, want, flag) in [
        (SOURCE_BUCKETS, sizes.source_buckets, "--source-buckets"),
        (PREFIX_BUCKETS, sizes.prefix_buckets, "--prefix-buckets"),
        (TOP_TALKERS, sizes.top_talkers, "--top-talkers"),
    ] {
        let have = aya::maps::MapData::from_pin(layout.map(name))?
            .info()?
            .max_entries();
        if have != want {
            bail!(
                "{flag} {want}: the loaded guard's map holds {have}; map sizes are fixed when \
                 guard loads (`guard unload`, then attach again)"
            );
        }
    }
    Ok(())
}

/// Sets the policy for non-allowlisted sources, live.
pub fn set_policy(
    layout: &PinLayout,
    kind: PolicyKind,
    rates: &RateArgs,
    store: Option<&ConfigStore>,
) -> anyhow::Result<()> {
    policy::validate(kind, rates)?;
    update_config(
        layout,
        |c| {
            policy::apply(c, kind, rates).expect("validated above");
        },
        store.map(|s| (s, Change::Policy(kind, rates.clone()))),
    )
}

/// Adds prefixes to a list, live, keeping the config's denylist flag and, with a `store`,
/// the config file in step: all or nothing.
pub fn add_prefixes(
    layout: &PinLayout,
    list: List,
    nets: &[IpNet],
    store: Option<&ConfigStore>,
) -> anyhow::Result<lists::Added> {
    require_loaded(layout)?;
    let _lock = Lock::acquire(layout)?;
    let mut maps = GuardMaps::open(layout)?;
    let live: std::collections::BTreeSet<IpNet> =
        lists::entries(&maps, list)?.into_iter().collect();
    journal::begin(
        layout,
        &journal::Record {
            list: list_key(list).into(),
            op: "add".into(),
            nets: nets.iter().filter(|n| !live.contains(n)).copied().collect(),
            config: store.map(|s| s.path().to_path_buf()),
        },
    )?;
    let report = match lists::add(&mut maps, list, nets) {
        Ok(r) => r,
        Err(e) => {
            journal::end(layout)?;
            return Err(e);
        }
    };
    let persisted = match store {
        Some(store) => store.apply(&[Change::AddPrefixes(list, nets.to_vec())]),
        None => Ok(()),
    };
    if let Err(e) = persisted {
        let _ = lists::remove_all(&mut maps, list, &report.added);
        journal::end(layout)?;
        return Err(e.context("nothing was added"));
    }
    sync_deny_flag(&mut maps)?;
    journal::end(layout)?;
    Ok(report)
}

/// Removes prefixes from a list, live, keeping the config's denylist flag and, with a
/// `store`, the config file in step: all or nothing.
pub fn remove_prefixes(
    layout: &PinLayout,
    list: List,
    nets: &[IpNet],
    store: Option<&ConfigStore>,
) -> anyhow::Result<()> {
    require_loaded(layout)?;
    let _lock = Lock::acquire(layout)?;
    if let Some(store) = store {
        store.check_removable(list, nets)?;
    }
    let mut maps = GuardMaps::open(layout)?;
    journal::begin(
        layout,
        &journal::Record {
            list: list_key(list).into(),
            op: "remove".into(),
            nets: nets.to_vec(),
            config: store.map(|s| s.path().to_path_buf()),
        },
    )?;
    if let Err(e) = lists::remove_all(&mut maps, list, nets) {
        journal::end(layout)?;
        // Name every prefix that is not there, not only the first.
        return Err(match lists::missing(&maps, list, nets) {
            Ok(missing) if missing.len() > 1 => anyhow!(
                "{} are not on the {}: nothing was removed",
                missing
                    .iter()
                    .map(IpNet::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                list.name()
            ),
            _ => e,
        });
    }
    let persisted = match store {
        Some(store) => store.apply(&[Change::RemovePrefixes(list, nets.to_vec())]),
        None => Ok(()),
    };
    if let Err(e) = persisted {
        let _ = lists::add(&mut maps, list, nets);
        journal::end(layout)?;
        return Err(e.context("nothing was removed"));
    }
    sync_deny_flag(&mut maps)?;
    journal::end(layout)
}

fn list_key(list: List) -> &'static str {
    match list {
        List::Allow => "allow",
        List::Deny => "deny",
    }
}

/// Sets the config's has-deny flag from the denylist's contents (call under the lock).
pub fn sync_deny_flag(maps: &mut GuardMaps) -> anyhow::Result<()> {
    let (v4, v6) = lists::sizes(maps, List::Deny);
    let mut config = maps.read_config()?;
    if config.has_deny() != (v4 + v6 > 0) {
        config.set_has_deny(v4 + v6 > 0);
        maps.write_config(&config)?;
    }
    Ok(())
}

/// Turns dry-run on or off, live.
pub fn set_dry_run(
    layout: &PinLayout,
    on: bool,
    store: Option<&ConfigStore>,
) -> anyhow::Result<()> {
    update_config(
        layout,
        |c| c.set_dry_run(on),
        store.map(|s| (s, Change::DryRun(on))),
    )
}

/// Changes the live config map and, with a store, the config file: all or nothing.
fn update_config(
    layout: &PinLayout,
    change: impl FnOnce(&mut GuardConfig),
    persist: Option<(&ConfigStore, Change)>,
) -> anyhow::Result<()> {
    require_loaded(layout)?;
    let _lock = Lock::acquire(layout)?;
    let mut maps = GuardMaps::open(layout)?;
    let old = maps.read_config()?;
    let mut config = old;
    change(&mut config);
    maps.write_config(&config)?;
    if let Some((store, change)) = persist
        && let Err(e) = store.apply(&[change])
    {
        let _ = maps.write_config(&old);
        return Err(e.context("nothing was changed"));
    }
    Ok(())
}
