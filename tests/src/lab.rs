//! A small network lab for guard's end-to-end tests and the demo: network namespaces joined by
//! veth pairs, a memcached server inside one of them, and the `guard` CLI run there with a pin
//! path of its own.
//!
//! Everything here is torn down by `Drop`, also when a test panics: namespaces are deleted
//! (which removes their interfaces), memcached is killed and reaped, and guard is unloaded.
//! Names carry the process id and a per-process counter, so parallel test threads and parallel
//! test processes do not collide.
//!
//! Traffic only ever flows between namespaces created here; nothing touches the host's
//! interfaces.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs::File,
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::privilege;

/// Where `ip netns add` creates its namespace files.
pub const NETNS_DIR: &str = "/var/run/netns";

/// memcached's port, TCP and UDP.
pub const MEMCACHED_PORT: u16 = 11211;

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Numbers namespaces and pin paths made by this process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A suffix unique to this process and call: `<pid>-<n>`.
pub fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `cmd` to completion and fails, with its stderr, unless it exits with status 0.
/// Returns its stdout.
pub fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace made with `ip netns add`, deleted again on drop (even on panic).
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates the namespace `<prefix>-<pid>-<n>` with its loopback up and IPv6 duplicate
    /// address detection off (addresses are usable at once).
    pub fn new(prefix: &str) -> anyhow::Result<Netns> {
        let name = format!("{prefix}-{}", unique_suffix());
        let path = Path::new(NETNS_DIR).join(&name);
        if path.exists() {
            // Left over by a killed process that had our pid; it is ours to reuse.
            let _ = Command::new("ip")
                .args(["netns", "delete", &name])
                .stderr(Stdio::null())
                .status();
        }
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name, path };
        ns.ip(&["link", "set", "lo", "up"])?;
        for key in ["all", "default"] {
            ns.sysctl(&format!("net/ipv6/conf/{key}/accept_dad"), "0")?;
        }
        Ok(ns)
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, `/var/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs `program` inside this namespace:
    /// `nsenter --net=/var/run/netns/<name> -- program`. Unlike `ip netns exec`, nsenter keeps
    /// the mount namespace, so /sys/fs/bpf stays visible.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `ip -n <name> ARGS...` and fails unless it succeeds.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(())
    }

    /// Writes a sysctl of this namespace, `key` given as a path under /proc/sys such as
    /// `net/ipv4/ip_forward`.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let file = Path::new("/proc/sys").join(key);
        self.run(|| std::fs::write(&file, value))?
            .with_context(|| format!("setting {} in {}", file.display(), self.name))
    }

    /// Adds an address (`10.77.1.1/24`, `fd00:77::1/64`) to `dev`; IPv6 ones with `nodad`.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> anyhow::Result<()> {
        if cidr.contains(':') {
            self.ip(&["addr", "add", cidr, "dev", dev, "nodad"])
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev])
        }
    }

    /// Runs `f` on a fresh thread that has entered this namespace (with `setns`), and returns
    /// its result. Sockets created by `f` stay in this namespace wherever they are used later:
    /// `ns.run(|| UdpSocket::bind("10.77.1.2:0"))??`. A panic in `f` is passed on.
    pub fn run<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let file =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let joined = thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
        });
        match joined {
            Ok(r) => r.with_context(|| format!("entering namespace {}", self.name)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "lab: deleting namespace {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("lab: deleting namespace {} failed: {e}", self.name),
        }
    }
}

/// One end of a veth pair: its namespace, interface name (at most 15 bytes) and addresses
/// (CIDR notation; IPv6 ones are added with `nodad`).
#[derive(Clone, Copy, Debug)]
pub struct VethEnd<'a> {
    /// The namespace the end lives in.
    pub ns: &'a Netns,
    /// Its interface name there.
    pub ifname: &'a str,
    /// Addresses to give it, such as `10.77.1.1/24` or `fd00:77::1/64`.
    pub addrs: &'a [&'a str],
}

/// Creates a veth pair between two namespaces (each end is created directly in its
/// namespace, so names only need to be unique there), adds the addresses and brings both ends
/// up. The pair goes away with either namespace.
pub fn veth(a: VethEnd<'_>, b: VethEnd<'_>) -> anyhow::Result<()> {
    for end in [&a, &b] {
        ensure!(
            !end.ifname.is_empty() && end.ifname.len() <= MAX_IFNAME,
            "interface name {:?} must be 1 to {MAX_IFNAME} bytes",
            end.ifname
        );
    }
    a.ns.ip(&[
        "link",
        "add",
        a.ifname,
        "type",
        "veth",
        "peer",
        "name",
        b.ifname,
        "netns",
        b.ns.name(),
    ])?;
    for end in [&a, &b] {
        for cidr in end.addrs {
            end.ns.add_addr(end.ifname, cidr)?;
        }
        end.ns.ip(&["link", "set", end.ifname, "up"])?;
    }
    Ok(())
}

/// A memcached server running inside a namespace, UDP enabled; killed and reaped on drop.
#[derive(Debug)]
pub struct Memcached {
    child: Child,
    addrs: Vec<IpAddr>,
}

impl Memcached {
    /// Starts `memcached -U 11211 -p 11211 -l ADDR... -u nobody` in `ns` and waits (up to 10 s)
    /// until every address answers on TCP and on UDP. The readiness checks run inside `ns`
    /// over loopback, so they never cross an interface a guard may be attached to.
    pub fn start(ns: &Netns, addrs: &[IpAddr]) -> anyhow::Result<Memcached> {
        ensure!(!addrs.is_empty(), "memcached needs at least one address");
        let mut cmd = ns.command("memcached");
        cmd.args(["-U", "11211", "-p", "11211", "-u", "nobody"]);
        for a in addrs {
            match a {
                IpAddr::V4(v4) => cmd.arg("-l").arg(v4.to_string()),
                IpAddr::V6(v6) => cmd.arg("-l").arg(format!("[{v6}]")),
            };
        }
        // Its own process group: a Ctrl-C at the terminal is ours to handle, and drop stops it.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = cmd
            .spawn()
            .context("starting memcached (is it installed?)")?;
        let mut server = Memcached {
            child,
            addrs: addrs.to_vec(),
        };
        server.wait_ready(ns)?;
        Ok(server)
    }

    /// The addresses it listens on.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, ns: &Netns) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addrs = self.addrs.clone();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("memcached exited at start ({status}): {}", err.trim());
            }
            let ready = ns.run(|| {
                addrs.iter().all(|a| {
                    let server = SocketAddr::new(*a, MEMCACHED_PORT);
                    let tcp = TcpStream::connect_timeout(&server, Duration::from_millis(200));
                    let udp = UdpSocket::bind(SocketAddr::new(*a, 0)).and_then(|s| {
                        udp_request(&s, server, 1, "version\r\n", Duration::from_millis(200))
                    });
                    tcp.is_ok() && udp.is_ok_and(|answer| answer.complete)
                })
            })?;
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("memcached did not answer on {addrs:?} within 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `guard` binary run with a pin path of its own (`/sys/fs/bpf/guard-test-<pid>-<n>`),
/// inside a namespace or on the host; on drop it runs `guard unload` and makes sure nothing is
/// left at the pin path.
#[derive(Debug)]
pub struct Guard {
    ns: Option<PathBuf>,
    pin: PathBuf,
    bin: PathBuf,
}

impl Guard {
    /// A guard that runs inside `ns` (required for attach, which names the namespace's
    /// interfaces), with a fresh pin path. Nothing is loaded until a command loads it.
    pub fn new(ns: &Netns) -> Guard {
        Guard {
            ns: Some(ns.path().to_owned()),
            pin: Self::fresh_pin_path(),
            bin: privilege::guard_bin(),
        }
    }

    /// A guard that runs in this process's namespace, with a fresh pin path; for commands
    /// that touch no interface.
    pub fn on_host() -> Guard {
        Guard {
            ns: None,
            pin: Self::fresh_pin_path(),
            bin: privilege::guard_bin(),
        }
    }

    /// A pin path unique to this process and call: `/sys/fs/bpf/guard-test-<pid>-<n>`.
    pub fn fresh_pin_path() -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/guard-test-{}", unique_suffix()))
    }

    /// Its pin path.
    pub fn pin_path(&self) -> &Path {
        &self.pin
    }

    /// `guard --pin-path PIN ARGS...`, inside the namespace when there is one. RUST_LOG and
    /// GUARD_PIN_PATH of the environment are removed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("--pin-path")
            .arg(&self.pin)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("GUARD_PIN_PATH")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `guard ARGS...` and returns its output, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = self.command(args);
        cmd.output().with_context(|| format!("running {cmd:?}"))
    }

    /// Runs `guard ARGS...`, fails (with its stderr) unless it succeeds, returns its stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "guard {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `guard stats --json`, parsed.
    pub fn stats(&self) -> anyhow::Result<Counters> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["stats", "--json"])?)
            .context("parsing guard stats --json")?;
        let counters = v
            .get("counters")
            .and_then(|c| c.as_object())
            .ok_or_else(|| anyhow!("guard stats --json has no counters object: {v}"))?;
        let mut out = BTreeMap::new();
        for (name, c) in counters {
            let get = |field: &str| {
                c.get(field)
                    .and_then(|n| n.as_u64())
                    .ok_or_else(|| anyhow!("counter {name} has no {field}: {c}"))
            };
            out.insert(
                name.clone(),
                Counter {
                    packets: get("packets")?,
                    bytes: get("bytes")?,
                },
            );
        }
        Ok(Counters(out))
    }

    /// `guard list --json`, as the list of prefixes.
    pub fn allowlist(&self) -> anyhow::Result<Vec<String>> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["list", "--json"])?)
            .context("parsing guard list --json")?;
        v.get("allow")
            .and_then(|a| a.as_array())
            .ok_or_else(|| anyhow!("guard list --json has no allow array: {v}"))?
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("not a string in guard list --json: {p}"))
            })
            .collect()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.pin.exists() {
            return;
        }
        match self.run(&["unload"]) {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "lab: guard unload at {} failed: {}",
                self.pin.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("lab: guard unload at {} failed: {e:#}", self.pin.display()),
        }
        if self.pin.exists() {
            eprintln!(
                "lab: {} still exists after guard unload; removing it",
                self.pin.display()
            );
            if let Err(e) = std::fs::remove_dir_all(&self.pin) {
                eprintln!("lab: removing {} failed: {e}", self.pin.display());
            }
        }
    }
}

/// One verdict counter of `guard stats --json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Frames counted.
    pub packets: u64,
    /// Their total length, Ethernet header included.
    pub bytes: u64,
}

