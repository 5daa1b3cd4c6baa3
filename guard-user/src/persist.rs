//! Keeping the config file in step with live changes made from the command line.
//!
//! Every edit is made under the pin root's lock, on a format-preserving document (comments
//! stay), validated as a whole config, then written atomically: a temporary file in the same
//! directory, fsync, rename, fsync of the directory. A reboot (or `guard run`) therefore
//! restores exactly the live state, and concurrent invocations lose nothing.

use std::{
    collections::BTreeSet,
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use ipnet::IpNet;
use toml_edit::{Array, DocumentMut, Item, Value, value};

use crate::{
    config::{self, Desired},
    lists::{List, parse_cidr},
    pins::PinLayout,
    policy::{PolicyKind, RateArgs},
};

/// The config file the command line keeps in step.
#[derive(Clone, Debug)]
pub struct ConfigStore {
    path: PathBuf,
}

fn key(list: List) -> &'static str {
    match list {
        List::Allow => "allow",
        List::Deny => "deny",
    }
}

impl ConfigStore {
    /// The store at `path`, if that file exists and describes the guard pinned at `layout`
    /// (its `pin_path`, default /sys/fs/bpf/guard, is the layout's root). A config that does
    /// not validate is an error: changing the guard would leave it behind.
    pub fn for_layout(path: &Path, layout: &PinLayout) -> anyhow::Result<Option<Self>> {
        if !path.exists() {
            return Ok(None);
        }
        let desired = config::load(path).context("the config file is invalid; fix it first")?;
        if desired.pin_path != layout.root() {
            log::debug!(
                "{} describes the guard at {}, not {}: not updating it",
                path.display(),
                desired.pin_path.display(),
                layout.root().display()
            );
            return Ok(None);
        }
        Ok(Some(Self {
            path: path.to_path_buf(),
        }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The desired state the file describes now.
    pub fn desired(&self) -> anyhow::Result<Desired> {
        config::load(&self.path)
    }

    /// Applies `change` to the document, validates the result and writes it atomically.
    pub fn edit(
        &self,
        change: impl FnOnce(&mut DocumentMut) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut doc: DocumentMut = text
            .parse()
            .with_context(|| format!("parsing {}", self.path.display()))?;
        change(&mut doc)?;
        let new = doc.to_string();
        config::parse(&self.path, &new).context("the updated config would not validate")?;
        write_atomically(&self.path, new.as_bytes())
    }

    /// Fails if any of `nets` cannot be removed from the file's `list`: it comes from an
    /// include file rather than the inline array.
    pub fn check_removable(&self, list: List, nets: &[IpNet]) -> anyhow::Result<()> {
        let desired = self.desired()?;
        let inline = self.inline(list)?;
        let all = match list {
            List::Allow => &desired.allow,
            List::Deny => &desired.deny,
        };
        for net in nets {
            if all.contains(net) && !inline.contains(net) {
                bail!(
                    "{net} comes from an include file of {}: remove it there",
                    self.path.display()
                );
            }
        }
        Ok(())
    }

    fn inline(&self, list: List) -> anyhow::Result<BTreeSet<IpNet>> {
        let text = std::fs::read_to_string(&self.path)?;
        let doc: DocumentMut = text.parse()?;
        Ok(strings(&doc, key(list))
            .iter()
            .filter_map(|s| parse_cidr(s).ok())
            .collect())
    }

    /// The file's text, to put back with [`ConfigStore::restore`] if a later step fails.
    pub fn snapshot(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))
    }

    /// Puts back a [`ConfigStore::snapshot`].
    pub fn restore(&self, text: &str) -> anyhow::Result<()> {
        write_atomically(&self.path, text.as_bytes())
    }

    /// Applies `changes` in one atomic write.
    pub fn apply(&self, changes: &[Change]) -> anyhow::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let desired = self.desired()?;
        self.edit(|doc| {
            for change in changes {
                apply_one(doc, &desired, change);
            }
            Ok(())
        })
    }
}

/// One change to the config file.
#[derive(Clone, Debug)]
pub enum Change {
    /// Add prefixes to a list (skipping those listed inline or included already).
    AddPrefixes(List, Vec<IpNet>),
    /// Remove prefixes from a list's inline array, however they were written.
    RemovePrefixes(List, Vec<IpNet>),
    /// Add interfaces.
    AddInterfaces(Vec<String>),
    /// Remove interfaces.
    RemoveInterfaces(Vec<String>),
    /// Replace the protected ports.
    Ports(Vec<u16>),
    /// Set dry-run.
    DryRun(bool),
    /// Set the policy; given rates replace the file's, unset ones stay.
    Policy(PolicyKind, RateArgs),
}

