//! Crash safety: `kill -9` of the CLI at random points of an allowlist update, while a
//! non-allowlisted attacker keeps sending to a real memcached. No attack request is ever
//! answered, the guard stays attached, and the allowlist always ends as it was before the
//! update or after it, never half (an interrupted update is finished by the next command).
//! Also: `guard attach` killed at random points on a fresh pin root leaves state that the next
//! attach repairs.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use guard_tests::{
    lab::{self, Guard, Memcached, Netns, VethEnd},
    privilege::require_privileges,
};

const SRV_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 1));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 2));
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 3));

/// `n` distinct /32s in 100.64.0.0/10, starting at `from`.
fn batch(from: u32, n: u32) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("{}/32", Ipv4Addr::from(0x6440_0000 + i)))
        .collect()
}

fn allowlist(guard: &Guard) -> BTreeSet<String> {
    guard
        .allowlist()
        .expect("guard list --json")
        .into_iter()
        .collect()
}

fn status(guard: &Guard) -> serde_json::Value {
    serde_json::from_str(&guard.ok(&["status", "--json"]).expect("status")).expect("json")
}

#[test]
fn killed_allowlist_updates_end_before_or_after_never_half() {
    if !require_privileges("killed_allowlist_updates_end_before_or_after_never_half") {
        return;
    }
    let srv = Netns::new("gcs").expect("netns");
    let cli = Netns::new("gcc").expect("netns");
    lab::veth(
        VethEnd {
            ns: &srv,
            ifname: "cs0",
            addrs: &["10.78.1.1/24"],
        },
        VethEnd {
            ns: &cli,
            ifname: "cs1",
            addrs: &["10.78.1.2/24", "10.78.1.3/24"],
        },
    )
    .expect("veth");
    let _memcached = Memcached::start(&srv, &[SRV_V4]).expect("memcached");
    let guard = Guard::new(&srv);
    guard
        .ok(&["attach", "cs0", "--allow", "10.78.1.2/32"])
        .expect("attach");

    // The attacker: UDP `get`s from a non-allowlisted address, as fast as it can, counting
    // answers, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sock = cli
        .run(|| UdpSocket::bind(SocketAddr::new(ATTACKER, 0)))
        .expect("netns")
        .expect("attacker socket");
    sock.set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let attacker = {
        let (stop, sent, answered) = (stop.clone(), sent.clone(), answered.clone());
        std::thread::spawn(move || {
            let server = SocketAddr::new(SRV_V4, 11211);
            let frame = lab::memcached_udp_request(1, "stats\r\n");
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if sock.send_to(&frame, server).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                if sock.recv_from(&mut buf).is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let mut before = allowlist(&guard);
    let link_id = status(&guard)["interfaces"][0]["link_id"].clone();
    let (mut interrupted, mut finished, mut recovered) = (0, 0, 0);
    let started = Instant::now();
    for round in 0..80u32 {
        if round >= 12 && recovered >= 3 {
            break;
        }
        // Alternate big additions and removals of what the previous rounds added.
        let add = round % 3 != 2;
        let cidrs = if add {
            batch(round * 3000, 3000)
        } else {
            before
                .iter()
                .filter(|c| c.starts_with("100."))
                .take(2500)
                .cloned()
                .collect()
        };
        let mut args = vec![if add { "allow" } else { "revoke" }];
        args.extend(cidrs.iter().map(String::as_str));
        let mut child = guard
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Kill at a random point: 0 to 60 ms in.
        let delay = (u64::from(round) * 7919 + started.elapsed().subsec_nanos() as u64) % 60;
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let exit = child.wait().expect("wait");
        if exit.success() {
            finished += 1;
        } else {
            interrupted += 1;
        }
        // The next command finishes any interrupted update, then reads.
        let out = guard.run(&["list", "--json"]).expect("list");
        if String::from_utf8_lossy(&out.stderr).contains("finished an interrupted") {
            recovered += 1;
        }
        let after_set: BTreeSet<String> = {
            let mut s = before.clone();
            for c in &cidrs {
                if add {
                    s.insert(c.clone());
                } else {
                    s.remove(c);
                }
            }
            s
        };
        let now = allowlist(&guard);
        assert!(
            now == before || now == after_set,
            "round {round}: the allowlist is half-updated: {} entries, before {}, after {}",
            now.len(),
            before.len(),
            after_set.len()
        );
        // The guard stays attached through it all, on the same link.
        assert_eq!(
            status(&guard)["interfaces"][0]["link_id"],
            link_id,
            "round {round}"
        );
        before = now;
    }
    // On a loaded machine the rounds can end before the attacker has sent much: let it go on
    // against the final state until it has (bounded), so that "no answer" means something.
    let during_rounds = sent.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent.load(Ordering::Relaxed) <= 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    eprintln!("crash safety: {during_rounds} attack requests sent during the kill rounds");
    eprintln!(
        "crash safety: {interrupted} updates killed ({recovered} mid-way, finished by the next \
         command), {finished} completed; attacker sent {} requests, {} answered",
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed)
    );
    assert!(sent.load(Ordering::Relaxed) > 100, "the attacker did send");
    assert_eq!(
        answered.load(Ordering::Relaxed),
        0,
        "an attack request was answered"
    );
    assert!(
        recovered > 0,
        "no kill landed mid-update; the test proved nothing"
    );
    // The allowlisted client is still served.
    let sock = cli
        .run(|| UdpSocket::bind(SocketAddr::new(CLIENT, 0)))
        .unwrap()
        .unwrap();
    let answer = lab::udp_request(
        &sock,
        SocketAddr::new(SRV_V4, 11211),
        9,
        "stats\r\n",
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(answer.answered(), "the allowlisted client lost its answers");
}

#[test]
fn an_attach_killed_half_way_is_repaired_by_the_next() {
    if !require_privileges("an_attach_killed_half_way_is_repaired_by_the_next") {
        return;
    }
    let ns = Netns::new("gch").expect("netns");
    ns.ip(&["link", "add", "ch0", "type", "veth", "peer", "name", "ch1"])
        .unwrap();
    ns.ip(&["link", "set", "ch0", "up"]).unwrap();
    ns.ip(&["link", "set", "ch1", "up"]).unwrap();
    for round in 0..10u64 {
        let guard = Guard::new(&ns);
        let mut child = guard
            .command(&["attach", "ch0", "--allow", "10.0.0.0/8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(round * 15));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever was left, the next attach succeeds and the state is whole.
        guard
            .ok(&["attach", "ch0", "--allow", "10.0.0.0/8"])
            .expect("attach after a kill");
        let s = status(&guard);
        assert_eq!(
            s["interfaces"][0]["state"], "attached",
            "round {round}: {s}"
        );
        assert_eq!(s["allow_v4"], 1, "round {round}: {s}");
        assert_eq!(s["ports"], serde_json::json!([11211]), "round {round}: {s}");
        guard.ok(&["unload"]).expect("unload");
    }
}
