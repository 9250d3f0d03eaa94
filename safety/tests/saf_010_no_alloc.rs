//! SAF-010: zero heap allocations in 10,000 steady-state `evaluate` calls, counted by a global
//! allocator on this thread only (the test harness's own threads are not counted).

mod common;

use common::*;
use reflex_safety::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

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
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
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

#[test]
fn saf_010_evaluate_does_not_allocate() {
    // The test rig, then the same with the arm's kinematics, workspace and keep-out (SAF-016),
    // then with speed and separation monitoring (SAF-017) on the base's lidar and alone.
    for cfg in [config(), zoned(true), separated(false), separated(true)] {
        evaluate_10_000_times(cfg);
        ALLOCATIONS.store(0, Ordering::Relaxed);
    }
}

fn evaluate_10_000_times(cfg: SafetyConfig) {
    // An end-effector target is refused with a kinematic chain (SAF-016): sent only without.
    let ee_target = cfg.arm.as_ref().is_some_and(|a| a.kinematics.is_none());
    let cfg_has_base = cfg.base.is_some();
    let mut rig = Rig::started(cfg);
    // Warm-up fills the beam trigonometry cache (once per scan geometry, at start-up).
    rig.drive_for(10, if cfg_has_base { 0.3 } else { 0.0 }, 0.0, 0.0);

    COUNTING.with(|c| c.set(true));
    let mut stops = 0u32;
    let config = rig.safety.config();
    let separation = config.arm.as_ref().is_some_and(|a| a.separation.is_some());
    let base = config.base.is_some();
    let mut separation_verdicts = 0u32;
    for tick in 0..10_000u32 {
        // A pedestrian walking across in front, noise, E-stop cycles, arm and base commands.
        let phase = (tick % 400) as f32 / 400.0;
        rig.clear_scan();
        rig.obstacle(-1.2 + 2.4 * phase, 0.4 + 2.0 * phase, 4);
        if separation {
            // Someone beside the arm, near enough to slow or stop it.
            rig.obstacle(0.2, 0.6 + 0.4 * phase, 3);
        }
        if tick % 7 == 0 {
            rig.ranges[(tick as usize * 13) % BEAMS] = f32::NAN;
        }
        if tick % 1_000 == 500 {
            rig.press(EstopSource::RosTopic);
        } else if tick % 1_000 == 520 {
            rig.release(EstopSource::RosTopic);
            rig.reset();
        }
        let mut command = arm_command([Some(0.5 * phase as f64), None], [None, Some(0.2)]);
        if base {
            command.base = Twist {
                vx_mps: 0.8,
                vy_mps: 0.2 * (phase as f64 - 0.5),
                wz_radps: 0.5,
            };
        }
        command.gripper_position = Some(0.04);
        if ee_target {
            command.ee_target_m = Some([0.5, 0.0, 0.4]);
        }
        let verdict = rig.step(command);
        stops += u32::from(verdict.action >= Action::Stop);
        separation_verdicts += u32::from(
            verdict.reasons.contains(Reason::ArmSeparation)
                || verdict.reasons.contains(Reason::ArmSeparationSlow),
        );
    }
    COUNTING.with(|c| c.set(false));

    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0, "evaluate allocated");
    // The loop exercised the stop paths too, not only the pass path.
    assert!(stops > 100, "{stops}");
    // With SAF-017 the pedestrian slowed or stopped the arm (its path was measured).
    assert!(
        !separation || separation_verdicts > 100,
        "{separation_verdicts}"
    );
}
