//! Real-time plumbing: absolute-deadline ticking on CLOCK_MONOTONIC, and the host grants the
//! RT thread asks for (SCHED_FIFO, mlockall, CPU affinity, /dev/cpu_dma_latency), each reported
//! as granted or refused with the reason; the loop runs without a refused one.

#![allow(unsafe_code)]

use std::io::Write;

use serde::{Deserialize, Serialize};

/// What to do when a tick ends after the next deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrunPolicy {
    /// Skip to the next future period on the original grid (counted); never catch up.
    #[default]
    Skip,
    /// Re-anchor the grid: the next deadline is one period after now (counted).
    Restart,
}

/// `[runtime]` real-time settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtConfig {
    /// Control period (ms); 10 by default, 1 works too.
    #[serde(default = "default_period_ms")]
    pub period_ms: f64,
    /// SCHED_FIFO priority 1..=99 for the RT thread; unset: normal scheduling.
    #[serde(default)]
    pub fifo_priority: Option<i32>,
    /// mlockall(MCL_CURRENT | MCL_FUTURE) so no page fault stalls the loop.
    #[serde(default)]
    pub lock_memory: bool,
    /// Pin the RT thread to this CPU. Every other thread of the loop (inference worker, robot
    /// I/O, model manager, recorder, uploader, metrics, ONNX Runtime's pools) then keeps off it
    /// (`keep_off_cpu`), so their caches and run queue never compete with the RT thread's.
    #[serde(default)]
    pub cpu: Option<usize>,
    /// Hold /dev/cpu_dma_latency at this many µs (0 = no C-states) while running.
    #[serde(default)]
    pub cpu_dma_latency_us: Option<u32>,
    #[serde(default)]
    pub overrun: OverrunPolicy,
    /// Deadline misses in a row that trip the watchdog (internal E-stop).
    #[serde(default = "default_misses")]
    pub max_consecutive_misses: u32,
    /// Refuse to drive unless SCHED_FIFO (`fifo_priority`) and `lock_memory` were granted.
    #[serde(default)]
    pub require_rt: bool,
    /// The RT thread silent for longer than this (ms; at least two periods) latches an internal
    /// E-stop (source `watchdog`). The actuator gate sends zero after two periods whatever this
    /// is; below this a stall is a protective stop that ends with the next fresh verdict.
    #[serde(default = "default_stall_estop_ms")]
    pub stall_estop_ms: f64,
    /// An inference worker silent for longer than this (ms) is replaced by the supervisor (not
    /// an E-stop: its actions age out and the loop decays to a protective stop).
    #[serde(default = "default_inference_deadline_ms")]
    pub inference_deadline_ms: f64,
}

fn default_inference_deadline_ms() -> f64 {
    500.0
}

fn default_stall_estop_ms() -> f64 {
    100.0
}

fn default_period_ms() -> f64 {
    10.0
}

fn default_misses() -> u32 {
    3
}

impl Default for RtConfig {
    fn default() -> Self {
        Self {
            period_ms: default_period_ms(),
            fifo_priority: None,
            lock_memory: false,
            cpu: None,
            cpu_dma_latency_us: None,
            overrun: OverrunPolicy::Skip,
            max_consecutive_misses: default_misses(),
            require_rt: false,
            inference_deadline_ms: default_inference_deadline_ms(),
            stall_estop_ms: default_stall_estop_ms(),
        }
    }
}

impl RtConfig {
    pub fn period_ns(&self) -> u64 {
        (self.period_ms * 1e6).round() as u64
    }

    /// `stall_estop_ms` in ns, never below two periods.
    pub fn stall_estop_ns(&self) -> u64 {
        ((self.stall_estop_ms * 1e6).round() as u64).max(2 * self.period_ns())
    }

    /// `inference_deadline_ms` in ns.
    pub fn inference_deadline_ns(&self) -> u64 {
        (self.inference_deadline_ms * 1e6).round() as u64
    }

