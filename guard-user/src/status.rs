//! `guard status`: what is loaded, where it is attached, and how it is configured.

use serde::Serialize;

use crate::{
    attach::{AttachedMode, attachment_name, linked_interfaces, require_loaded},
    lists::{self, List},
    maps::GuardMaps,
    pins::PinLayout,
    policy::PolicyView,
    sys,
};

/// One interface with a guard link.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceStatus {
    /// Interface name (as pinned).
    pub name: String,
    /// Its index now, if it exists.
    pub ifindex: Option<u32>,
    /// XDP mode it was attached in.
    pub mode: Option<AttachedMode>,
    /// Kernel link id.
    pub link_id: Option<u32>,
    /// `attached`, or `stale` when the interface is gone or the link no longer matches it.
    pub state: &'static str,
    /// The interface's name now, when it was renamed after the link was pinned; `guard
    /// detach` takes either name.
    pub renamed_to: Option<String>,
}

/// The whole status.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Pin root.
    pub pin_path: String,
    /// Pinned-state ABI version.
    pub abi: u32,
    /// Protected UDP ports.
    pub ports: Vec<u16>,
    /// Would-be drops pass (and are counted as would_drop).
    pub dry_run: bool,
    /// IPv4 prefixes allowlisted.
    pub allow_v4: usize,
    /// IPv6 prefixes allowlisted.
    pub allow_v6: usize,
    /// IPv4 prefixes denylisted.
    pub deny_v4: usize,
    /// IPv6 prefixes denylisted.
    pub deny_v6: usize,
    /// Policy for non-allowlisted sources.
    pub policy: PolicyView,
    /// Top-talker sampling: one drop in N is recorded (0: off).
    pub top_sample: u32,
    /// Interfaces with a guard link.
    pub interfaces: Vec<InterfaceStatus>,
    /// Number of stale links (see `interfaces`); `guard detach NAME` removes one.
    pub stale_links: usize,
}

impl InterfaceStatus {
    /// Is the link live on its interface?
    pub fn attached(&self) -> bool {
        self.state == "attached"
    }
}

/// The interfaces with a guard link under `layout`: their mode, link and state.
pub fn interfaces(layout: &PinLayout, maps: &GuardMaps) -> anyhow::Result<Vec<InterfaceStatus>> {
    let records: Vec<_> = maps.attachments.iter().filter_map(Result::ok).collect();
    let mut interfaces = Vec::new();
    for name in linked_interfaces(layout)? {
        let details = sys::link_details(&layout.link(&name)).ok();
        // The link's own interface, by index: a renamed interface is still guarded.
        let now = details
            .filter(|d| d.ifindex != 0)
            .and_then(|d| sys::if_name(d.ifindex));
        let live = now.is_some();
        let renamed_to = now.filter(|n| *n != name);
        let ifindex = match &renamed_to {
            Some(_) => details.map(|d| d.ifindex),
            None => sys::if_index(&name),
        };
        // A live link's record is its interface's; a stale one's goes by the pin's name.
        let live_index = details.filter(|_| live).map(|d| d.ifindex);
        let mode = records
            .iter()
            .find(|(k, a)| match live_index {
                Some(index) => *k == index,
                None => attachment_name(a) == name,
            })
            .and_then(|(_, a)| AttachedMode::from_code(a.mode));
        interfaces.push(InterfaceStatus {
            name,
            ifindex,
            mode,
            link_id: details.map(|d| d.id),
            state: if live { "attached" } else { "stale" },
            renamed_to,
        });
    }
    Ok(interfaces)
}

impl Status {
    /// Reads the status of the guard under `layout`.
    pub fn read(layout: &PinLayout) -> anyhow::Result<Self> {
        require_loaded(layout)?;
        let maps = GuardMaps::open(layout)?;
        let config = maps.read_config()?;
        let (allow_v4, allow_v6) = lists::sizes(&maps, List::Allow);
        let (deny_v4, deny_v6) = lists::sizes(&maps, List::Deny);
        let interfaces = interfaces(layout, &maps)?;
        let stale_links = interfaces.iter().filter(|i| i.state == "stale").count();
        Ok(Self {
            pin_path: layout.root().display().to_string(),
            abi: guard_common::maps::ABI_VERSION,
            ports: config.protected_ports().collect(),
            dry_run: config.dry_run(),
            allow_v4,
            allow_v6,
            deny_v4,
            deny_v6,
            policy: PolicyView::of(&config),
            top_sample: config.top_sample,
            interfaces,
            stale_links,
        })
    }

    /// Human-readable form.
    pub fn render(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let mut s = format!(
            "pin path:   {} (abi-{})\nports:      {} (udp)\npolicy:     {}\ndry-run:    {}\nallowlist:  {} IPv4, {} IPv6 prefixes\ndenylist:   {} IPv4, {} IPv6 prefixes\n",
            self.pin_path,
            self.abi,
            ports.join(", "),
            self.policy.render(),
            if self.dry_run { "on" } else { "off" },
            self.allow_v4,
            self.allow_v6,
            self.deny_v4,
            self.deny_v6
        );
        if self.interfaces.is_empty() {
            s.push_str("interfaces: none (loaded, not attached)\n");
        } else {
            s.push_str("interfaces:\n");
            for i in &self.interfaces {
                s.push_str(&format!(
                    "  {:<16} {:<7} {}",
                    i.name,
                    i.mode.map(AttachedMode::name).unwrap_or("?"),
                    i.state
                ));
                if let Some(now) = &i.renamed_to {
                    s.push_str(&format!(" (now named {now})"));
                }
                s.push('\n');
            }
        }
        // A stale pin whose name a guarded interface has now: `guard detach NAME` means that
        // interface, so the way to remove the pin alone is `guard attach NAME`.
        let (shadowed, plain): (Vec<&InterfaceStatus>, Vec<&InterfaceStatus>) = self
            .interfaces
            .iter()
            .filter(|i| !i.attached())
            .partition(|i| {
                self.interfaces
                    .iter()
                    .any(|o| o.renamed_to.as_deref() == Some(i.name.as_str()))
            });
        if !plain.is_empty() {
            s.push_str(&format!(
                "warning: {} stale link(s); remove with `guard detach NAME`\n",
                plain.len()
            ));
        }
        for i in shadowed {
            s.push_str(&format!(
                "warning: stale link {0}; {0} is guarded under another pin now: `guard attach \
                 {0}` removes the stale link only (`guard detach {0}` would detach {0})\n",
                i.name
            ));
        }
        s
    }
}
