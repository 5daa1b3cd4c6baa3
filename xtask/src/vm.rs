//! `cargo xtask vm-test`: the BPF_PROG_TEST_RUN suite on other kernels.
//!
//! Debian 12's kernel (the current `linux-image-6.1.0-N-amd64`, as `linux-image-amd64` names
//! it) boots under qemu-system-x86_64 (software emulation) with a minimal initramfs: busybox,
//! the test binaries and the shared libraries they need. The same binaries run on the host
//! kernel too, and a table of results and verifier instruction counts is printed and written
//! to `target/vm/report.md`.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{setup, util};

/// The test files run in each kernel: those that load the program but need no network.
const TESTS: &[&str] = &[
    "prog_test_run",
    "rate_limit",
    "denylist",
    "overlaps",
    "allowlist_maps",
    "verifier",
];

/// How long one VM may take.
const VM_TIMEOUT: Duration = Duration::from_secs(900);

/// Options of `cargo xtask vm-test`.
#[derive(Debug, Args)]
pub struct Options {
    /// Debian kernel packages to boot (default: the one linux-image-amd64 depends on).
    #[arg(long = "kernel-package", value_name = "PACKAGE")]
    pub kernels: Vec<String>,
}

/// One kernel's outcome.
#[derive(Debug, Default)]
struct Outcome {
    kernel: String,
    passed: u64,
    failed: u64,
    files_failed: Vec<String>,
    verifier_insns: Option<u64>,
}

/// Runs the suite on the host kernel and in a VM per kernel package.
pub fn run(opts: &Options) -> Result<()> {
    if !util::is_root()? {
        bail!("vm-test needs root (BPF on the host, apt-get for the kernel and qemu)");
    }
    setup::run_all()?;
    setup::ensure_packages(&["qemu-system-x86", "busybox-static", "binutils"])?;
    let tests = build_tests()?;
    let work = util::target_dir().join("vm");
    fs::create_dir_all(&work)?;

    let mut outcomes = vec![run_on_host(&tests)?];
    let kernels = if opts.kernels.is_empty() {
        vec![default_kernel_package()?]
    } else {
        opts.kernels.clone()
    };
    for package in &kernels {
        let vmlinuz = fetch_kernel(&work, package)?;
        let initrd = work.join(format!("{package}.cpio"));
        build_initramfs(&tests, &initrd, &work.join("initramfs"))?;
        outcomes.push(boot(
            &vmlinuz,
            &initrd,
            &work.join(format!("{package}.log")),
        )?);
    }

    let report = report(&outcomes);
    print!("{report}");
    fs::write(work.join("report.md"), &report)?;
    let passed: u64 = outcomes.iter().map(|o| o.passed).sum();
    let failed: u64 = outcomes.iter().map(|o| o.failed).sum();
    println!("vm-test: {passed} passed, {failed} failed");
    if failed > 0 || outcomes.iter().any(|o| !o.files_failed.is_empty()) {
        bail!("tests failed on some kernel");
    }
    Ok(())
}

/// Builds the test binaries; returns (name, path) of each.
fn build_tests() -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = util::cargo();
    cmd.args([
        "test",
        "-p",
        "guard-tests",
        "--no-run",
        "--message-format=json",
    ]);
    for t in TESTS {
        cmd.args(["--test", t]);
    }
    println!("+ {}", util::display(&cmd));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str())
        else {
            continue;
        };
        if TESTS.contains(&name) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if found.len() != TESTS.len() {
        bail!("expected test binaries {TESTS:?}, found {found:?}");
    }
    Ok(found)
}

/// Parses one test binary's output into the outcome.
fn absorb(outcome: &mut Outcome, line: &str) {
    if let Some(rest) = line.trim().strip_prefix("test result: ") {
        for part in rest.split([';', '.']) {
            let mut w = part.split_whitespace();
            if let (Some(n), Some(what)) = (w.next(), w.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match what {
                    "passed" => outcome.passed += n,
                    "failed" => outcome.failed += n,
                    _ => {}
                }
            }
        }
    }
    if let Some(rest) = line.split("processed ").nth(1)
        && line.contains("verifier:")
        && let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok())
    {
        outcome.verifier_insns = Some(n);
    }
}