/// Every counter of `guard stats --json`, by verdict name (`dropped`, `allowlisted`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<String, Counter>);

impl Counters {
    /// The counter `name`; zero when guard does not report it.
    pub fn get(&self, name: &str) -> Counter {
        self.0.get(name).copied().unwrap_or_default()
    }
}

/// Ethernet + IPv4 + UDP header bytes in front of a UDP payload (no IP options).
pub const UDP4_OVERHEAD: usize = 14 + 20 + 8;
/// Ethernet + IPv6 + UDP header bytes in front of a UDP payload (no extension headers).
pub const UDP6_OVERHEAD: usize = 14 + 40 + 8;

/// The Ethernet frame length of a UDP datagram with `payload` bytes to or from `addr`.
pub fn udp_frame_len(addr: IpAddr, payload: usize) -> usize {
    payload
        + match addr {
            IpAddr::V4(_) => UDP4_OVERHEAD,
            IpAddr::V6(_) => UDP6_OVERHEAD,
        }
}

/// A memcached UDP request: the 8-byte frame header (request id, sequence 0, 1 datagram,
/// reserved 0) followed by the ASCII command, e.g. `get k\r\n` or `stats\r\n`.
pub fn memcached_udp_request(request_id: u16, command: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + command.len());
    frame.extend_from_slice(&request_id.to_be_bytes());
    frame.extend_from_slice(&0u16.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.extend_from_slice(&0u16.to_be_bytes());
    frame.extend_from_slice(command.as_bytes());
    frame
}

