#!/usr/bin/env python3
"""The peer: Reflex's control task written the way LeRobot users run a policy on a robot.

One Python loop does everything, paced like LeRobot's `record_loop`/`busy_wait` on Linux:

    start = time.perf_counter()
    ... observe, infer (when the action queue is empty), check, act ...
    time.sleep(max(period - (time.perf_counter() - start), 0))

The work per tick mirrors `reflex-bench loop` (benches/src/looping.rs): a 720-beam room scan, the
policy's action chunk queue (the tiny MLP of models/demo, 20 actions per chunk, run through
Python onnxruntime on one thread when the queue is empty, as LeRobot's `select_action` does) and
numpy safety checks of the demo robot (launch/reflex.example.toml): invalid beams, scan age,
protective and slow-down zones around the 0.70 m x 0.50 m footprint, velocity and acceleration
limits.

Lateness of tick k = start_k - (start_{k-1} + period): how late the tick began against the
deadline this pacing aims at. A deadline miss is a tick that began a whole period late or more.
Tick cost = the work between start and sleep. Every sample is kept.

    peer_loop.py --period-ms 10 --seconds 60 [--json FILE]
"""
import argparse
import json
import math
import os
import sys
import time
from collections import deque

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
BEAMS = 720
# launch/reflex.example.toml
FOOTPRINT_X, FOOTPRINT_Y = 0.35, 0.25
MARGIN_M, SLOWDOWN_DEPTH_M = 0.10, 0.8
SCAN_MAX_AGE_S = 0.100
RANGE_MIN, RANGE_MAX = 0.05, 30.0
MAX_INVALID_FRACTION = 0.2
LIMITS = np.array([1.0, 0.5, 1.2])
ACCEL = np.array([1.0, 1.0, 2.0])
MIN_POINTS = 3


def sparse_hist(sorted_samples, bin_width, unit):
    """[bin start / unit, count] for every non-empty bin, as `reflex-bench` writes it."""
    starts = (sorted_samples // bin_width) * bin_width // unit
    values, counts = np.unique(starts, return_counts=True)
    return [[int(v), int(c)] for v, c in zip(values, counts)]


def tail(sorted_samples):
    at = lambda q: int(sorted_samples[int(round((len(sorted_samples) - 1) * q))])
    return {"samples": len(sorted_samples), "p50_ns": at(0.5), "p99_ns": at(0.99),
            "p999_ns": at(0.999), "max_ns": int(sorted_samples[-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period-ms", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--hog", action="store_true", help="only labels the result; the caller runs the hog")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not 0.1 <= a.period_ms <= 1000:
        sys.exit(f"--period-ms {a.period_ms}: use 0.1 to 1000 ms")
    period = a.period_ms / 1e3
    n = int(round(a.seconds / period))

    pkg = os.path.join(HERE, "..", "models", "demo", "tiny-mlp")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(pkg, "model.onnx"), opts,
                                providers=["CPUExecutionProvider"])
    state = (0.1 * np.arange(16, dtype=np.float32)).reshape(1, 16)

    # A 6 m x 8 m room around the robot (the scan of benches/src/looping.rs).
    angles = -math.pi + np.arange(BEAMS) * (2 * math.pi / BEAMS)
    with np.errstate(divide="ignore"):
        ranges = np.minimum(3.0 / np.abs(np.cos(angles)), 4.0 / np.abs(np.sin(angles))).astype(np.float32)
    cos_a, sin_a = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)

    queue = deque()
    last_cmd = np.zeros(3)
    lateness = np.empty(n, dtype=np.int64)
    cost = np.empty(n, dtype=np.int64)
    stops = 0
    prev_start = None
    for k in range(n):
        start = time.perf_counter_ns()
        lateness[k] = 0 if prev_start is None else start - (prev_start + int(period * 1e9))
        prev_start = start
        # Observe: the newest scan (stamped now) and the robot state.
        scan_stamp = time.monotonic()
        # Policy: a new chunk when the queue ran dry.
        if not queue:
            chunk = sess.run(None, {"state": state})[0][0]
            queue.extend(chunk)
        action = np.asarray(queue.popleft(), dtype=np.float64)
        # Safety checks with numpy.
        valid = np.isfinite(ranges) & (ranges >= RANGE_MIN) & (ranges <= RANGE_MAX)
        stop = False
        if 1.0 - valid.mean() > MAX_INVALID_FRACTION:
            stop = True
        if time.monotonic() - scan_stamp > SCAN_MAX_AGE_S:
            stop = True
        r = np.where(valid, ranges, np.inf)
        x, y = r * cos_a, r * sin_a
        dx = np.maximum(np.abs(x) - FOOTPRINT_X, 0.0)
        dy = np.maximum(np.abs(y) - FOOTPRINT_Y, 0.0)
        clearance = np.hypot(dx, dy)
        if np.count_nonzero(clearance < MARGIN_M) >= MIN_POINTS:
            stop = True
        scale = 1.0
        near = np.count_nonzero(clearance < MARGIN_M + SLOWDOWN_DEPTH_M)
        if near >= MIN_POINTS:
            scale = float(np.clip((np.sort(clearance)[MIN_POINTS - 1] - MARGIN_M) / SLOWDOWN_DEPTH_M, 0, 1))
        if not np.all(np.isfinite(action)):
            stop = True
        cmd = np.zeros(3) if stop else np.clip(action * scale, -LIMITS, LIMITS)
        step = ACCEL * period
        cmd = np.clip(cmd, last_cmd - step, last_cmd + step)
        last_cmd = cmd
        stops += stop
        # Act: the command goes to the robot (here: kept).
        cost[k] = time.perf_counter_ns() - start
        dt = (time.perf_counter_ns() - start) / 1e9
        if period - dt > 0:
            time.sleep(period - dt)

    late = np.sort(lateness[1:])
    c = np.sort(cost)
    misses = int(np.count_nonzero(late >= int(period * 1e9)))
    row = {
        "period_ms": a.period_ms,
        "seconds": a.seconds,
        "hog": a.hog,
        "deadline_misses": misses,
        "ticks": n,
        "stop_ticks": int(stops),
        "lateness": tail(np.maximum(late, 0)),
        "tick_cost": tail(c),
        "lateness_hist_us": sparse_hist(np.maximum(late, 0), 1000, 1000),
        "tick_cost_hist_100ns": sparse_hist(c, 100, 1),
    }
    print(f"python peer {a.period_ms} ms hog={a.hog}: misses {misses}, lateness p50/p99/p99.9/max "
          f"{row['lateness']['p50_ns']}/{row['lateness']['p99_ns']}/{row['lateness']['p999_ns']}/"
          f"{row['lateness']['max_ns']} ns, tick p50/p99 {row['tick_cost']['p50_ns']}/"
          f"{row['tick_cost']['p99_ns']} ns")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(row, f)


if __name__ == "__main__":
    main()
