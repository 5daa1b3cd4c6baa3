//! `guard-demo` (run by `cargo xtask demo`): a memcached UDP reflection attack in a private
//! lab, first unprotected, then with guard attached.
//!
//! Five network namespaces: a switch (a bridge) and four hosts on 10.77.0.0/24 plugged into
//! it: a memcached server with UDP on, a legitimate client, an attacker and a victim. The
//! attacker sends small `get` requests whose source address is forged to be the victim's;
//! memcached answers each with a large value, to the victim. Nothing leaves the lab, and
//! everything is removed at the end, on failure and on Ctrl-C.
//!
//! Needs root. Uses `$GUARD_BIN` (or target/debug/guard) and memcached.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use guard_tests::{
    lab::{self, Guard, MEMCACHED_PORT, Memcached, Netns, VethEnd},
    privilege,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 66);
const VICTIM: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 99);
/// The victim's port the attacker forges as its source (say, a game or DNS client).
const VICTIM_PORT: u16 = 27015;
/// The server's interface, where guard attaches.
const SERVER_IF: &str = "eth0";
/// The key the big value is stored under.
const KEY: &str = "big";

/// Set by SIGINT/SIGTERM; checked by every loop, so that the lab is torn down.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes Ctrl-C (and SIGTERM) to [`INTERRUPTED`] instead of killing the process.
fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // sigaction struct is fully initialised.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Command-line options.
struct Options {
    requests: u32,
    value_kb: usize,
}