    /// With `require_rt`: an error naming what was not granted and how to grant it.
    pub fn check_required(&self, grants: &RtGrants) -> Result<(), String> {
        if !self.require_rt {
            return Ok(());
        }
        let mut missing = Vec::new();
        match (&self.fifo_priority, &grants.fifo_priority) {
            (None, _) => missing
                .push("runtime.fifo_priority is unset (require_rt needs it, e.g. 80)".to_string()),
            (Some(_), Some(Err(e))) => missing.push(format!("SCHED_FIFO: {e}")),
            _ => {}
        }
        match (self.lock_memory, &grants.lock_memory) {
            (false, _) => {
                missing.push("runtime.lock_memory is false (require_rt needs true)".to_string())
            }
            (true, Some(Err(e))) => missing.push(format!("mlockall: {e}")),
            _ => {}
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "runtime.require_rt = true and the RT thread was not granted: {}; set require_rt = false only on a development machine",
                missing.join("; ")
            ))
        }
    }

    /// Checks values; errors name the key under `[runtime]`.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.stall_estop_ms.is_finite() && (0.0..=10_000.0).contains(&self.stall_estop_ms)) {
            return Err(format!(
                "runtime.stall_estop_ms: must be between 0 (= two periods) and 10000 ms, got {}; fix: e.g. 100",
                self.stall_estop_ms
            ));
        }
        if !(self.inference_deadline_ms.is_finite()
            && (1.0..=60_000.0).contains(&self.inference_deadline_ms))
        {
            return Err(format!(
                "runtime.inference_deadline_ms: must be between 1 and 60000 ms, got {}; fix: a few times the policy's slowest inference, e.g. 500",
                self.inference_deadline_ms
            ));
        }
        if !(self.period_ms.is_finite() && (0.1..=1000.0).contains(&self.period_ms)) {
            return Err(format!(
                "runtime.period_ms: must be between 0.1 and 1000 ms, got {}; fix: 10 for 100 Hz, 1 for 1 kHz",
                self.period_ms
            ));
        }
        if let Some(p) = self.fifo_priority
            && !(1..=99).contains(&p)
        {
            return Err(format!(
                "runtime.fifo_priority: SCHED_FIFO priorities are 1..=99, got {p}; fix: e.g. 80"
            ));
        }
        if self.max_consecutive_misses == 0 {
            return Err("runtime.max_consecutive_misses: must be >= 1; fix: e.g. 3".into());
        }
        Ok(())
    }
}

pub use reflex_core::clock::now_ns;

/// Sleeps until the monotonic clock reaches `deadline_ns` (absolute; EINTR resumes).
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return;
        }
    }
}

/// What the RT thread asked for and what it got.
#[derive(Debug, Default, Serialize)]
pub struct RtGrants {
    pub fifo_priority: Option<Result<i32, String>>,
    pub lock_memory: Option<Result<(), String>>,
    pub cpu: Option<Result<usize, String>>,
    pub cpu_dma_latency_us: Option<Result<u32, String>>,
    #[serde(skip)]
    dma_file: Option<std::fs::File>,
}