/// What came back for one memcached UDP request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpAnswer {
    /// Bytes sent (the request datagram's payload).
    pub sent: usize,
    /// Response datagrams received.
    pub datagrams: usize,
    /// Their UDP payload bytes, frame headers included.
    pub bytes: usize,
    /// Whether every datagram the server announced arrived.
    pub complete: bool,
    /// The response text, reassembled in sequence order (frame headers removed).
    pub payload: Vec<u8>,
}

impl UdpAnswer {
    /// Whether anything came back.
    pub fn answered(&self) -> bool {
        self.datagrams > 0
    }

    /// The response as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Sends one memcached UDP request from `sock` to `server` and collects the answer until every
/// announced datagram has arrived or `timeout` passes (then `complete` is false; with no
/// answer at all, `datagrams` is 0). Keep `timeout` short (300-500 ms) for no-answer checks.
pub fn udp_request(
    sock: &UdpSocket,
    server: SocketAddr,
    request_id: u16,
    command: &str,
    timeout: Duration,
) -> io::Result<UdpAnswer> {
    let frame = memcached_udp_request(request_id, command);
    sock.send_to(&frame, server)?;
    let mut answer = UdpAnswer {
        sent: frame.len(),
        ..UdpAnswer::default()
    };
    let mut parts: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        if from != server || n < 8 || buf[..2] != request_id.to_be_bytes() {
            continue;
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let total = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
        answer.datagrams += 1;
        answer.bytes += n;
        parts.insert(seq, buf[8..n].to_vec());
        if parts.len() >= total {
            answer.complete = true;
            break;
        }
    }
    answer.payload = parts.into_values().flatten().collect();
    Ok(answer)
}

/// A UDP socket bound to `source` even when that address is not local (IP_TRANSPARENT), so
/// that what it sends carries a forged source address. Needs CAP_NET_ADMIN; call it inside
/// the sender's namespace (`attacker.run(|| spoofing_udp_socket(victim))`).
pub fn spoofing_udp_socket(source: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(
        Domain::for_address(source),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    match source {
        SocketAddr::V4(_) => sock.set_ip_transparent_v4(true)?,
        SocketAddr::V6(_) => sock.set_ip_transparent_v6(true)?,
    }
    sock.bind(&SockAddr::from(source))?;
    Ok(sock.into())
}

/// Sets a socket's receive buffer to `bytes`, above net.core.rmem_max (SO_RCVBUFFORCE, needs
/// CAP_NET_ADMIN): for receiving large bursts of datagrams without loss.
pub fn force_recv_buffer(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid fd and a pointer to a c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP connection to `server` from the local address `source` (call it inside the client's
/// namespace).
pub fn tcp_connect_from(
    source: IpAddr,
    server: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    sock.connect_timeout(&SockAddr::from(server), timeout)?;
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(timeout.max(Duration::from_secs(5))))?;
    Ok(stream)
}

/// Reads from `stream` until what was read ends with one of `endings`.
fn read_until_any(stream: &mut TcpStream, endings: &[&[u8]]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if endings.iter().any(|e| out.ends_with(e)) {
            return Ok(out);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "memcached closed the connection after {:?}",
                    String::from_utf8_lossy(&out)
                ),
            ));
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Stores `value` under `key` over a memcached TCP connection (`set`), expecting `STORED`.
pub fn tcp_set(stream: &mut TcpStream, key: &str, value: &[u8]) -> io::Result<()> {
    let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    stream.write_all(&req)?;
    let reply = read_until_any(stream, &[b"\r\n"])?;
    if reply != b"STORED\r\n" {
        return Err(io::Error::other(format!(
            "memcached answered set with {:?}",
            String::from_utf8_lossy(&reply)
        )));
    }
    Ok(())
}

/// Fetches `key` over a memcached TCP connection (`get`): `None` when it is not stored.
pub fn tcp_get(stream: &mut TcpStream, key: &str) -> io::Result<Option<Vec<u8>>> {
    stream.write_all(format!("get {key}\r\n").as_bytes())?;
    let reply = read_until_any(stream, &[b"END\r\n"])?;
    if reply == b"END\r\n" {
        return Ok(None);
    }
    parse_get_value(&reply)
        .map(Some)
        .ok_or_else(|| io::Error::other("memcached sent a malformed get answer"))
}

/// The value of a memcached `get` answer (`VALUE key flags len\r\n<data>\r\nEND\r\n`), or
/// `None` when it holds no value.
pub fn parse_get_value(reply: &[u8]) -> Option<Vec<u8>> {
    let header_end = reply.windows(2).position(|w| w == b"\r\n")?;
    let header = std::str::from_utf8(&reply[..header_end]).ok()?;
    let mut words = header.split(' ');
    if words.next()? != "VALUE" {
        return None;
    }
    let len: usize = words.nth(2)?.parse().ok()?;
    let data = reply.get(header_end + 2..header_end + 2 + len)?;
    let rest = reply.get(header_end + 2 + len..)?;
    (rest == b"\r\nEND\r\n").then(|| data.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Rate limiting, the denylist and top talkers: more of guard's JSON, crafted frames sent
// through an AF_PACKET socket, and bpftool's view of pinned maps.

/// One row of `guard top --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Talker {
    /// The source address.
    pub source: IpAddr,
    /// Dropped datagrams (an estimate unless the guard samples every drop).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The last verdict recorded for it (`dropped`, `rate_limited`, `denied`, ...).
    pub verdict: String,
}

impl Guard {
    /// Runs `guard ARGS...`, which must succeed, and parses its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.ok(args)?;
        serde_json::from_str(&out)
            .with_context(|| format!("parsing the output of guard {}: {out:?}", args.join(" ")))
    }

    /// The `events.bucket_inserts` figure of `guard stats --json`.
    pub fn bucket_inserts(&self) -> anyhow::Result<u64> {
        let v = self.json(&["stats", "--json"])?;
        v.pointer("/events/bucket_inserts")
            .and_then(|n| n.as_u64())
            .ok_or_else(|| anyhow!("guard stats --json has no events.bucket_inserts: {v}"))
    }

    /// `guard list --json`: the allowlist and the denylist, each sorted.
    pub fn lists(&self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let v = self.json(&["list", "--json"])?;
        let list = |name: &str| -> anyhow::Result<Vec<String>> {
            let mut out: Vec<String> = v
                .get(name)
                .and_then(|a| a.as_array())
                .ok_or_else(|| anyhow!("guard list --json has no {name} array: {v}"))?
                .iter()
                .map(|p| {
                    p.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow!("not a string in guard list --json: {p}"))
                })
                .collect::<anyhow::Result<_>>()?;
            out.sort();
            Ok(out)
        };
        Ok((list("allow")?, list("deny")?))
    }

    /// `guard top -n N --json`, heaviest first as guard prints it.
    pub fn top(&self, n: usize) -> anyhow::Result<Vec<Talker>> {
        let v = self.json(&["top", "-n", &n.to_string(), "--json"])?;
        v.get("top")
            .and_then(|t| t.as_array())
            .ok_or_else(|| anyhow!("guard top --json has no top array: {v}"))?
            .iter()
            .map(|t| {
                let num = |f: &str| {
                    t.get(f)
                        .and_then(|n| n.as_u64())
                        .ok_or_else(|| anyhow!("top entry without {f}: {t}"))
                };
                let text = |f: &str| {
                    t.get(f)
                        .and_then(|s| s.as_str())
                        .ok_or_else(|| anyhow!("top entry without {f}: {t}"))
                };
                Ok(Talker {
                    source: text("source")?
                        .parse()
                        .with_context(|| format!("top entry source: {t}"))?,
                    packets: num("packets")?,
                    bytes: num("bytes")?,
                    verdict: text("verdict")?.to_owned(),
                })
            })
            .collect()
    }
}

/// The MAC address of `dev` in `ns` (from `ip -j link show`).
pub fn mac_address(ns: &Netns, dev: &str) -> anyhow::Result<[u8; 6]> {
    let out = run_ok(
        Command::new("ip")
            .args(["-n", ns.name(), "-j", "link", "show", "dev", dev])
            .stderr(Stdio::piped()),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing ip -j link show")?;
    let text = v
        .pointer("/0/address")
        .and_then(|a| a.as_str())
        .ok_or_else(|| anyhow!("ip -j link show {dev} has no address: {out}"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    ensure!(parts.len() == 6, "not a MAC address: {text}");
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("not a MAC address: {text}"))?;
    }
    Ok(mac)
}

/// An Ethernet + IPv4 + UDP frame with correct IPv4 header and UDP checksums (no IP options,
/// TTL 64, DF clear). The source address may be anything: nothing checks it before guard.
pub fn udp4_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: std::net::SocketAddrV4,
    dst: std::net::SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(src.port() ^ 0x5a5a).to_be_bytes()); // any id
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let sum = crate::packets::checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    // The UDP checksum covers a pseudo header: addresses, protocol, UDP length.
    let mut pseudo = Vec::with_capacity(12 + udp.len());
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let sum = match crate::packets::checksum(&pseudo) {
        0 => 0xffff,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

/// A raw AF_PACKET socket bound to one interface of a namespace: it sends whole Ethernet
/// frames out of that interface (to its veth peer) and receives nothing.
#[derive(Debug)]
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
}

impl PacketSocket {
    /// Opens the socket inside `ns` and binds it to `ifname` there. Needs CAP_NET_RAW.
    pub fn open(ns: &Netns, ifname: &str) -> anyhow::Result<PacketSocket> {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(ifname)?;
        let fd = ns
            .run(|| -> io::Result<std::os::fd::OwnedFd> {
                // SAFETY: a plain socket call; the fd is owned at once.
                let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: raw is a fresh, valid fd nobody else owns.
                let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
                // SAFETY: a valid NUL-terminated name.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                if ifindex == 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = ifindex as i32;
                // SAFETY: a valid fd and a sockaddr_ll of the given size.
                let r = unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        (&raw const sll).cast(),
                        size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(fd)
            })?
            .with_context(|| format!("opening an AF_PACKET socket on {ifname} in {}", ns.name()))?;
        Ok(PacketSocket { fd })
    }

