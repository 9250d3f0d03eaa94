//! The control tick: zero allocations over 10,000 steady-state ticks (counting global
//! allocator, this thread only), and an obstacle inside the protective zone zeroes the command
//! on the very next tick.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use reflex_core::actions::ActionTarget;
use reflex_rt::chunks::{MergeStrategy, QueueConfig};
use reflex_rt::control::{ChunkSender, ControlLoop, chunk_channel};
use reflex_runner::config::ReflexConfig;
use reflex_safety::{EstopReport, EstopSource, Monotonic, Safety, SafetyInputs, Scan};

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PERIOD: u64 = 10_000_000;
const BEAMS: usize = 720;

fn control() -> (ControlLoop, ChunkSender) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/reflex.example.toml");
    let config = ReflexConfig::load(&path).unwrap();
    let (channel, chunk_rx) = chunk_channel(4, 20 * 3);
    let control = ControlLoop::new(
        Safety::new(config.safety).unwrap(),
        QueueConfig {
            dims: 3,
            horizon: 20,
            step_ns: 20_000_000,
            strategy: MergeStrategy::Crossfade,
            crossfade_steps: 5,
            ensemble_decay: 0.5,
            max_action_age_ns: 200_000_000,
            interpolation: reflex_rt::chunks::Interpolation::Hold,
        },
        &[
            ActionTarget::BaseVx,
            ActionTarget::BaseVy,
            ActionTarget::BaseWz,
        ],
        chunk_rx,
    );
    (control, channel)
}

fn send_chunk(channel: &ChunkSender, t_obs_ns: u64, vx: f32) {
    let mut actions = [0.0f32; 20 * 3];
    for step in actions.chunks_mut(3) {
        step.copy_from_slice(&[vx, 0.0, 0.0]);
    }
    assert!(channel.try_send(t_obs_ns, &actions, 0), "a free buffer");
}

fn inputs(now: u64, ranges: &[f32]) -> SafetyInputs<'_> {
    SafetyInputs {
        estop: [EstopReport::Clear(Monotonic::from_nanos(now)); EstopSource::COUNT],
        reset_request_seq: 1,
        scan: Some(Scan {
            stamp: Monotonic::from_nanos(now),
            angle_min_rad: -std::f32::consts::PI,
            angle_increment_rad: std::f32::consts::TAU / BEAMS as f32,
            range_min_m: 0.05,
            range_max_m: 30.0,
            ranges_m: ranges,
        }),
        odometry: None,
        joint_state: None,
    }
}

fn fake_clock() -> u64 {
    0
}

#[test]
fn ten_thousand_steady_ticks_do_not_allocate() {
    let (control, channel) = control();
    steady_ticks_do_not_allocate(control, channel);
}