fn run_on_host(tests: &[(String, PathBuf)]) -> Result<Outcome> {
    let mut o = Outcome {
        kernel: format!(
            "{} (host)",
            fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
        ),
        ..Default::default()
    };
    for (name, exe) in tests {
        println!("+ {} --test-threads=1 (host)", exe.display());
        let out = Command::new(exe)
            .args(["--test-threads=1", "--nocapture"])
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            absorb(&mut o, line);
        }
        if !out.status.success() {
            eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
            o.files_failed.push(name.clone());
        }
    }
    Ok(o)
}

/// The kernel package `linux-image-amd64` depends on (Debian's current one).
fn default_kernel_package() -> Result<String> {
    let deps = util::capture(util::cmd("apt-cache").args(["depends", "linux-image-amd64"]))?;
    if let Some(p) = parse_kernel_depends(&deps) {
        return Ok(p);
    }
    util::run(util::cmd("apt-get").arg("update"))?;
    let deps = util::capture(util::cmd("apt-cache").args(["depends", "linux-image-amd64"]))?;
    parse_kernel_depends(&deps).context("apt-cache depends linux-image-amd64 names no kernel")
}

fn parse_kernel_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_string)
}

/// Downloads and unpacks `package` under `work` (cached); returns its vmlinuz.
fn fetch_kernel(work: &Path, package: &str) -> Result<PathBuf> {
    let dir = work.join(package);
    let version = package.trim_start_matches("linux-image-");
    let vmlinuz = dir.join(format!("boot/vmlinuz-{version}"));
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    let debs = work.join("debs");
    fs::create_dir_all(&debs)?;
    util::run(
        util::cmd("apt-get")
            .current_dir(&debs)
            .args(["download", package]),
    )?;
    let deb = fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package} .deb"))?;
    util::run(util::cmd("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    if !vmlinuz.exists() {
        bail!("{} has no {}", deb.display(), vmlinuz.display());
    }
    Ok(vmlinuz)
}