fn apply_one(doc: &mut DocumentMut, desired: &Desired, change: &Change) {
    match change {
        Change::AddPrefixes(list, nets) => {
            let present = match list {
                List::Allow => &desired.allow,
                List::Deny => &desired.deny,
            };
            let new: Vec<&IpNet> = nets.iter().filter(|n| !present.contains(n)).collect();
            if !new.is_empty() {
                let arr = array(doc, key(*list));
                for net in new {
                    arr.push(net.to_string());
                }
            }
        }
        Change::RemovePrefixes(list, nets) => {
            array(doc, key(*list)).retain(|v| {
                v.as_str()
                    .and_then(|s| parse_cidr(s).ok())
                    .is_none_or(|n| !nets.contains(&n))
            });
        }
        Change::AddInterfaces(names) => {
            let have = strings(doc, "interfaces");
            let arr = array(doc, "interfaces");
            for n in names {
                if !have.contains(n) {
                    arr.push(n.as_str());
                }
            }
        }
        Change::RemoveInterfaces(names) => {
            array(doc, "interfaces")
                .retain(|v| v.as_str().is_none_or(|s| !names.iter().any(|n| n == s)));
        }
        Change::Ports(ports) => {
            let mut arr = Array::new();
            for p in ports {
                arr.push(i64::from(*p));
            }
            doc["ports"] = value(arr);
        }
        Change::DryRun(on) => doc["dry_run"] = value(*on),
        Change::Policy(PolicyKind::Drop, _) => {
            doc["policy"] = value("drop");
            doc.remove("rate_limit");
        }
        Change::Policy(PolicyKind::RateLimit, rates) => {
            doc["policy"] = value("rate-limit");
            if !doc.contains_table("rate_limit") {
                doc["rate_limit"] = toml_edit::table();
            }
            let t = &mut doc["rate_limit"];
            if let Some(r) = rates.per_source {
                t["per_source"] = value(r.to_string());
            }
            if let Some(r) = rates.per_prefix {
                t["per_prefix"] = value(r.to_string());
            }
            if let Some(r) = rates.global {
                t["global"] = value(r.to_string());
            }
            if let Some(l) = rates.prefix_v4 {
                t["prefix_v4"] = value(i64::from(l));
            }
            if let Some(l) = rates.prefix_v6 {
                t["prefix_v6"] = value(i64::from(l));
            }
        }
    }
}

/// The strings of array `key`.
fn strings(doc: &DocumentMut, key: &str) -> Vec<String> {
    doc.get(key)
        .and_then(Item::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Array `key`, created empty if missing.
fn array<'d>(doc: &'d mut DocumentMut, key: &str) -> &'d mut Array {
    if doc.get(key).and_then(Item::as_array).is_none() {
        doc[key] = Item::Value(Value::Array(Array::new()));
    }
    doc[key].as_array_mut().expect("just made an array")
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, directory fsync.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guard.toml".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(text: &str) -> (tempdir::Dir, ConfigStore) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("guard.toml");
        std::fs::write(&path, text).unwrap();
        (dir, ConfigStore { path })
    }

    mod tempdir {
        /// A directory removed on drop.
        pub struct Dir(pub std::path::PathBuf);

        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "guard-persist-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn edits_keep_comments_and_validate() {
        let (_d, s) =
            store("# the guard\ninterfaces = [\"eth0\"] # main NIC\nallow = [\"10.0.0.0/8\"]\n");
        let n: IpNet = "192.0.2.0/24".parse().unwrap();
        s.apply(&[Change::AddPrefixes(List::Allow, vec![n])])
            .unwrap();
        s.apply(&[Change::AddPrefixes(List::Deny, vec![n])])
            .unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert!(
            text.contains("# the guard") && text.contains("# main NIC"),
            "{text}"
        );
        let d = s.desired().unwrap();
        assert!(d.allow.contains(&n) && d.deny.contains(&n));
        s.apply(&[Change::RemovePrefixes(
            List::Allow,
            vec!["10.0.0.0/8".parse().unwrap()],
        )])
        .unwrap();
        assert_eq!(s.desired().unwrap().allow.len(), 1);
        // An edit that would make the file invalid is refused and writes nothing.
        let before = std::fs::read_to_string(s.path()).unwrap();
        assert!(s.apply(&[Change::Ports(vec![0])]).is_err());
        assert_eq!(std::fs::read_to_string(s.path()).unwrap(), before);
    }

    #[test]
    fn policy_and_ports_round_trip() {
        let (_d, s) = store("interfaces = [\"eth0\"]\n");
        let rates = RateArgs {
            global: Some("500/50".parse().unwrap()),
            ..Default::default()
        };
        s.apply(&[
            Change::Ports(vec![11211, 11212]),
            Change::DryRun(true),
            Change::Policy(PolicyKind::RateLimit, rates),
        ])
        .unwrap();
        let d = s.desired().unwrap();
        assert_eq!(d.ports, vec![11211, 11212]);
        assert!(d.dry_run);
        assert_eq!(d.policy, PolicyKind::RateLimit);
        assert_eq!(d.rates.global.unwrap().to_string(), "500/50");
        s.apply(&[Change::Policy(PolicyKind::Drop, RateArgs::default())])
            .unwrap();
        assert_eq!(s.desired().unwrap().policy, PolicyKind::Drop);
    }

    #[test]
    fn include_entries_are_not_removable_inline() {
        let (d, s) = store("interfaces = [\"eth0\"]\nallow_include = [\"allow.txt\"]\n");
        std::fs::write(d.0.join("allow.txt"), "# ours\n10.0.0.0/8\n").unwrap();
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        let e = s
            .check_removable(List::Allow, &[n])
            .unwrap_err()
            .to_string();
        assert!(e.contains("include file"), "{e}");
        // Adding what an include already holds does not duplicate it inline.
        s.apply(&[Change::AddPrefixes(List::Allow, vec![n])])
            .unwrap();
        assert!(
            !std::fs::read_to_string(s.path())
                .unwrap()
                .contains("allow = ")
        );
    }
}
