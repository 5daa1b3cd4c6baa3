//! Process-level helpers: CPU pinning, interruption, /proc readings, other processes' CPU use.

use std::{
    fs, io,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Set by SIGINT/SIGTERM; long loops check it so that every cleanup guard runs.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_wake(_: libc::c_int) {}

/// The signal [`wake`] sends.
const WAKE: libc::c_int = libc::SIGUSR1;

/// Interrupts a system call of thread `tid` of this process (BPF_PROG_TEST_RUN stops between
/// batches when a signal is pending).
pub fn wake(tid: libc::pid_t) {
    // SAFETY: tgkill to a thread of our own process; WAKE has a no-op handler (see
    // catch_interrupts), so a thread that already left its call is unaffected.
    unsafe {
        libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, WAKE);
    }
}

/// CPU time (user and system) of thread `tid` of this process so far, nanoseconds; 0 when
/// it cannot be read.
pub fn task_cpu_ns(tid: libc::pid_t) -> u64 {
    if tid == 0 {
        return 0;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return 0;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

/// Routes Ctrl-C and SIGTERM to a flag instead of killing the process, and installs the no-op
/// handler of [`wake`] (without SA_RESTART, so that it interrupts system calls).
pub fn catch_interrupts() {
    // SAFETY: as below, with a handler that does nothing.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_wake as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(WAKE, &action, std::ptr::null_mut());
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe); the struct is
        // fully initialised.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Whether a signal asked us to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once a signal asked us to stop.
pub fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, waking early (with an error) on interruption.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        check_interrupted()?;
        thread::sleep(left.min(Duration::from_millis(50)));
    }
    check_interrupted()
}

/// The calling thread's CPU set, to restore after pinning.
pub struct Affinity(libc::cpu_set_t);

/// The calling thread's current CPU set.
pub fn affinity() -> io::Result<Affinity> {
    // SAFETY: a zeroed cpu_set_t is valid; the kernel fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Affinity(set))
    }
}

/// Restores a CPU set saved by [`affinity`].
pub fn set_affinity(a: &Affinity) -> io::Result<()> {
    // SAFETY: a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &a.0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` with the calling thread pinned to `cpu`, then restores its CPU set (also when `f`
/// fails).
pub fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let saved = affinity()?;
    pin_to_cpu(cpu)?;
    let r = f();
    set_affinity(&saved)?;
    r
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < 1024.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    set_affinity(&Affinity(set))
}

/// The number of online CPUs.
pub fn cpus() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

/// One field of /proc/meminfo, in bytes.
pub fn meminfo(field: &str) -> anyhow::Result<u64> {
    let text = fs::read_to_string("/proc/meminfo")?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
        .with_context(|| format!("/proc/meminfo has no {field}"))
}

/// The sum of `memlock` over every BPF map this process holds a descriptor of (from
/// /proc/self/fdinfo), and the number of such descriptors.
pub fn maps_memlock() -> anyhow::Result<(u64, usize)> {
    let mut total = 0;
    let mut n = 0;
    for entry in fs::read_dir("/proc/self/fdinfo")? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix("memlock:")) {
            total += v.trim().parse::<u64>().unwrap_or(0);
            n += 1;
        }
    }
    Ok((total, n))
}

/// CPU time counters of /proc/stat, per CPU, in clock ticks.
#[derive(Clone, Debug, Default)]
pub struct CpuTimes {
    /// Time each CPU was not idle.
    busy: Vec<u64>,
    /// Every state of each CPU.
    total: Vec<u64>,
}

/// Reads [`CpuTimes`] now.
pub fn cpu_times() -> anyhow::Result<CpuTimes> {
    let stat = fs::read_to_string("/proc/stat")?;
    let mut t = CpuTimes::default();
    for line in stat.lines() {
        let mut words = line.split_whitespace();
        let Some(cpu) = words.next().and_then(|w| w.strip_prefix("cpu")) else {
            continue;
        };
        let Ok(cpu) = cpu.parse::<usize>() else {
            continue; // the "cpu" line: the sum
        };
        let v: Vec<u64> = words.filter_map(|x| x.parse().ok()).collect();
        if t.busy.len() <= cpu {
            t.busy.resize(cpu + 1, 0);
            t.total.resize(cpu + 1, 0);
        }
        // user, nice, system, irq, softirq, steal: everything but idle and iowait.
        t.busy[cpu] = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
        t.total[cpu] = v.iter().take(8).sum();
    }
    Ok(t)
}

/// CPU time of the calling thread, nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The share of the CPUs `cpus` (all when empty) that other work took between two readings:
/// their busy time less `own_ns` of the bench's own threads on those CPUs (whose CPU time
/// includes the softirq work done in their context, where veth runs the DUT).
pub fn others_busy(a: &CpuTimes, b: &CpuTimes, cpus: &[usize], own_ns: u64) -> f64 {
    let all: Vec<usize> = (0..b.total.len()).collect();
    let cpus = if cpus.is_empty() { &all[..] } else { cpus };
    let delta = |v: &dyn Fn(&CpuTimes) -> &Vec<u64>| -> u64 {
        cpus.iter()
            .map(|&c| {
                let x = v(b).get(c).copied().unwrap_or(0);
                x.saturating_sub(v(a).get(c).copied().unwrap_or(0))
            })
            .sum()
    };
    let total = delta(&|t| &t.total);
    if total == 0 {
        return 0.0;
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let busy_s = delta(&|t| &t.busy) as f64 / hz;
    ((busy_s - own_ns as f64 / 1e9) / (total as f64 / hz)).clamp(0.0, 1.0)
}

/// Waits (up to `limit`) for a second in which other processes use less than `threshold`
/// of the CPUs; returns the last share seen.
pub fn wait_for_quiet(limit: Duration, threshold: f64) -> anyhow::Result<f64> {
    let end = Instant::now() + limit;
    let mut said = false;
    loop {
        let a = cpu_times()?;
        sleep(Duration::from_secs(1))?;
        let busy = others_busy(&a, &cpu_times()?, &[], 0);
        if busy < threshold || Instant::now() >= end {
            return Ok(busy);
        }
        if !said {
            eprintln!(
                "bench: other processes use {:.0}% of the CPUs; waiting up to {} s for quiet",
                busy * 100.0,
                limit.as_secs()
            );
            said = true;
        }
    }
}

/// /proc/loadavg's first three fields.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Whether process `pid` exists.
pub fn pid_alive(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}