#[test]
fn ten_thousand_ticks_feeding_metrics_and_the_flight_recorder_do_not_allocate() {
    let (mut control, channel) = control();
    let dir = std::env::temp_dir().join(format!("reflex-tick-rec-{}", std::process::id()));
    let telemetry = std::sync::Arc::new(reflex_core::metrics::Telemetry::default());
    let recorder = reflex_telemetry::recorder::Recorder::start(
        toml::from_str(&format!(
            "dir = {:?}\ntriggers = [\"slowdown_zone\"]",
            dir.display().to_string()
        ))
        .unwrap(),
        reflex_telemetry::recorder::RecordingMeta {
            robot_id: "tick-test".into(),
            ..Default::default()
        },
        10.0,
        BEAMS,
        telemetry.clone(),
    )
    .unwrap();
    control.recorder = Some(recorder.tap(&control.safety).unwrap());
    control = control.with_telemetry(telemetry.clone());
    steady_ticks_do_not_allocate(control, channel);
    recorder.finish().unwrap();
    assert!(telemetry.ticks.load(Ordering::Relaxed) >= 10_000);
    // The obstacles of the run froze recordings (off the RT thread).
    let files = reflex_telemetry::upload::queued(&dir.join("queue")).unwrap();
    assert!(!files.is_empty(), "no recording written");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ten_thousand_ticks_reading_the_cloud_and_operator_inboxes_do_not_allocate() {
    let (control, channel) = control();
    let inboxes = reflex_rt::arbiter::Inboxes::default();
    let control = control
        .with_arbiter(
            &reflex_rt::arbiter::ArbiterConfig::default(),
            Some(&inboxes),
        )
        .unwrap();
    let mut seq = 0;
    let mut send = |now: u64| {
        // The cloud link's and a teleop's commands, off the RT thread; the tick pops them.
        seq += 1;
        let base = reflex_safety::Twist {
            vx_mps: 0.2,
            ..Default::default()
        };
        let cloud = reflex_rt::arbiter::CloudCommand {
            seq,
            t_ns: now,
            base,
            stop: false,
        };
        assert!(inboxes.cloud.try_send(cloud));
        if seq % 8 == 0 {
            let op = reflex_rt::arbiter::OperatorCommand { t_ns: now, base };
            assert!(inboxes.operator.try_send(op));
        }
    };
    let control = steady_ticks_with(control, channel, &mut send);
    assert!(
        control.stats.cloud_ticks > 1_000,
        "{:?}",
        control.stats.cloud_ticks
    );
}

fn steady_ticks_do_not_allocate(control: ControlLoop, channel: ChunkSender) {
    steady_ticks_with(control, channel, &mut |_| {});
}

/// 10,000 counted ticks; `between(now)` runs every 5th tick with counting off (what other
/// threads do). Returns the loop after the checks.
fn steady_ticks_with(
    mut control: ControlLoop,
    channel: ChunkSender,
    between: &mut dyn FnMut(u64),
) -> ControlLoop {
    let mut ranges = vec![f32::INFINITY; BEAMS];
    let mut now = 1_000_000_000u64;
    // Warm up (first merges, scan geometry cache).
    for i in 0..50 {
        now += PERIOD;
        if i % 5 == 0 {
            send_chunk(&channel, now - 30_000_000, 0.5);
        }
        control.tick(now, &inputs(now, &ranges), &fake_clock);
    }
    COUNTING.with(|c| c.set(true));
    let mut moving = 0;
    for i in 0..10_000u64 {
        now += PERIOD;
        // A chunk every 50 ms (the worker's rate), arriving 30 ms after its observation.
        if i % 5 == 0 {
            COUNTING.with(|c| c.set(false));
            send_chunk(&channel, now - 30_000_000, 0.5);
            between(now);
            COUNTING.with(|c| c.set(true));
        }
        // Obstacles come and go in front of the robot.
        let near = (i / 300) % 2 == 1;
        for r in ranges[350..370].iter_mut() {
            *r = if near { 0.6 } else { f32::INFINITY };
        }
        let verdict = control.tick(now, &inputs(now, &ranges), &fake_clock);
        moving += u32::from(verdict.command.base.vx_mps > 0.0);
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "the control tick allocated or freed"
    );
    assert!(
        moving > 1_000 && control.stats.chunks_merged >= 2_000,
        "{moving} {:?}",
        control.stats.chunks_merged
    );
    control
}

#[test]
fn an_obstacle_inside_the_protective_zone_zeroes_the_command_on_the_next_tick() {
    let (mut control, channel) = control();
    let mut ranges = vec![f32::INFINITY; BEAMS];
    let mut now = 1_000_000_000u64;
    let mut last = None;
    for i in 0..200 {
        now += PERIOD;
        if i % 5 == 0 {
            send_chunk(&channel, now - 30_000_000, 0.8);
        }
        last = Some(control.tick(now, &inputs(now, &ranges), &fake_clock));
    }
    assert!(last.unwrap().command.base.vx_mps > 0.7, "{last:?}");
    // A box 0.3 m ahead of the front (inside the ~0.46 m zone at 0.8 m/s) appears.
    for r in ranges[355..366].iter_mut() {
        *r = 0.35 + 0.3;
    }
    now += PERIOD;
    let v = control.tick(now, &inputs(now, &ranges), &fake_clock);
    assert_eq!(v.command.base.vx_mps, 0.0, "{v:?}");
    assert!(v.reasons.contains(reflex_safety::Reason::ProtectiveZone));
}

/// SAF-013: a reset alone never restarts motion. After the reset the policy keeps proposing
/// 0.3 m/s, and the verdict stays zero until an explicit start request arrives after it; a
/// start sent while latched does not count.
#[test]
fn saf_013_a_reset_never_restarts_motion_by_itself() {
    let (mut control, channel) = control();
    let ranges = vec![f32::INFINITY; BEAMS];
    let mut now = 1_000_000_000u64;
    let tick = |control: &mut ControlLoop, now: u64, reset: u64, start: u64| {
        let mut i = inputs(now, &ranges);
        i.reset_request_seq = reset;
        control.tick_with_start(now, &i, start, &fake_clock)
    };
    // Latched at start; a start request while latched is consumed and ignored.
    send_chunk(&channel, now, 0.3);
    let v = tick(&mut control, now, 0, 1);
    assert_eq!(v.command.base.vx_mps, 0.0);
    assert!(control.safety.is_latched());
    // Reset: the E-stop unlatches, but the robot waits for a start.
    for k in 0..50 {
        now += PERIOD;
        if k % 5 == 0 {
            send_chunk(&channel, now, 0.3);
        }
        let v = tick(&mut control, now, 1, 1);
        assert!(!control.safety.is_latched());
        assert_eq!(v.command.base.vx_mps, 0.0, "tick {k} after the reset moved");
        assert!(control.awaiting_start());
        assert_eq!(
            control.safety_state(&v),
            reflex_core::RunState::AwaitingStart
        );
    }
    // The start: motion (ramped up by the layer).
    let mut moved = false;
    for k in 0..50 {
        now += PERIOD;
        if k % 5 == 0 {
            send_chunk(&channel, now, 0.3);
        }
        let v = tick(&mut control, now, 1, 2);
        moved |= v.command.base.vx_mps > 0.0;
    }
    assert!(moved, "a start after the reset lets the robot move");
    assert!(!control.awaiting_start());
}

/// SAF-013 with `restart = "new_command"`: a command produced after the reset starts the
/// robot; actions computed before the reset do not.
#[test]
fn saf_013_new_command_mode_needs_a_command_made_after_the_reset() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/reflex.example.toml");
    let mut config = ReflexConfig::load(&path).unwrap();
    config.safety.estop.restart = reflex_safety::Restart::NewCommand;
    let (channel, chunk_rx) = chunk_channel(4, 20 * 3);
    let mut control = ControlLoop::new(
        Safety::new(config.safety).unwrap(),
        QueueConfig {
            dims: 3,
            horizon: 20,
            step_ns: 20_000_000,
            strategy: MergeStrategy::Latest,
            crossfade_steps: 5,
            ensemble_decay: 0.5,
            max_action_age_ns: 200_000_000,
            interpolation: reflex_rt::chunks::Interpolation::Hold,
        },
        &[
            ActionTarget::BaseVx,
            ActionTarget::BaseVy,
            ActionTarget::BaseWz,
        ],
        chunk_rx,
    );
    let ranges = vec![f32::INFINITY; BEAMS];
    let mut now = 1_000_000_000u64;
    // A chunk observed before the reset, then the reset.
    send_chunk(&channel, now, 0.3);
    let mut i = inputs(now, &ranges);
    i.reset_request_seq = 0;
    control.tick_with_start(now, &i, 0, &fake_clock);
    for _ in 0..10 {
        now += PERIOD;
        let v = control.tick_with_start(now, &inputs(now, &ranges), 0, &fake_clock);
        assert_eq!(
            v.command.base.vx_mps, 0.0,
            "an action from before the reset"
        );
    }
    // A chunk observed after the reset: motion.
    let mut moved = false;
    for k in 0..30 {
        now += PERIOD;
        if k == 0 {
            send_chunk(&channel, now, 0.3);
        }
        let v = control.tick_with_start(now, &inputs(now, &ranges), 0, &fake_clock);
        moved |= v.command.base.vx_mps > 0.0;
    }
    assert!(moved);
}

