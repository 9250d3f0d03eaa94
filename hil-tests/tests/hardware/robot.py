#!/usr/bin/env python3
"""A robot and its people for `reflex-hil hardware --io dds`, on PyPI `cyclonedds` (the DDS
ROS 2 ships) with the ROS 2 IDL types: the hardware mode end to end without hardware.

The robot: a holonomic base that follows /cmd_vel (100 Hz integration), a 360-beam lidar at
25 Hz ray-cast against the scenario's walls and posts (its set-up), the E-stop topic (latched,
released at start). The people: read the runner's PROMPT lines and do what they say after a
human reaction time (press/release the E-stop on /reflex/estop, reset on /reflex/estop_reset).

    robot.py --reflex-hil target/debug/reflex-hil --scenario S.toml --config C.toml [--ignore KIND]

`--ignore EstopPressed` plays a person who does not press the E-stop when asked (the
negative control: the runner must then report a failed check and exit 1). Exit: the runner's.
"""
import argparse
import math
import os
import pathlib
import random
import subprocess
import sys
import threading
import time
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "runtime/tests/dds"))

from harness import (  # noqa: E402  (the ROS 2 IDL types and QoS of the dds interop test)
    LATCHED,
    RELIABLE,
    SENSOR,
    Bool,
    Empty,
    Header,
    LaserScan,
    Twist,
)
from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402

BEAMS = 360
REACTION_S = 0.15  # a person's reaction to a prompt


class World:
    def __init__(self, scenario):
        self.segments = []
        self.circles = []
        for o in scenario.get("obstacles", []):
            if o["kind"] == "wall":
                self.segments.append((tuple(o["from"]), tuple(o["to"])))
            elif o["kind"] in ("circle", "marker") and "active_s" not in o:
                self.circles.append((tuple(o["center"]), o["radius_m"]))

    def raycast(self, ox, oy, dx, dy):
        best = math.inf
        for (ax, ay), (bx, by) in self.segments:
            ex, ey = bx - ax, by - ay
            den = dx * ey - dy * ex
            if abs(den) < 1e-12:
                continue
            t = ((ax - ox) * ey - (ay - oy) * ex) / den
            u = ((ax - ox) * dy - (ay - oy) * dx) / den
            if t > 0 and 0 <= u <= 1:
                best = min(best, t)
        for (cx, cy), r in self.circles:
            fx, fy = ox - cx, oy - cy
            b = fx * dx + fy * dy
            c = fx * fx + fy * fy - r * r
            disc = b * b - c
            if disc >= 0:
                t = -b - math.sqrt(disc)
                if t > 0:
                    best = min(best, t)
        return best


class Robot:
    def __init__(self, domain, world):
        self.dp = DomainParticipant(domain)
        self.world = world
        self.scan_w = DataWriter(self.dp, Topic(self.dp, "rt/scan", LaserScan), qos=SENSOR)
        self.estop_w = DataWriter(self.dp, Topic(self.dp, "rt/reflex/estop", Bool), qos=LATCHED)
        self.reset_w = DataWriter(
            self.dp, Topic(self.dp, "rt/reflex/estop_reset", Empty), qos=RELIABLE
        )
        self.cmd_r = DataReader(self.dp, Topic(self.dp, "rt/cmd_vel", Twist), qos=RELIABLE)
        self.pose = [0.0, 0.0, 0.0]
        self.cmd = (0.0, 0.0, 0.0)
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def start(self):
        for f in (self._plant, self._lidar):
            threading.Thread(target=f, daemon=True).start()

    def _plant(self):
        last = time.monotonic()
        while not self.stop.is_set():
            for s in self.cmd_r.take(100):
                if isinstance(s, Twist):
                    self.cmd = (s.linear.x, s.linear.y, s.angular.z)
            now = time.monotonic()
            dt, last = now - last, now
            vx, vy, wz = self.cmd
            with self.lock:
                x, y, yaw = self.pose
                c, s_ = math.cos(yaw), math.sin(yaw)
                self.pose = [x + (c * vx - s_ * vy) * dt, y + (s_ * vx + c * vy) * dt, yaw + wz * dt]
            time.sleep(0.01)

    def _lidar(self):
        inc = 2 * math.pi / BEAMS
        while not self.stop.is_set():
            with self.lock:
                x, y, yaw = self.pose
            ranges = []
            for i in range(BEAMS):
                a = yaw - math.pi + i * inc
                r = self.world.raycast(x, y, math.cos(a), math.sin(a))
                ranges.append(r + random.gauss(0.0, 0.005) if r < 30.0 else math.inf)
            self.scan_w.write(
                LaserScan(
                    header=Header(frame_id="laser"),
                    angle_min=-math.pi,
                    angle_max=math.pi - inc,
                    angle_increment=inc,
                    time_increment=0.0,
                    scan_time=0.04,
                    range_min=0.05,
                    range_max=30.0,
                    ranges=ranges,
                    intensities=[],
                )
            )
            time.sleep(0.04)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reflex-hil", required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--ignore", action="append", default=[])
    a = ap.parse_args()
    scenario = tomllib.loads(pathlib.Path(a.scenario).read_text())
    domain = random.randint(1, 200)
    robot = Robot(domain, World(scenario))
    robot.estop_w.write(Bool(data=False))  # released; the runner prompts the reset
    robot.start()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    proc = subprocess.Popen(
        [a.reflex_hil, "hardware", a.scenario, "--io", "dds", "--config", a.config,
         "--operator", "auto"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )

    def act(line):
        time.sleep(REACTION_S)
        if line.startswith("reset:"):
            # The start-up reset: pressed again until the robot drives (as a person would,
            # while the robot's E-stop state is still being discovered).
            for _ in range(4):
                robot.reset_w.write(Empty())
                time.sleep(0.5)
        elif "EstopPressed" in line:
            robot.estop_w.write(Bool(data=True))
        elif "EstopReleased" in line:
            robot.estop_w.write(Bool(data=False))
        elif line.startswith("Reset"):
            robot.reset_w.write(Empty())

    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("PROMPT NOW"):
            what = line.split(": ", 1)[1]
            if any(k in what for k in a.ignore):
                print(f"(person ignores: {what.strip()})", flush=True)
                continue
            threading.Thread(target=act, args=(what,), daemon=True).start()
    code = proc.wait()
    robot.stop.set()
    sys.exit(code)


if __name__ == "__main__":
    main()
