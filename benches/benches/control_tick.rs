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

criterion_group!(benches, control_tick);
criterion_main!(benches);
