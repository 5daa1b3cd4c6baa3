//! Crash safety of list updates: a write-ahead journal.
//!
//! A batch of list changes touches one map entry at a time, so a process killed in the middle
//! (kill -9, OOM, power loss of the management plane) would leave half of it applied. Before
//! touching the maps, a change is recorded, with exactly the prefixes it will change, in
//! `/run/guard/` (a regular filesystem: bpffs holds only BPF objects); the record is removed
//! once the maps and the config file are both updated. Whoever takes the pin root's lock next
//! finds a left-over record and finishes the story: forward, if the config file already holds
//! the change (it is written last), else back. Either way the lists end exactly as they were
//! before the change or after it, never half.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    attach::sync_deny_flag,
    config,
    lists::{self, List},
    maps::GuardMaps,
    persist::write_atomically,
    pins::PinLayout,
};

/// Where journals live.
pub const JOURNAL_DIR: &str = "/run/guard";

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `allow` or `deny`.
    pub list: String,
    /// `add` or `remove`.
    pub op: String,
    /// The prefixes that change (those not yet present for add, present for remove).
    pub nets: Vec<IpNet>,
    /// The config file updated with the change, if any.
    pub config: Option<PathBuf>,
}

impl Record {
    fn list(&self) -> List {
        if self.list == "deny" {
            List::Deny
        } else {
            List::Allow
        }
    }
}

/// The journal of the guard at `layout`.
pub fn path(layout: &PinLayout) -> PathBuf {
    let name: String = layout
        .root()
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Path::new(JOURNAL_DIR).join(format!("{name}.journal"))
}

/// Records a change before it is applied.
pub fn begin(layout: &PinLayout, record: &Record) -> anyhow::Result<()> {
    let p = path(layout);
    std::fs::create_dir_all(JOURNAL_DIR).with_context(|| format!("creating {JOURNAL_DIR}"))?;
    write_atomically(&p, serde_json::to_string(record)?.as_bytes())
        .with_context(|| format!("writing the journal {}", p.display()))
}

/// Forgets a change once it is applied everywhere.
pub fn end(layout: &PinLayout) -> anyhow::Result<()> {
    let p = path(layout);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the journal {}", p.display())),
    }
}

/// Is a change of the guard at `layout` left unfinished?
pub fn pending(layout: &PinLayout) -> bool {
    path(layout).exists()
}

/// Finishes a left-over change (call with the pin root's lock held): forward if the config
/// file records it, else back. Returns what was done, if anything.
pub fn recover(layout: &PinLayout) -> anyhow::Result<Option<String>> {
    let p = path(layout);
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(None);
    };
    let record: Record = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(_) => {
            // Torn before the maps were touched (the journal is written atomically, so this
            // is only a foreign file): nothing to undo.
            end(layout)?;
            return Ok(Some("discarded an unreadable journal".into()));
        }
    };
    if !layout.is_loaded() {
        end(layout)?;
        return Ok(Some(
            "discarded a journal of a guard no longer loaded".into(),
        ));
    }
    let list = record.list();
    let forward = match &record.config {
        Some(cfg) => match config::load(cfg) {
            Ok(d) => {
                let set = match list {
                    List::Allow => &d.allow,
                    List::Deny => &d.deny,
                };
                match record.op.as_str() {
                    "add" => record.nets.iter().all(|n| set.contains(n)),
                    _ => record.nets.iter().all(|n| !set.contains(n)),
                }
            }
            Err(_) => false,
        },
        None => false,
    };
    let mut maps = GuardMaps::open(layout)?;
    let live: std::collections::BTreeSet<IpNet> =
        lists::entries(&maps, list)?.into_iter().collect();
    let (add, remove): (Vec<IpNet>, Vec<IpNet>) = match (record.op.as_str(), forward) {
        ("add", true) | ("remove", false) => (
            record
                .nets
                .iter()
                .filter(|n| !live.contains(n))
                .copied()
                .collect(),
            Vec::new(),
        ),
        _ => (
            Vec::new(),
            record
                .nets
                .iter()
                .filter(|n| live.contains(n))
                .copied()
                .collect(),
        ),
    };
    lists::add(&mut maps, list, &add)?;
    lists::remove_all(&mut maps, list, &remove)?;
    sync_deny_flag(&mut maps)?;
    end(layout)?;
    let what = format!(
        "finished an interrupted {} of {} {} prefixes by rolling it {}",
        record.op,
        record.nets.len(),
        list.name(),
        if forward { "forward" } else { "back" }
    );
    log::warn!("{what}");
    Ok(Some(what))
}
