//! Small helpers shared by all subcommands: running commands, locating the
//! workspace and Cargo's directories, privilege checks.

use std::{
    borrow::Cow,
    env,
    ffi::{OsStr, OsString},
    fmt, fs, io,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::OnceLock,
};

use anyhow::{Context as _, Result, bail};

/// A command that ran but exited unsuccessfully.
///
/// `main` looks for this error in the chain to exit with the child's own code
/// (e.g. 101 from a failing `cargo test`).
#[derive(Debug)]
pub struct CommandFailed {
    /// The command line, as printed before running it.
    pub cmdline: String,
    /// How the command ended.
    pub status: ExitStatus,
}

impl CommandFailed {
    /// The exit code xtask should end with: the child's code, or 128+signal.
    pub fn exit_code(&self) -> u8 {
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => u8::try_from(code).ok().filter(|c| *c != 0).unwrap_or(1),
            (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
            (None, None) => 1,
        }
    }
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed ({})", self.cmdline, self.status)
    }
}

impl std::error::Error for CommandFailed {}

/// The workspace root: the parent of xtask's manifest directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
}

/// Cargo's target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// `$CARGO_HOME`, defaulting to `~/.cargo`.
pub fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// `$PATH` with `$CARGO_HOME/bin` prepended when it is not already on it, so
/// tools installed by `cargo install` (bpf-linker) are always found.
pub fn search_path() -> &'static OsStr {
    static PATH: OnceLock<OsString> = OnceLock::new();
    PATH.get_or_init(|| {
        let current = env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
        if let Ok(bin) = cargo_home().map(|h| h.join("bin"))
            && !dirs.contains(&bin)
        {
            dirs.insert(0, bin);
        }
        env::join_paths(dirs).unwrap_or(current)
    })
}

/// Finds an executable called `name` in [`search_path`].
pub fn find_program(name: &str) -> Option<PathBuf> {
    env::split_paths(search_path())
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
}

/// A [`Command`] for `program` that searches [`search_path`].
pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", search_path());
    c
}

/// A [`Command`] for the cargo that runs xtask (`$CARGO`), in the workspace
/// root.
pub fn cargo() -> Command {
    let mut c = cmd(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Quotes `s` for display in a POSIX shell, only when needed.
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

/// Renders a command line as a shell would read it, with the environment
/// variables set on it (except `PATH`, which [`cmd`] sets on every command).
pub fn display(c: &Command) -> String {
    let envs = c
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| Some((k, v?)))
        .map(|(k, v)| {
            format!(
                "{}={}",
                k.to_string_lossy(),
                shell_quote(&v.to_string_lossy())
            )
        });
    let program = Path::new(c.get_program())
        .file_name()
        .unwrap_or(c.get_program())
        .to_string_lossy()
        .into_owned();
    let args = c
        .get_args()
        .map(|a| shell_quote(&a.to_string_lossy()).into_owned());
    envs.chain(std::iter::once(program))
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints `+ <command line>`, runs it with inherited stdio, and fails with a
/// [`CommandFailed`] when it exits unsuccessfully.
pub fn run(c: &mut Command) -> Result<()> {
    let cmdline = display(c);
    println!("+ {cmdline}");
    let status = c
        .status()
        .with_context(|| format!("failed to start `{cmdline}`"))?;
    if !status.success() {
        return Err(CommandFailed { cmdline, status }.into());
    }
    Ok(())
}

/// Runs a command quietly, ignoring whether it could start or succeeded.
/// For best-effort cleanup only.
pub fn run_ignoring_errors(c: &mut Command) {
    println!("+ {} (errors ignored)", display(c));
    let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// The result of a command run by [`probe`].
pub struct Probe {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs a query command silently, capturing its output. `Ok(None)` when the
/// program does not exist; exit status is reported, not turned into an error.
pub fn probe(c: &mut Command) -> Result<Option<Probe>> {
    match c.stdin(Stdio::null()).output() {
        Ok(out) => Ok(Some(Probe {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to start `{}`", display(c))),
    }
}

/// Runs a query command silently and returns its stdout, failing with its
/// stderr when it cannot run or exits unsuccessfully.
pub fn capture(c: &mut Command) -> Result<String> {
    let cmdline = display(c);
    match probe(c)? {
        Some(p) if p.success => Ok(p.stdout),
        Some(p) => bail!("`{cmdline}` failed: {}", p.stderr.trim()),
        None => bail!("`{cmdline}` failed: program not found"),
    }
}

/// The effective uid from the text of `/proc/self/status`.
pub fn parse_euid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

/// Whether xtask runs as root (effective uid 0).
pub fn is_root() -> Result<bool> {
    if let Some(euid) = fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(parse_euid)
    {
        return Ok(euid == 0);
    }
    let uid = capture(cmd("id").arg("-u"))?;
    Ok(uid.trim() == "0")
}

/// Whether we run under CI (`CI=true` or `CI=1`), where privileged tests are
/// mandatory.
pub fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("cargo"), "cargo");
        assert_eq!(shell_quote("--features=llvm-22"), "--features=llvm-22");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn display_shows_env_but_not_path() {
        let mut c = cmd("/usr/bin/cargo");
        c.env("GUARD_BIN", "/x/guard").args(["test", "--", "a b"]);
        assert_eq!(display(&c), "GUARD_BIN=/x/guard cargo test -- 'a b'");
    }

    #[test]
    fn euid_from_proc_status() {
        let status = "Name:\txtask\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Name:\tx\n"), None);
    }
}
