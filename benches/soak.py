#!/usr/bin/env python3
"""Soak of the real `reflex run --io dds` binary against a robot played over Cyclone DDS (PyPI
`cyclonedds`, the robot of runtime/tests/dds/harness.py): resident memory for the whole run, and
end-to-end E-stop latency on the wire.

- The robot publishes /scan (25 Hz, 360 beams), /camera/image_raw (20 Hz) and the instruction;
  Reflex drives the demo VLA and publishes /cmd_vel every tick (100 Hz).
- The flight recorder is on, triggered by the E-stop: every press writes an MCAP recording, so
  the soak also exercises the recorder's freeze-and-write path. Prometheus metrics are served and
  scraped every 10 s.
- Every ~4 s, while the robot moves, the peer presses the E-stop (`/reflex/estop` true) at a
  random phase and times the first /cmd_vel with zero velocity it receives (stop category 0: the
  command goes to zero at once). Then it releases and resets. The time includes DDS both ways,
  Reflex's I/O thread (at the loop period), the RT tick, and this peer's 0.5 ms polling.
- VmRSS of the process is sampled every second from /proc/PID/status.

    soak.py --reflex target/release/reflex --seconds 600 [--json FILE]
"""
import argparse
import importlib.util
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
spec = importlib.util.spec_from_file_location("harness", REPO / "runtime/tests/dds/harness.py")
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    """/cmd_vel samples with their receive time, polled every 0.5 ms."""

    def __init__(self, robot):
        self.robot = robot
        self.samples = []  # (monotonic, vx)
        self.lock = threading.Lock()

    def run(self):
        while not self.robot.stop.is_set():
            got = [s for s in self.robot.cmd_r.take(100) if isinstance(s, harness.Twist)]
            if got:
                now = time.monotonic()
                with self.lock:
                    self.samples.extend((now, s.linear.x) for s in got)
                    del self.samples[:-2000]
            time.sleep(0.0005)

    def first_after(self, t0, pred, timeout):
        end = time.monotonic() + timeout
        while True:
            with self.lock:
                for t, vx in self.samples:
                    if t >= t0 and pred(vx):
                        return t - t0
            if time.monotonic() >= end:
                return None
            time.sleep(0.0005)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reflex", required=True, help="a reflex binary built with --features dds")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--json")
    a = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="reflex-soak-"))
    base = (REPO / "runtime/tests/dds/reflex_dds.toml").read_text()
    if "stop_category = 1" not in base:
        sys.exit("soak.py: runtime/tests/dds/reflex_dds.toml no longer says stop_category = 1; update soak.py")
    port = free_port()
    config = work / "reflex_soak.toml"
    config.write_text(
        base.replace("stop_category = 1", "stop_category = 0")
        + f'\n[telemetry]\nmetrics_bind = "127.0.0.1:{port}"\n'
        + f'\n[recorder]\ndir = "{work / "rec"}"\nwindow_s = 2.0\npost_s = 0.5\n'
        + 'triggers = ["estop_ros_topic"]\nmax_disk_mb = 50.0\nrobot_id = "soak"\n'
    )
    domain = random.randint(1, 200)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    robot = harness.Robot(domain)
    listener = Listener(robot)
    robot.threads = [
        threading.Thread(target=robot._scans, daemon=True),
        threading.Thread(target=robot._images, daemon=True),
        threading.Thread(target=listener.run, daemon=True),
    ]
    robot.estop_w.write(harness.Bool(data=False))
    robot.start()
    log = open(work / "reflex.log", "w")
    proc = subprocess.Popen(
        [a.reflex, "run", "--io", "dds", "--config", str(config),
         "--policy", str(REPO / "models/demo/reflex-demo-vla"), "--duration", str(a.seconds + 60)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    rss, presses, scrapes = [], [], 0
    try:
        t0 = time.monotonic()
        while listener.first_after(t0, lambda vx: True, 0.1) is None:
            if proc.poll() is not None or time.monotonic() - t0 > 30:
                sys.exit(f"soak.py: reflex never published /cmd_vel; log: {work / 'reflex.log'}")
        robot.instr_w.write(harness.String(data="go to the red marker"))
        robot.reset_w.write(harness.Empty())
        start = time.monotonic()
        next_press = start + 5.0
        next_scrape = start
        while time.monotonic() - start < a.seconds:
            if proc.poll() is not None:
                sys.exit(f"soak.py: reflex exited with {proc.returncode}; log: {work / 'reflex.log'}")
            now = time.monotonic()
            rss.append((round(now - start, 2), rss_kb(proc.pid)))
            if now >= next_scrape:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                scrapes += bool(body)
                next_scrape = now + 10.0
            if now >= next_press:
                moving = listener.first_after(time.monotonic(), lambda vx: vx > 0.05, 3.0)
                if moving is not None:
                    time.sleep(random.uniform(0.0, 0.010))
                    pressed = time.monotonic()
                    robot.estop_w.write(harness.Bool(data=True))
                    dt = listener.first_after(pressed, lambda vx: abs(vx) < 1e-6, 2.0)
                    presses.append(None if dt is None else dt * 1e3)
                    time.sleep(0.3)
                    robot.estop_w.write(harness.Bool(data=False))
                    time.sleep(0.1)
                    robot.reset_w.write(harness.Empty())
                next_press = time.monotonic() + random.uniform(3.0, 5.0)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    finally:
        robot.stop.set()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    recordings = list((work / "rec" / "queue").glob("*.mcap")) if (work / "rec" / "queue").is_dir() else []
    missed = sum(1 for p in presses if p is None)
    lat = sorted(p for p in presses if p is not None)
    at = lambda q: lat[int(round((len(lat) - 1) * q))] if lat else None
    # Warm-up: the first minute (a quarter of a short run) — allocator pools, DDS discovery, the
    # recorder's first file. Growth = mean of the last minute minus mean of the minute after it.
    w = min(60.0, a.seconds / 4)
    warm = [kb for t, kb in rss if t >= w] or [kb for _, kb in rss]
    first_min = [kb for t, kb in rss if w <= t < 2 * w] or warm[:60]
    last_min = [kb for t, kb in rss if t >= a.seconds - w] or warm[-60:]
    result = {
        "seconds": a.seconds,
        "rss_samples_kb": rss,
        "rss_start_kb": rss[0][1] if rss else None,
        "warmup_s": w,
        "rss_after_warmup_min_kb": min(warm),
        "rss_after_warmup_max_kb": max(warm),
        "rss_spread_after_warmup_mb": (max(warm) - min(warm)) / 1024,
        "rss_growth_mb": (sum(last_min) / len(last_min) - sum(first_min) / len(first_min)) / 1024,
        "estop_presses": len(presses),
        "estop_no_stop_within_2s": missed,
        "estop_to_zero_ms": {"p50": at(0.5), "p99": at(0.99), "max": lat[-1] if lat else None,
                             "min": lat[0] if lat else None},
        "estop_to_zero_samples_ms": lat,
        "metrics_scrapes": scrapes,
        "recordings_written": len(recordings),
        "log": str(work / "reflex.log"),
    }
    print(f"soak {a.seconds:.0f} s: RSS {result['rss_after_warmup_min_kb']}..{result['rss_after_warmup_max_kb']} kB "
          f"after 60 s (spread {result['rss_spread_after_warmup_mb']:.2f} MB, growth {result['rss_growth_mb']:+.2f} MB); "
          f"E-stop to zero command p50/p99/max {at(0.5)}/{at(0.99)}/{lat[-1] if lat else None} ms over "
          f"{len(presses)} presses ({missed} without a stop in 2 s); {len(recordings)} recordings, {scrapes} scrapes")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f)
    if missed:
        sys.exit(f"soak.py: {missed} E-stop presses gave no zero command within 2 s")


if __name__ == "__main__":
    main()