/// The init script: mount, run every test binary, report, power off.
const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "GUARD-VM: kernel $(cat /proc/sys/kernel/osrelease)"
for t in /tests/*; do
  echo "GUARD-VM: run $t"
  if $t --test-threads=1 --nocapture; then echo "GUARD-VM: ok $t"; else echo "GUARD-VM: FAIL $t"; fi
done
echo "GUARD-VM: done"
poweroff -f
"#;

/// Lays out the initramfs in `root` and packs it as a newc cpio at `out`.
fn build_initramfs(tests: &[(String, PathBuf)], out: &Path, root: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(root);
    for d in ["bin", "proc", "sys", "dev", "tmp", "tests"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static")?;
    for applet in ["sh", "mount", "poweroff", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let init = root.join("init");
    fs::write(&init, INIT)?;
    set_mode(&init, 0o755)?;
    let mut libs = std::collections::BTreeSet::new();
    for (name, exe) in tests {
        let dest = root.join("tests").join(name);
        util::run(
            util::cmd("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&dest)
                .arg(exe),
        )?;
        let ldd = util::capture(util::cmd("ldd").arg(exe))?;
        libs.extend(parse_ldd(&ldd));
    }
    for lib in libs {
        let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(dest.parent().expect("a library has a directory"))?;
        fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    write_cpio(root, out)
}

/// The absolute library paths in `ldd` output.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.split_whitespace()
        .filter(|w| w.starts_with('/') && w.contains(".so"))
        .map(PathBuf::from)
        .collect()
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes the tree under `root` as a "newc" cpio archive (what the kernel unpacks).
fn write_cpio(root: &Path, out: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let mut entries = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            if p.symlink_metadata()?.is_dir() {
                stack.push(p.clone());
            }
            entries.push(p);
        }
    }
    entries.sort();
    let mut w = std::io::BufWriter::new(fs::File::create(out)?);
    let mut ino = 1u32;
    let mut header = |w: &mut dyn std::io::Write,
                      name: &str,
                      mode: u32,
                      size: u32,
                      nlink: u32|
     -> Result<()> {
        let name_len = name.len() + 1;
        write!(
            w,
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{name_len:08x}{:08x}",
            0, 0, 0, 0, 0, 0, 0, 0
        )?;
        w.write_all(name.as_bytes())?;
        w.write_all(&[0])?;
        let pad = (4 - (110 + name_len) % 4) % 4;
        w.write_all(&[0u8; 3][..pad])?;
        ino += 1;
        Ok(())
    };
    for p in entries {
        let name = p.strip_prefix(root)?.to_string_lossy().into_owned();
        let meta = p.symlink_metadata()?;
        let data = if meta.file_type().is_symlink() {
            fs::read_link(&p)?
                .to_string_lossy()
                .into_owned()
                .into_bytes()
        } else if meta.is_file() {
            fs::read(&p)?
        } else {
            Vec::new()
        };
        let nlink = if meta.is_dir() { 2 } else { 1 };
        header(&mut w, &name, meta.mode(), data.len() as u32, nlink)?;
        w.write_all(&data)?;
        w.write_all(&[0u8; 3][..(4 - data.len() % 4) % 4])?;
    }
    header(&mut w, "TRAILER!!!", 0, 0, 1)?;
    w.flush()?;
    Ok(())
}

/// Boots `vmlinuz` with `initrd` under qemu (software emulation), streaming the console into
/// `log`, and collects the results.
fn boot(vmlinuz: &Path, initrd: &Path, log: &Path) -> Result<Outcome> {
    let mut cmd = util::cmd("qemu-system-x86_64");
    cmd.args([
        "-m",
        "1024",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-accel",
        "tcg",
    ])
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=ttyS0 panic=-1 quiet"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    println!("+ {}", util::display(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().expect("piped");
    let mut file = fs::File::create(log)?;
    let mut o = Outcome::default();
    let mut done = false;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Ok(line) = rx.recv_timeout(VM_TIMEOUT.saturating_sub(started.elapsed())) {
        let Ok(line) = line else { break };
        writeln!(file, "{line}")?;
        // The console may prefix a line with terminal escapes: start at our marker.
        let clean = line.find("GUARD-VM: ").map_or(line.trim(), |i| &line[i..]);
        if let Some(k) = clean.strip_prefix("GUARD-VM: kernel ") {
            o.kernel = format!("{} (qemu)", k.trim());
            println!("vm: booted {}", k.trim());
        } else if let Some(t) = clean.strip_prefix("GUARD-VM: FAIL ") {
            o.files_failed.push(t.trim().to_string());
            println!("vm: {clean}");
        } else if clean.starts_with("GUARD-VM: done") {
            done = true;
        } else if clean.starts_with("GUARD-VM: ok")
            || clean.contains("test result:")
            || clean.contains("verifier:")
            || clean.contains("panicked")
        {
            println!("vm: {clean}");
        }
        absorb(&mut o, clean);
    }
    let _ = child.kill();
    let _ = child.wait();
    if !done {
        bail!(
            "the VM did not finish within {:?} (console log: {})",
            VM_TIMEOUT,
            log.display()
        );
    }
    Ok(o)
}

fn report(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| kernel | tests passed | failed | verifier: processed instructions |\n| --- | --- | --- | --- |\n",
    );
    for o in outcomes {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            o.kernel,
            o.passed,
            o.failed + o.files_failed.len() as u64 * u64::from(o.failed == 0),
            o.verifier_insns.map_or("n/a".into(), |n| n.to_string())
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_kernel_package() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_kernel_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_kernel_depends("nothing"), None);
    }

    #[test]
    fn reads_results_and_verifier_counts() {
        let mut o = Outcome::default();
        absorb(
            &mut o,
            "test result: ok. 6 passed; 0 failed; 0 ignored; 0 measured",
        );
        absorb(
            &mut o,
            "verifier: kernel 6.1.0-56-amd64 processed 82591 instructions (budget 150000)",
        );
        assert_eq!((o.passed, o.failed, o.verifier_insns), (6, 0, Some(82591)));
    }

    #[test]
    fn parses_ldd() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn writes_a_cpio_the_kernel_format_accepts() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        let root = dir.join("root");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("init"), "hello").unwrap();
        std::os::unix::fs::symlink("init", root.join("bin/sh")).unwrap();
        let out = dir.join("a.cpio");
        write_cpio(&root, &out).unwrap();
        let bytes = fs::read(&out).unwrap();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/sh") && text.contains("hello") && text.contains("TRAILER!!!"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