    /// Sends one whole Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: a valid fd and buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!(
                "sent {n} of {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }
}

/// A pinned BPF map as bpftool sees it: its capacity and how many entries it holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFill {
    /// max_entries.
    pub max_entries: u64,
    /// Entries found by `bpftool map dump`.
    pub entries: u64,
}

/// Reads `max_entries` (`bpftool -j map show pinned`) and counts the entries (`bpftool -j map
/// dump pinned`) of the map pinned at `path`.
pub fn pinned_map_fill(path: &Path) -> anyhow::Result<MapFill> {
    let show = run_ok(
        Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(path),
    )?;
    let show: serde_json::Value =
        serde_json::from_str(&show).context("parsing bpftool map show")?;
    let max_entries = show
        .get("max_entries")
        .and_then(|n| n.as_u64())
        .ok_or_else(|| anyhow!("bpftool map show without max_entries: {show}"))?;
    let dump = run_ok(
        Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(path),
    )?;
    let dump: serde_json::Value =
        serde_json::from_str(&dump).context("parsing bpftool map dump")?;
    let entries = dump
        .as_array()
        .ok_or_else(|| anyhow!("bpftool map dump is not an array"))?
        .len() as u64;
    Ok(MapFill {
        max_entries,
        entries,
    })
}

/// Where a guard pins the map `name` (`GUARD_SRC_BKT`, ...): `<pin>/abi-<ABI_VERSION>/maps/<name>`.
pub fn pinned_map_path(guard: &Guard, name: &str) -> PathBuf {
    guard_user::pins::PinLayout::new(guard.pin_path()).map(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frame_layout() {
        let f = memcached_udp_request(0x1234, "get k\r\n");
        assert_eq!(&f[..8], &[0x12, 0x34, 0, 0, 0, 1, 0, 0]);
        assert_eq!(&f[8..], b"get k\r\n");
    }

    #[test]
    fn get_value_parsing() {
        assert_eq!(
            parse_get_value(b"VALUE k 0 5\r\nhello\r\nEND\r\n"),
            Some(b"hello".to_vec())
        );
        assert_eq!(parse_get_value(b"END\r\n"), None);
        assert_eq!(parse_get_value(b"VALUE k 0 9\r\nhello\r\nEND\r\n"), None);
    }

    #[test]
    fn frame_lengths() {
        assert_eq!(udp_frame_len("10.0.0.1".parse().unwrap(), 15), 57);
        assert_eq!(udp_frame_len("fd00::1".parse().unwrap(), 15), 77);
    }
}

// ---------------------------------------------------------------------------------------------
// `guard run` (the daemon), its metrics endpoint, and config files.

/// `guard --config FILE run` running inside a namespace (guard looks interfaces up there, and
/// binds its metrics address there), its stdout and stderr going to a log file. Killed
/// (SIGKILL) and reaped on drop if still running; when the test is failing, the log is
/// printed then.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: PathBuf,
    /// guard's own pid when the child is a wrapper (strace) rather than guard.
    guard_pid: Option<u32>,
}