impl RtGrants {
    /// One line per request: what was granted, what was refused and why.
    pub fn summary(&self) -> String {
        fn line<T: std::fmt::Debug>(name: &str, r: &Option<Result<T, String>>) -> Option<String> {
            r.as_ref().map(|r| match r {
                Ok(v) => format!("{name}: granted ({v:?})"),
                Err(e) => format!("{name}: NOT granted, running without it: {e}"),
            })
        }
        [
            line("SCHED_FIFO", &self.fifo_priority),
            line("mlockall", &self.lock_memory),
            line("cpu affinity", &self.cpu),
            line("cpu_dma_latency", &self.cpu_dma_latency_us),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
    }

    /// True when something requested was refused.
    pub fn any_refused(&self) -> bool {
        matches!(self.fifo_priority, Some(Err(_)))
            || matches!(self.lock_memory, Some(Err(_)))
            || matches!(self.cpu, Some(Err(_)))
            || matches!(self.cpu_dma_latency_us, Some(Err(_)))
    }
}

fn os_error() -> String {
    std::io::Error::last_os_error().to_string()
}

/// Applies the configured requests to the calling thread (call it on the RT thread).
pub fn apply(config: &RtConfig) -> RtGrants {
    let mut grants = RtGrants::default();
    if config.lock_memory {
        // SAFETY: plain syscall with constant flags.
        let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
        grants.lock_memory = Some(if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "{}; fix: LimitMEMLOCK=infinity in the systemd unit or `@reflex - memlock unlimited` in /etc/security/limits.conf",
                os_error()
            ))
        });
    }
    if let Some(cpu) = config.cpu {
        // SAFETY: `set` is a zeroed cpu_set_t owned by this frame; CPU_SET bounds-checks `cpu`
        // against the set size via the libc macro implementation.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        grants.cpu = Some(if rc == 0 {
            Ok(cpu)
        } else {
            Err(format!(
                "{}; fix: choose a CPU this process may use (taskset -p $$)",
                os_error()
            ))
        });
    }
    if let Some(priority) = config.fifo_priority {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        grants.fifo_priority = Some(if rc == 0 {
            Ok(priority)
        } else {
            Err(format!(
                "{}; fix: LimitRTPRIO=99 (systemd) or `@reflex - rtprio 99` in /etc/security/limits.conf, or CAP_SYS_NICE",
                os_error()
            ))
        });
    }
    if let Some(us) = config.cpu_dma_latency_us {
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .and_then(|mut f| {
                f.write_all(&us.to_ne_bytes())?;
                Ok(f)
            });
        grants.cpu_dma_latency_us = Some(match result {
            Ok(f) => {
                // The request holds only while the file stays open.
                grants.dma_file = Some(f);
                Ok(us)
            }
            Err(e) => Err(format!(
                "{e}; fix: run as root or grant write access to /dev/cpu_dma_latency"
            )),
        });
    }
    grants
}

/// SCHED_FIFO at `priority` for the calling thread (the actuator gate and the robot I/O run
/// just below the RT thread). The error says how to grant it.
pub fn set_fifo(priority: i32) -> Result<(), String> {
    let param = libc::sched_param {
        sched_priority: priority.clamp(1, 99),
    };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "{}; fix: LimitRTPRIO=99 (systemd) or `@reflex - rtprio 99` in /etc/security/limits.conf, or CAP_SYS_NICE",
            os_error()
        ))
    }
}

/// Back to normal scheduling (SCHED_OTHER) for the calling thread.
pub fn set_normal() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
}

/// One wake-up of the ticker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub index: u64,
    pub deadline_ns: u64,
    pub woke_ns: u64,
    /// Periods skipped before this tick because the previous one overran.
    pub skipped: u64,
}

impl Tick {
    pub fn lateness_ns(&self) -> u64 {
        self.woke_ns.saturating_sub(self.deadline_ns)
    }
}

/// Absolute-deadline ticker: deadlines on a fixed grid, never catching up after an overrun.
#[derive(Debug, Clone)]
pub struct Ticker {
    period_ns: u64,
    policy: OverrunPolicy,
    next_ns: u64,
    index: u64,
    pub misses: u64,
    pub consecutive_misses: u64,
}

impl Ticker {
    /// First deadline one period after `start_ns`.
    pub fn new(period_ns: u64, policy: OverrunPolicy, start_ns: u64) -> Self {
        Self {
            period_ns: period_ns.max(1),
            policy,
            next_ns: start_ns + period_ns,
            index: 0,
            misses: 0,
            consecutive_misses: 0,
        }
    }

    /// Decides the next deadline given the time `now_ns` the previous tick's work finished,
    /// counting a miss when that was past the deadline.
    pub fn next_deadline(&mut self, now_ns: u64) -> (u64, u64) {
        let mut skipped = 0;
        if now_ns > self.next_ns {
            let behind = now_ns - self.next_ns;
            skipped = behind / self.period_ns + 1;
            self.next_ns = match self.policy {
                OverrunPolicy::Skip => self.next_ns + skipped * self.period_ns,
                OverrunPolicy::Restart => now_ns + self.period_ns,
            };
            self.misses += skipped;
            self.consecutive_misses += 1;
        } else {
            self.consecutive_misses = 0;
        }
        (self.next_ns, skipped)
    }

