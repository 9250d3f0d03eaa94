//! Criterion: `Safety::evaluate` over 360, 1081 and 2048-beam scans, obstacles out of and in
//! the zones. Target on the 2-core dev machine: median <= 5 µs for 2048 beams.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use reflex_benches::{SafetyBench, ScanCase};
use std::hint::black_box;

fn safety_evaluate(c: &mut Criterion) {
    let mut group = c.benchmark_group("safety_evaluate");
    for beams in [360usize, 1081, 2048] {
        for case in ScanCase::ALL {
            let mut bench = SafetyBench::new(beams, case);
            group.bench_with_input(BenchmarkId::new(case.name(), beams), &beams, |b, _| {
                b.iter(|| black_box(bench.tick()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, safety_evaluate);
criterion_main!(benches);