fn parse_args() -> anyhow::Result<Option<Options>> {
    let mut opts = Options {
        requests: 200,
        value_kb: 500,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--requests" => opts.requests = value("--requests")?.parse()?,
            "--value-kb" => opts.value_kb = value("--value-kb")?.parse()?,
            "-h" | "--help" => {
                println!(
                    "guard-demo: memcached UDP reflection, without and with guard (needs root)\n\n\
                     Options:\n  \
                     --requests N   spoofed requests per attack (default 200)\n  \
                     --value-kb K   size of the stored value in KB (default 500, at most 1000)"
                );
                return Ok(None);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    ensure!(opts.requests > 0, "--requests must be at least 1");
    ensure!(
        (1..=1000).contains(&opts.value_kb),
        "--value-kb must be 1 to 1000 (memcached's default item limit is 1 MB)"
    );
    Ok(Some(opts))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guard-demo: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !privilege::privileged() {
        eprintln!(
            "guard-demo: needs root (network namespaces, XDP); try `sudo -E cargo xtask demo`"
        );
        return ExitCode::FAILURE;
    }
    let bin = privilege::guard_bin();
    if !bin.exists() {
        eprintln!(
            "guard-demo: no guard binary at {} (build it with `cargo build -p guard-user`, or \
             run `cargo xtask demo`, or set GUARD_BIN)",
            bin.display()
        );
        return ExitCode::FAILURE;
    }
    catch_interrupts();
    let result = run(&opts);
    // The lab is gone by now: run() owns it.
    match result {
        Ok(()) => {
            println!("\nCleaned up: namespaces deleted, memcached stopped, guard unloaded.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nguard-demo: {e:#}");
            eprintln!("(the lab was cleaned up)");
            ExitCode::FAILURE
        }
    }
}

fn heading(text: &str) {
    println!(
        "\n=== {text} {}",
        "=".repeat(70usize.saturating_sub(text.len()))
    );
}

/// 1234567 -> "1,234,567".
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The lab. Fields drop in order: guard first (its unload runs in the server namespace),
/// memcached, then the namespaces.
struct Demo {
    guard: Guard,
    _memcached: Memcached,
    server: Netns,
    client: Netns,
    attacker: Netns,
    victim: Netns,
    _switch: Netns,
}

fn build_lab() -> anyhow::Result<Demo> {
    let switch = Netns::new("gdemo-sw")?;
    switch.ip(&["link", "add", "br0", "type", "bridge"])?;
    switch.ip(&["link", "set", "br0", "up"])?;
    let mut hosts = Vec::new();
    for (role, addr, port) in [
        ("srv", SERVER, "p-server"),
        ("cli", CLIENT, "p-client"),
        ("atk", ATTACKER, "p-attacker"),
        ("vic", VICTIM, "p-victim"),
    ] {
        check_interrupted()?;
        let ns = Netns::new(&format!("gdemo-{role}"))?;
        let cidr = format!("{addr}/24");
        lab::veth(
            VethEnd {
                ns: &ns,
                ifname: SERVER_IF,
                addrs: &[&cidr],
            },
            VethEnd {
                ns: &switch,
                ifname: port,
                addrs: &[],
            },
        )?;
        switch.ip(&["link", "set", port, "master", "br0"])?;
        hosts.push(ns);
    }
    let [server, client, attacker, victim]: [Netns; 4] = hosts
        .try_into()
        .map_err(|_| anyhow::anyhow!("four hosts"))?;
    let memcached = Memcached::start(&server, &[IpAddr::V4(SERVER)])?;
    let guard = Guard::new(&server);
    Ok(Demo {
        guard,
        _memcached: memcached,
        server,
        client,
        attacker,
        victim,
        _switch: switch,
    })
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(SERVER), MEMCACHED_PORT)
}

/// What one attack did.
struct Attack {
    requests: u64,
    sent_bytes: u64,
    victim_datagrams: u64,
    victim_bytes: u64,
}

/// The attacker sends `requests` spoofed `get` requests while the victim counts what reaches
/// its port.
fn attack(demo: &Demo, requests: u32) -> anyhow::Result<Attack> {
    let victim_addr = SocketAddr::new(IpAddr::V4(VICTIM), VICTIM_PORT);
    let victim_sock = demo
        .victim
        .run(|| UdpSocket::bind(victim_addr))?
        .context("binding the victim's socket")?;
    lab::force_recv_buffer(&victim_sock, 64 << 20).context("enlarging the victim's buffer")?;
    victim_sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let spoofer = demo
        .attacker
        .run(|| lab::spoofing_udp_socket(victim_addr))?
        .context("creating the attacker's spoofing socket (IP_TRANSPARENT)")?;

    let datagrams = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (datagrams, bytes, stop) = (datagrams.clone(), bytes.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::SeqCst) {
                if let Ok(n) = victim_sock.recv(&mut buf) {
                    datagrams.fetch_add(1, Ordering::SeqCst);
                    bytes.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        })
    };

    let outcome = (|| -> anyhow::Result<Attack> {
        let command = format!("get {KEY}\r\n");
        let mut sent_bytes = 0;
        for i in 0..requests {
            check_interrupted()?;
            let frame = lab::memcached_udp_request(i as u16, &command);
            spoofer
                .send_to(&frame, server_addr())
                .context("sending a spoofed request")?;
            sent_bytes += frame.len() as u64;
            // A steady stream rather than one burst, so the victim's counts are not limited
            // by its socket buffer.
            thread::sleep(Duration::from_millis(3));
        }
        // Wait until the reflected traffic stops (quiet for 500 ms, at most 15 s).
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = (bytes.load(Ordering::SeqCst), Instant::now());
        while Instant::now() < deadline && last.1.elapsed() < Duration::from_millis(500) {
            check_interrupted()?;
            thread::sleep(Duration::from_millis(50));
            let now = bytes.load(Ordering::SeqCst);
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
        Ok(Attack {
            requests: u64::from(requests),
            sent_bytes,
            victim_datagrams: datagrams.load(Ordering::SeqCst),
            victim_bytes: bytes.load(Ordering::SeqCst),
        })
    })();
    stop.store(true, Ordering::SeqCst);
    let _ = counter.join();
    outcome
}

fn report(a: &Attack) {
    println!(
        "  attacker sent:    {:>13} bytes  ({} spoofed requests of {} bytes, source {VICTIM}:{VICTIM_PORT})",
        grouped(a.sent_bytes),
        a.requests,
        a.sent_bytes / a.requests.max(1)
    );
    println!(
        "  victim received:  {:>13} bytes  ({} datagrams it never asked for)",
        grouped(a.victim_bytes),
        grouped(a.victim_datagrams)
    );
    let factor = (a.victim_bytes as f64 / a.sent_bytes.max(1) as f64).round() as u64;
    println!(
        "  amplification:    {:>13}x (UDP payload bytes received / sent)",
        grouped(factor)
    );
}

fn guard_cmd(demo: &Demo, args: &[&str]) -> anyhow::Result<()> {
    check_interrupted()?;
    println!("\n  $ guard {}", args.join(" "));
    let out = demo.guard.ok(args)?;
    for line in out.lines() {
        println!("    {line}");
    }
    Ok(())
}

fn run(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    heading("guard demo: memcached UDP reflection");
    println!("Building the lab (network namespaces on one bridge, 10.77.0.0/24):");
    let demo = build_lab()?;
    for (role, addr, ns, what) in [
        (
            "server",
            SERVER,
            &demo.server,
            "memcached, UDP on port 11211",
        ),
        (
            "client",
            CLIENT,
            &demo.client,
            "a legitimate memcached client",
        ),
        (
            "attacker",
            ATTACKER,
            &demo.attacker,
            "forges the victim's address",
        ),
        (
            "victim",
            VICTIM,
            &demo.victim,
            "receives the reflected answers",
        ),
    ] {
        println!("  {role:<9} {addr:<12} {what:<32} (netns {})", ns.name());
    }

    let value: Vec<u8> = (0..opts.value_kb * 1000)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    demo.client
        .run(|| {
            let mut s =
                lab::tcp_connect_from(IpAddr::V4(CLIENT), server_addr(), Duration::from_secs(5))?;
            lab::tcp_set(&mut s, KEY, &value)
        })?
        .context("storing the value over TCP")?;
    println!(
        "\nThe client stored a {} KB value under key {KEY:?} over TCP.",
        opts.value_kb
    );

    heading("Phase 1: no guard");
    println!(
        "The attacker sends {} small UDP `get {KEY}` requests to the server, forging the\n\
         victim's address as their source. memcached answers each one, to the victim.\n",
        opts.requests
    );
    let before = attack(&demo, opts.requests)?;
    report(&before);
    ensure!(
        before.victim_bytes > 0,
        "the victim received nothing without guard: the lab is broken"
    );

    heading("Phase 2: guard attached to the server's interface");
    println!(
        "guard drops UDP to port 11211 at the driver (XDP) unless the source is allowlisted;\n\
         only the client is."
    );
    let client_cidr = format!("{CLIENT}/32");
    guard_cmd(&demo, &["attach", SERVER_IF, "--allow", &client_cidr])?;
    println!("\nThe same attack again:\n");
    let after = attack(&demo, opts.requests)?;
    report(&after);

    check_interrupted()?;
    let client_sock = demo
        .client
        .run(|| UdpSocket::bind(SocketAddr::new(IpAddr::V4(CLIENT), 0)))?
        .context("binding the client's socket")?;
    lab::force_recv_buffer(&client_sock, 16 << 20)?;
    let answer = lab::udp_request(
        &client_sock,
        server_addr(),
        4242,
        &format!("get {KEY}\r\n"),
        Duration::from_secs(3),
    )?;
    let value_ok =
        answer.complete && lab::parse_get_value(&answer.payload).as_ref() == Some(&value);
    println!(
        "\n  allowlisted client's own UDP `get {KEY}`: {} ({} datagrams, {} bytes)",
        if value_ok {
            "answered, full value"
        } else {
            "NOT answered correctly"
        },
        answer.datagrams,
        grouped(answer.bytes as u64)
    );

    guard_cmd(&demo, &["stats"])?;

    heading("Result");
    let ok = after.victim_bytes == 0 && value_ok;
    println!(
        "  without guard: the victim got {} bytes from {} bytes of spoofed requests",
        grouped(before.victim_bytes),
        grouped(before.sent_bytes)
    );
    println!(
        "  with guard:    the victim got {} bytes; the allowlisted client was {}",
        grouped(after.victim_bytes),
        if value_ok {
            "still served"
        } else {
            "NOT served"
        }
    );
    println!(
        "  {} (in {:.1} s)",
        if ok {
            "guard stopped the reflection."
        } else {
            "UNEXPECTED: see above."
        },
        started.elapsed().as_secs_f64()
    );
    drop(demo);
    ensure!(ok, "guard did not behave as expected");
    Ok(())
}
