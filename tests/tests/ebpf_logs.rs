//! aya-log forwarding: a guard loaded by `guard run` at debug level logs sampled drops from the
//! XDP program, and the daemon forwards them to its own log.

use std::{
    ffi::OsStr,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use guard_tests::{
    lab::{self, Daemon, Guard, Netns, VethEnd},
    privilege::require_privileges,
};

#[test]
fn sampled_drops_are_forwarded_from_the_xdp_program_at_debug_level() {
    if !require_privileges("sampled_drops_are_forwarded_from_the_xdp_program_at_debug_level") {
        return;
    }
    let srv = Netns::new("gls").expect("netns");
    let cli = Netns::new("glc").expect("netns");
    lab::veth(
        VethEnd {
            ns: &srv,
            ifname: "lg0",
            addrs: &["10.79.1.1/24"],
        },
        VethEnd {
            ns: &cli,
            ifname: "lg1",
            addrs: &["10.79.1.2/24"],
        },
    )
    .expect("veth");
    let guard = Guard::new(&srv);
    let dir = std::env::temp_dir().join(format!("guard-ebpf-logs-{}", lab::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("guard.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"lg0\"]\nallow = [\"10.79.1.9/32\"]\nmetrics_addr = \"\"\ntop_sample = 1\npin_path = \"{}\"\n",
            guard.pin_path().display()
        ),
    )
    .unwrap();
    let log = dir.join("guard.log");
    let env: [&OsStr; 2] = [OsStr::new("env"), OsStr::new("RUST_LOG=debug")];
    let mut daemon = Daemon::start_wrapped(&srv, &[], &env, &config, &log).expect("guard run");
    daemon
        .wait_log(0, "applied:", Duration::from_secs(20))
        .expect("started");
    let mark = daemon.log_mark();
    let sock = cli
        .run(|| UdpSocket::bind("10.79.1.2:0"))
        .expect("netns")
        .expect("socket");
    let server: SocketAddr = "10.79.1.1:11211".parse().unwrap();
    for i in 0..5u16 {
        sock.send_to(&lab::memcached_udp_request(i, "stats\r\n"), server)
            .unwrap();
    }
    let line = daemon
        .wait_log(mark, "dropped from 10.79.1.2", Duration::from_secs(10))
        .expect("a forwarded eBPF log record");
    eprintln!("forwarded: {line}");
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