    /// Sleeps until the next deadline and returns the tick.
    pub fn wait(&mut self) -> Tick {
        let (deadline, skipped) = self.next_deadline(now_ns());
        sleep_until(deadline);
        let woke = now_ns();
        self.next_ns = deadline + self.period_ns;
        self.index += 1;
        Tick {
            index: self.index,
            deadline_ns: deadline,
            woke_ns: woke,
            skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_off_cpu_removes_only_that_cpu_and_is_inherited() {
        std::thread::spawn(|| {
            let all = keep_off_cpu(usize::MAX / 2).expect("getaffinity");
            if all.len() < 2 {
                // One CPU: nothing to keep off; the call must leave it alone.
                assert_eq!(keep_off_cpu(all[0]).unwrap(), all);
                return;
            }
            let left = keep_off_cpu(all[0]).unwrap();
            assert_eq!(left, all[1..].to_vec());
            let child = std::thread::spawn(|| keep_off_cpu(usize::MAX / 2).unwrap())
                .join()
                .unwrap();
            assert_eq!(child, left, "a thread started afterwards inherits the set");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn overruns_skip_to_the_grid_and_are_counted() {
        let mut t = Ticker::new(10, OverrunPolicy::Skip, 0);
        assert_eq!(t.next_deadline(5), (10, 0));
        // Work finished at 35 for a deadline of 10: periods at 10, 20, 30 are gone.
        assert_eq!(t.next_deadline(35), (40, 3));
        assert_eq!((t.misses, t.consecutive_misses), (3, 1));
        assert_eq!(t.next_deadline(39), (40, 0));
        assert_eq!(t.consecutive_misses, 0);
        let mut r = Ticker::new(10, OverrunPolicy::Restart, 0);
        assert_eq!(r.next_deadline(35), (45, 3));
    }

    #[test]
    fn ticks_land_on_absolute_deadlines() {
        let mut t = Ticker::new(2_000_000, OverrunPolicy::Skip, now_ns());
        let first = t.wait();
        let second = t.wait();
        // On the grid: the next period, or (a noisy host woke this thread late, past the next
        // deadline) the periods it skipped, counted, never a catch-up or an off-grid deadline.
        assert_eq!(
            second.deadline_ns - first.deadline_ns,
            2_000_000 * (1 + second.skipped),
            "{first:?} {second:?}"
        );
        assert!(second.woke_ns >= second.deadline_ns);
    }

    #[test]
    fn bad_rt_config_names_the_key() {
        let bad = RtConfig {
            fifo_priority: Some(120),
            ..RtConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("runtime.fifo_priority")
        );
        let bad = RtConfig {
            period_ms: 0.0,
            ..RtConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("runtime.period_ms"));
    }
}

/// What this host grants a real-time thread, for `reflex preflight`.
#[derive(Debug, Clone, Serialize)]
pub struct HostRt {
    pub cpus: usize,
    /// Whether a thread of this process may switch to SCHED_FIFO (tried on a scratch thread).
    pub fifo_allowed: Result<(), String>,
    /// RLIMIT_RTPRIO (soft, hard); `u64::MAX` = unlimited.
    pub rtprio_limit: (u64, u64),
    /// RLIMIT_MEMLOCK soft limit in bytes; `u64::MAX` = unlimited.
    pub memlock_limit_bytes: u64,
    /// `/sys/devices/system/cpu/isolated` (empty: none).
    pub isolated_cpus: String,
    pub preempt_rt: bool,
    pub kernel: String,
    /// Root (CAP_IPC_LOCK, CAP_SYS_NICE): the limits above do not bind.
    pub root: bool,
}

fn rlimit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(resource, &mut limit) };
    if rc != 0 {
        return (0, 0);
    }
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    (conv(limit.rlim_cur), conv(limit.rlim_max))
}

/// Moves the calling thread off `cpu`: its affinity becomes its current set minus `cpu`.
/// Threads it starts afterwards inherit that set. Does nothing when `cpu` is the only CPU left
/// (a single-core host) or not in the set. Returns the CPUs the thread may now use.
pub fn keep_off_cpu(cpu: usize) -> Result<Vec<usize>, String> {
    // SAFETY: `set` is a zeroed cpu_set_t owned by this frame; pid 0 is the calling thread; the
    // CPU_* macros bounds-check against the set size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut set) != 0 {
            return Err(os_error());
        }
        let allowed = |set: &libc::cpu_set_t| {
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, set))
                .collect::<Vec<_>>()
        };
        let before = allowed(&set);
        if !before.contains(&cpu) || before.len() < 2 {
            return Ok(before);
        }
        libc::CPU_CLR(cpu, &mut set);
        if libc::sched_setaffinity(0, size, &set) != 0 {
            return Err(os_error());
        }
        Ok(allowed(&set))
    }
}

