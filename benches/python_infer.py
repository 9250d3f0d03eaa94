#!/usr/bin/env python3
"""Per-call latency of Python onnxruntime on Reflex's demo packages, the way LeRobot-style
Python stacks run a policy: numpy inputs, InferenceSession.run, one thread.

Usage: python benches/python_infer.py [--calls N] [--json FILE]
"""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["tiny-mlp", "reflex-demo-vla"]
DTYPES = {"uint8": np.uint8, "float32": np.float32, "int64": np.int64}


def feeds_for(manifest):
    feeds = {}
    for spec in manifest["inputs"]:
        n = int(np.prod(spec["shape"]))
        if spec["role"] == "image":
            values = (np.arange(n) * 31 % 251).astype(DTYPES[spec["dtype"]])
        elif spec["role"] == "state":
            values = (0.1 * np.arange(n)).astype(np.float32)
        else:
            vocab = manifest["instruction_vocabulary"]
            ids = [vocab.index(w) for w in "go to the red marker".split()]
            values = np.array(ids + [0] * (n - len(ids)), dtype=np.int64)
        feeds[spec["name"]] = values.reshape(spec["shape"])
    return feeds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--json")
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    rows = []
    print(f"{'model':<16} {'path':<8} {'p50_ns':>9} {'p99_ns':>9} {'p99.9_ns':>9} {'max_ns':>9}")
    for name in MODELS:
        pkg = os.path.join(HERE, "..", "models", "demo", name)
        manifest = json.load(open(os.path.join(pkg, "policy.json")))
        sess = ort.InferenceSession(os.path.join(pkg, "model.onnx"), opts, providers=["CPUExecutionProvider"])
        feeds = feeds_for(manifest)
        for _ in range(max(args.calls // 10, 100)):
            sess.run(None, feeds)
        samples = np.empty(args.calls, dtype=np.int64)
        for i in range(args.calls):
            t0 = time.perf_counter_ns()
            sess.run(None, feeds)
            samples[i] = time.perf_counter_ns() - t0
        samples.sort()
        at = lambda q: int(samples[int(round((len(samples) - 1) * q))])
        row = {"model": name, "path": "python", "samples": len(samples), "p50_ns": at(0.5),
               "p99_ns": at(0.99), "p999_ns": at(0.999), "max_ns": int(samples[-1])}
        rows.append(row)
        print(f"{name:<16} {'python':<8} {row['p50_ns']:>9} {row['p99_ns']:>9} {row['p999_ns']:>9} {row['max_ns']:>9}")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=2)
        print("wrote", args.json)


if __name__ == "__main__":
    main()