/// A cloud answer's whole chunk is executed by its observation time from the loop's cloud
/// queue: an answer arriving 100 ms after its observation starts at its step for now (the
/// steps already past are dropped), its later steps run in turn (here: 0.1 m/s, then a stop
/// at 160 ms after arrival), and when it runs out (300 ms after arrival, well inside its 1 s age
/// limit) the local policy (here: −0.02 m/s all along) takes over again. Each check fails if
/// the chunk were executed from its arrival or only its first step were.
#[test]
fn a_cloud_chunk_runs_step_by_step_from_its_observation_time_then_the_local_policy_takes_over() {
    let (control, local) = control();
    let (cloud, cloud_rx) = chunk_channel(4, 20 * 3);
    let mut queue = *control.queue.config();
    queue.max_action_age_ns = 1_000_000_000;
    let mut control = control.with_cloud_chunks(queue, cloud_rx);
    let ranges = vec![f32::INFINITY; BEAMS];
    let arrival = 2_000_000_000u64;
    let t_obs = arrival - 100_000_000;
    // 20 steps of 20 ms: 0.3 m/s for the first 100 ms (past when it arrives), 0.1 m/s to
    // 260 ms, then 0.
    let mut actions = [0.0f32; 20 * 3];
    for (k, step) in actions.chunks_mut(3).enumerate() {
        step[0] = match k {
            0..5 => 0.3,
            5..13 => 0.1,
            _ => 0.0,
        };
    }
    let start = arrival - 50 * PERIOD;
    let mut now = start;
    let mut vx_at = std::collections::BTreeMap::new();
    let mut cloud_at = std::collections::BTreeMap::new();
    while now <= arrival + 400_000_000 {
        // The local policy's chunk every 100 ms, 10 ms after its observation.
        if (now - start).is_multiple_of(100_000_000) {
            send_chunk(&local, now - 10_000_000, -0.02);
        }
        if now == arrival {
            assert!(cloud.try_send(t_obs, &actions, 0));
        }
        let before = control.stats.cloud_ticks;
        let v = control.tick(now, &inputs(now, &ranges), &fake_clock);
        let ms = (now as i64 - arrival as i64) / 1_000_000;
        vx_at.insert(ms, v.command.base.vx_mps);
        cloud_at.insert(ms, control.stats.cloud_ticks > before);
        now += PERIOD;
    }
    // Before the answer the local policy drives.
    assert!(!cloud_at[&-10], "no cloud before its answer");
    assert!((vx_at[&-10] + 0.02).abs() < 1e-6, "local: {}", vx_at[&-10]);
    // The steps before now were dropped on arrival: 5 of them.
    let q = control.cloud_queue().unwrap();
    assert_eq!(q.stats.actions_late_on_arrival, 5, "{:?}", q.stats);
    assert_eq!(q.stats.actions_dropped_stale, 0, "{:?}", q.stats);
    // 0.1 m/s, reached at the 1 m/s² limit (from −0.02 in 120 ms), never 0.3's ramp beyond it.
    for ms in [130, 150] {
        assert!(cloud_at[&ms], "{ms} ms");
        assert!((vx_at[&ms] - 0.1).abs() < 1e-6, "{ms} ms: {}", vx_at[&ms]);
    }
    assert!(vx_at.values().all(|v| *v <= 0.1 + 1e-6), "{vx_at:?}");
    // The chunk's stop, 160 ms after arrival (260 ms after its observation), braked to 0.
    assert!(cloud_at[&270], "still the cloud's chunk");
    assert!(vx_at[&270].abs() < 1e-6, "270 ms: {}", vx_at[&270]);
    // Run out 300 ms after arrival (its last step's end, not its age): the local policy again.
    assert!(cloud_at[&290], "290 ms");
    assert!(!cloud_at[&310], "the chunk ended at 300 ms");
    assert!(
        (vx_at[&360] + 0.02).abs() < 1e-6,
        "local again: {}",
        vx_at[&360]
    );
}

#[test]
fn ten_thousand_ticks_executing_cloud_chunks_do_not_allocate() {
    let (control, channel) = control();
    let (cloud, cloud_rx) = chunk_channel(4, 20 * 3);
    let queue = *control.queue.config();
    let control = control.with_cloud_chunks(queue, cloud_rx);
    let mut send = |now: u64| {
        // An answer every 50 ms, 60 ms after its observation, off the RT thread.
        send_chunk(&cloud, now - 60_000_000, 0.2);
    };
    let control = steady_ticks_with(control, channel, &mut send);
    assert!(
        control.stats.cloud_ticks > 5_000,
        "{:?}",
        control.stats.cloud_ticks
    );
    // And on /metrics.
    let scraped = control.telemetry.render();
    let line = scraped
        .lines()
        .find(|l| l.starts_with("reflex_cloud_ticks_total "))
        .unwrap_or_else(|| panic!("{scraped}"));
    assert_eq!(
        line,
        format!("reflex_cloud_ticks_total {}", control.stats.cloud_ticks)
    );
}