impl Daemon {
    /// Starts `nsenter --net=NS -- guard --config CONFIG run` with its output appended to
    /// `log`. RUST_LOG, GUARD_PIN_PATH and GUARD_CONFIG of the environment are removed (the
    /// config names the pin path; `run` logs at info). Returns at once: see
    /// [`Daemon::wait_log`].
    pub fn start(ns: &Netns, config: &Path, log: &Path) -> anyhow::Result<Daemon> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = ns.command(privilege::guard_bin());
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("GUARD_PIN_PATH")
            .env_remove("GUARD_CONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C at the terminal does not reach it.
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        Ok(Daemon {
            child,
            log: log.to_owned(),
            guard_pid: None,
        })
    }

    /// Like [`Daemon::start`], but runs
    /// `OUTER... nsenter --net=NS -- INNER... guard --config CONFIG run`: OUTER such as
    /// `strace -f -o FILE`, INNER such as `setpriv --bounding-set=...` (after nsenter, which
    /// needs CAP_SYS_ADMIN to enter the namespace). Waits (up to 10 s) until guard itself
    /// runs, so that [`Daemon::pid`] and [`Daemon::signal`] address guard, not the wrapper.
    pub fn start_wrapped(
        ns: &Netns,
        outer: &[&OsStr],
        inner: &[&OsStr],
        config: &Path,
        log: &Path,
    ) -> anyhow::Result<Daemon> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let bin = privilege::guard_bin();
        let (program, outer_args) = match outer.split_first() {
            Some((p, rest)) => (*p, rest),
            None => (OsStr::new("nsenter"), &[][..]),
        };
        let mut cmd = Command::new(program);
        cmd.args(outer_args);
        if !outer.is_empty() {
            cmd.arg("nsenter");
        }
        cmd.arg(format!("--net={}", ns.path().display()))
            .arg("--")
            .args(inner)
            .arg(&bin)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("GUARD_PIN_PATH")
            .env_remove("GUARD_CONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let mut daemon = Daemon {
            child,
            log: log.to_owned(),
            guard_pid: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = find_process(&bin, config) {
                daemon.guard_pid = Some(pid);
                return Ok(daemon);
            }
            if let Some(status) = daemon.child.try_wait()? {
                bail!(
                    "{cmd:?} exited ({status}) before guard ran; log:\n{}",
                    daemon.log()
                );
            }
            if Instant::now() > deadline {
                bail!("guard did not start under {cmd:?} within 10 s");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// guard's process id.
    pub fn pid(&self) -> u32 {
        self.guard_pid.unwrap_or_else(|| self.child.id())
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A position in the log, for [`Daemon::wait_log`] to look after.
    pub fn log_mark(&self) -> usize {
        std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }

    /// Waits until a log line after `mark` contains `needle`, and returns that line. Fails
    /// when `timeout` passes or guard exits first.
    pub fn wait_log(
        &mut self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            let found = log
                .get(mark.min(log.len())..)
                .unwrap_or("")
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned);
            if let Some(line) = found {
                return Ok(line);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("guard run exited ({status}) before logging {needle:?}; its log:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("guard run did not log {needle:?} within {timeout:?}; its log:\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (libc::SIGHUP, ...) to guard.
    pub fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet, so
        // the pid is still ours.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("sending signal {signal} to guard run ({pid})"));
        }
        Ok(())
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits up to `timeout` for guard to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "guard run did not exit within {timeout:?}; its log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills guard with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        if self.guard_pid.is_some() {
            // The wrapper exits once guard has.
            self.signal(libc::SIGKILL)?;
        } else {
            self.child.kill().context("killing guard run")?;
        }
        Ok(self.child.wait()?)
    }
}

/// The process whose command line is `BIN ... CONFIG ... run`, if any.
fn find_process(bin: &Path, config: &Path) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is = |a: &[u8], p: &Path| a == p.as_os_str().as_encoded_bytes();
        (args.first().is_some_and(|a| is(a, bin))
            && args.iter().any(|a| is(a, config))
            && args.iter().any(|a| *a == b"run"))
        .then_some(pid)
    })
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        if running {
            if self.guard_pid.is_some() {
                let _ = self.signal(libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "lab: log of guard run ({}):\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// An HTTP response: status, headers (names lower-cased) and body.
#[derive(Clone, Debug, Default)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: String,
}

impl HttpResponse {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 `GET path` to `addr` (`Connection: close`). Call it inside the namespace
/// the server listens in (`ns.run(|| http_get(...))`).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = std::str::from_utf8(&raw[..split]).context("HTTP headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: String::new(),
    };
    let body = &raw[split + 4..];
    let body = if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)?
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().context("bad content-length")?;
        ensure!(
            body.len() == len,
            "content-length {len}, but {} bytes came",
            body.len()
        );
        body.to_vec()
    } else {
        body.to_vec()
    };
    response.body = String::from_utf8(body).context("HTTP body is not UTF-8")?;
    Ok(response)
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk header"))?;
        let size = std::str::from_utf8(&body[..end])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size:?}"))?;
        body = &body[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(body.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// One sample of a Prometheus or OpenMetrics text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series name (`guard_packets_total`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed Prometheus/OpenMetrics text exposition.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Family name (as in `# TYPE`) to type (`counter`, `gauge`, ...).
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// The samples called `name` whose labels include every `(label, value)` given.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
            })
            .collect()
    }

    /// The value of the one sample [`Metrics::find`] finds; fails on none or several.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        match self.find(name, labels).as_slice() {
            [one] => Ok(one.value),
            [] => bail!("no sample {name}{labels:?} in the metrics"),
            many => bail!("{} samples match {name}{labels:?}: {many:?}", many.len()),
        }
    }

    /// The value of the one matching sample as an integer (panics with the reason otherwise).
    pub fn int(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let v = self.value(name, labels).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            v >= 0.0 && v.fract() == 0.0,
            "{name}{labels:?} = {v} is not a count"
        );
        v as u64
    }

    /// The series names a query can use: every sample's name, and for each `# TYPE`'d family
    /// without samples its name (`_total` added for counters).
    pub fn series_names(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> =
            self.samples.iter().map(|s| s.name.clone()).collect();
        for (family, kind) in &self.types {
            if kind == "counter" && !family.ends_with("_total") {
                names.insert(format!("{family}_total"));
            } else {
                names.insert(family.clone());
            }
        }
        names
    }
}

