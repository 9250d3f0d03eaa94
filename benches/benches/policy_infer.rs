//! Criterion: one policy inference through Reflex (`OrtBackend::infer`) next to a bare `ort`
//! session on the same model and inputs, for the tiny MLP and the demo VLA. Needs
//! ORT_DYLIB_PATH (scripts/setup-python). Python onnxruntime on the same models:
//! `bash scripts/bench-infer`.

use criterion::{Criterion, criterion_group, criterion_main};
use reflex_benches::infer::{InferBench, MODELS};
use std::hint::black_box;

fn policy_infer(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_infer");
    for name in MODELS {
        let mut bench = InferBench::new(name).expect("set up: run scripts/setup-python first");
        group.bench_function(format!("{name}/reflex"), |b| {
            b.iter(|| bench.reflex_infer().unwrap())
        });
        group.bench_function(format!("{name}/bare_ort"), |b| {
            b.iter(|| black_box(bench.bare_infer().unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, policy_infer);
criterion_main!(benches);
