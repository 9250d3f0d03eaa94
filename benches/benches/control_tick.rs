//! Criterion: one control tick without inference (chunk merge when one arrived, action for now,
//! safety evaluate on a 720-beam scan, timing). Target p99 <= 20 µs (see reflex-bench loop for
//! the per-tick tail).

use criterion::{Criterion, criterion_group, criterion_main};
use reflex_benches::looping::LoopBench;

fn control_tick(c: &mut Criterion) {
    let mut bench = LoopBench::new().expect("example config");
    let mut now = 1_000_000_000u64;
    let mut i = 0u64;
    c.bench_function("control_tick/720_beams", |b| {
        b.iter(|| {
            now += 10_000_000;
            i += 1;
            if i.is_multiple_of(5) {
                LoopBench::feed(&bench.channel, now - 30_000_000);
            }
            bench.tick(now, &|| 0)
        })
    });
}

/// The same tick feeding the flight recorder's RT tap (a copy of inputs, proposal, state and
/// verdict per tick, a 720-beam scan copy per new scan) with the recorder thread draining.
fn control_tick_recording(c: &mut Criterion) {
    let mut bench = LoopBench::new().expect("example config");
    let dir = std::env::temp_dir().join(format!("reflex-bench-rec-{}", std::process::id()));
    let recorder = reflex_telemetry::recorder::Recorder::start(
        toml::from_str(&format!(
            "dir = {:?}\ntriggers = []",
            dir.display().to_string()
        ))
        .expect("recorder config"),
        Default::default(),
        10.0,
        720,
        Default::default(),
    )
    .expect("recorder");
    bench.control.recorder = Some(recorder.tap(&bench.control.safety).expect("tap"));
    let mut now = 1_000_000_000u64;
    let mut i = 0u64;
    c.bench_function("control_tick/720_beams_recording", |b| {
        b.iter(|| {
            now += 10_000_000;
            i += 1;
            if i.is_multiple_of(5) {
                LoopBench::feed(&bench.channel, now - 30_000_000);
            }
            bench.tick(now, &|| 0)
        })
    });
    recorder.finish().expect("recorder");
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, control_tick, control_tick_recording);
criterion_main!(benches);