/// Parses a Prometheus text (0.0.4) or OpenMetrics text exposition: `# TYPE` lines and
/// samples `name{label="value",...} value [timestamp]`; other comments are skipped.
pub fn parse_metrics(text: &str) -> anyhow::Result<Metrics> {
    let mut m = Metrics::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            if words.next() == Some("TYPE") {
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    bail!("line {}: bad TYPE line {line:?}", i + 1);
                };
                m.types.insert(name.to_owned(), kind.to_owned());
            }
            continue;
        }
        let sample = parse_sample(line).with_context(|| format!("line {}: {line:?}", i + 1))?;
        m.samples.push(sample);
    }
    Ok(m)
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| anyhow!("no value"))?;
    let name = &line[..name_end];
    ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name {name:?}"
    );
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some((start, c)) = chars.next() else {
                bail!("unterminated label set");
            };
            if c == '}' {
                break start + 1;
            }
            let mut key = String::from(c);
            loop {
                match chars.next() {
                    Some((_, '=')) => break,
                    Some((_, c)) => key.push(c),
                    None => bail!("unterminated label name"),
                }
            }
            ensure!(
                chars.next().map(|(_, c)| c) == Some('"'),
                "label {key} has no quoted value"
            );
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => bail!("unterminated label value"),
                    },
                    Some((_, c)) => value.push(c),
                    None => bail!("unterminated label value"),
                }
            }
            labels.insert(key.trim().to_owned(), value);
        };
        rest = &after[end..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("no value"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Replaces `path` with `text` atomically (a temporary file beside it, then rename), so that
/// a reader (guard run polling its config) never sees a half-written file.
pub fn write_file_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.lab-{}.tmp", unique_suffix()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod daemon_helper_tests {
    use super::*;

    #[test]
    fn metrics_text_parses() {
        let text = "# HELP guard_up Up.\n# TYPE guard_up gauge\nguard_up{} 1\n\
            # TYPE guard_packets counter\n\
            guard_packets_total{interface=\"srv0\",reason=\"dropped\"} 5\n\
            guard_packets_total{interface=\"srv0\",reason=\"allowlisted\"} 3 1700000000\n\
            # TYPE guard_config_reloads counter\n\
            guard_build_info{version=\"0.1.0\",abi=\"1\"} 1\nodd{a=\"x\\\"y\\\\\"} +Inf\n# EOF\n";
        let m = parse_metrics(text).unwrap();
        assert_eq!(m.int("guard_up", &[]), 1);
        assert_eq!(m.int("guard_packets_total", &[("reason", "dropped")]), 5);
        assert_eq!(
            m.int(
                "guard_packets_total",
                &[("interface", "srv0"), ("reason", "allowlisted")]
            ),
            3
        );
        assert!(m.value("guard_packets_total", &[]).is_err());
        assert_eq!(m.find("odd", &[("a", "x\"y\\")]).len(), 1);
        let names = m.series_names();
        assert!(names.contains("guard_config_reloads_total"), "{names:?}");
        assert!(names.contains("guard_build_info"), "{names:?}");
        assert!(parse_metrics("bad line here\n").is_err());
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n").unwrap(),
            b"hello world"
        );
    }
}