/// CPU time the hypervisor has taken from this VM's CPUs so far (the `steal` column of
/// /proc/stat, all CPUs), in ms; None where the kernel does not report it. On a VM a miss while
/// the host held the vCPU is not the loop's doing; bare metal (a Jetson) reports 0.
pub fn host_steal_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let steal: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| steal as f64 * 1000.0 / hz as f64)
}

/// Probes this host (no lasting change: the SCHED_FIFO try runs on a scratch thread).
pub fn host_report() -> HostRt {
    let fifo_allowed = std::thread::spawn(|| {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: valid sched_param; pid 0 = this scratch thread, which then exits.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        if rc == 0 { Ok(()) } else { Err(os_error()) }
    })
    .join()
    .unwrap_or_else(|_| Err("probe thread panicked".into()));
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let kernel = read("/proc/sys/kernel/osrelease");
    let version = read("/proc/sys/kernel/version");
    HostRt {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        fifo_allowed,
        rtprio_limit: rlimit(libc::RLIMIT_RTPRIO),
        memlock_limit_bytes: rlimit(libc::RLIMIT_MEMLOCK).0,
        isolated_cpus: read("/sys/devices/system/cpu/isolated"),
        preempt_rt: read("/sys/kernel/realtime") == "1" || version.contains("PREEMPT_RT"),
        kernel,
        // SAFETY: geteuid has no preconditions.
        root: unsafe { libc::geteuid() } == 0,
    }
}

impl HostRt {
    /// What to change for deterministic timing, one line each; empty when nothing is missing.
    pub fn advice(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.fifo_allowed.is_err() {
            out.push("SCHED_FIFO refused: add `LimitRTPRIO=99` to the reflex systemd unit (or `@reflex - rtprio 99` in /etc/security/limits.conf), or grant CAP_SYS_NICE".into());
        }
        if self.memlock_limit_bytes != u64::MAX && !self.root {
            out.push(format!("memlock limited to {} KiB: add `LimitMEMLOCK=infinity` to the unit (or `@reflex - memlock unlimited` in limits.conf) so mlockall can pin the loop", self.memlock_limit_bytes / 1024));
        }
        if self.isolated_cpus.is_empty() && self.cpus > 1 {
            out.push(format!("no isolated CPU: boot with `isolcpus={c} nohz_full={c} rcu_nocbs={c}` and set `[runtime] cpu = {c}`", c = self.cpus - 1));
        }
        if !self.preempt_rt {
            out.push("kernel is not PREEMPT_RT: install an RT kernel (Debian: linux-image-rt-amd64 / -arm64; Jetson: the JetPack real-time kernel) for bounded wake-up latency".into());
        }
        out
    }
}

static MARK_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_mark_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    MARK_REQUESTED.store(true, std::sync::atomic::Ordering::Release);
}

/// Makes SIGUSR1 an operator mark (`systemctl kill -s USR1 reflex` or `kill -USR1 <pid>`):
/// [`take_mark`] then returns true once per signal.
pub fn install_mark_signal() {
    // SAFETY: the handler only stores to a static atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_mark_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Whether an operator mark arrived since the last call.
pub fn take_mark() -> bool {
    MARK_REQUESTED.swap(false, std::sync::atomic::Ordering::AcqRel)
}
