#!/usr/bin/env python3
"""Black-box ROS 2 wire test of `reflex run --io dds` with PyPI `cyclonedds` (the DDS ROS 2
ships) and the ROS 2 IDL types, on DDS topics named as ROS 2 names them (`rt/scan`, …).

The harness is the whole robot: it publishes /scan, /camera/image_raw, /reflex/instruction,
/reflex/estop (reliable, transient-local) and /reflex/estop_reset, and listens to /cmd_vel.

    harness.py --reflex target/debug/reflex [--wrong-scan-type]

Checks: an E-stop latched before Reflex starts keeps it stopped; after release + reset a clear
path gives motion; an obstacle ahead gives a stop; the E-stop topic gives a stop; a scan
publisher process that is SIGKILLed gives a stop within the configured scan max age (+ braking).
`--wrong-scan-type` is the negative control: scans published under a wrong type name never
reach Reflex, so the motion check must fail (exit 3).
"""
import argparse
import math
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import cyclonedds.idl.types as t
from cyclonedds.core import Policy, Qos
from cyclonedds.util import duration
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: t.int32 = 0
    nanosec: t.uint32 = 0


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class LaserScan(IdlStruct, typename="sensor_msgs::msg::dds_::LaserScan_"):
    header: Header
    angle_min: t.float32
    angle_max: t.float32
    angle_increment: t.float32
    time_increment: t.float32
    scan_time: t.float32
    range_min: t.float32
    range_max: t.float32
    ranges: t.sequence[t.float32]
    intensities: t.sequence[t.float32]


@dataclass
class WrongScan(IdlStruct, typename="sensor_msgs::msg::dds_::LaserScanX_"):
    header: Header
    angle_min: t.float32
    angle_max: t.float32
    angle_increment: t.float32
    time_increment: t.float32
    scan_time: t.float32
    range_min: t.float32
    range_max: t.float32
    ranges: t.sequence[t.float32]
    intensities: t.sequence[t.float32]


@dataclass
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header
    height: t.uint32
    width: t.uint32
    encoding: str
    is_bigendian: t.uint8
    step: t.uint32
    data: t.sequence[t.uint8]


@dataclass
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str


@dataclass
class Bool(IdlStruct, typename="std_msgs::msg::dds_::Bool_"):
    data: bool


@dataclass
class Empty(IdlStruct, typename="std_msgs::msg::dds_::Empty_"):
    structure_needs_at_least_one_member: t.uint8 = 0


@dataclass
class Vector3(IdlStruct, typename="geometry_msgs::msg::dds_::Vector3_"):
    x: t.float64 = 0.0
    y: t.float64 = 0.0
    z: t.float64 = 0.0


@dataclass
class Twist(IdlStruct, typename="geometry_msgs::msg::dds_::Twist_"):
    linear: Vector3 = field(default_factory=Vector3)
    angular: Vector3 = field(default_factory=Vector3)


@dataclass
class Gid(IdlStruct, typename="rmw_dds_common::msg::dds_::Gid_"):
    data: t.array[t.uint8, 24]  # Humble's 24-byte GID (the `dds` feature's default wire format)


@dataclass
class NodeEntitiesInfo(IdlStruct, typename="rmw_dds_common::msg::dds_::NodeEntitiesInfo_"):
    node_namespace: str
    node_name: str
    reader_gid_seq: t.sequence[Gid]
    writer_gid_seq: t.sequence[Gid]


@dataclass
class ParticipantEntitiesInfo(
    IdlStruct, typename="rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"
):
    gid: Gid
    node_entities_info_seq: t.sequence[NodeEntitiesInfo]


SENSOR = Qos(Policy.Reliability.BestEffort, Policy.Durability.Volatile, Policy.History.KeepLast(5))
RELIABLE = Qos(
    Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)),
    Policy.Durability.Volatile,
    Policy.History.KeepLast(10),
)
LATCHED = Qos(
    Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)),
    Policy.Durability.TransientLocal,
    Policy.History.KeepLast(1),
)

BEAMS = 360
SCAN_MAX_AGE_S = 0.1  # safety.lidar.max_age_ms of reflex_dds.toml


class Robot:
    """Publishes the sensors in background threads; records every /cmd_vel."""

    def __init__(self, domain, wrong_scan_type=False):
        self.dp = DomainParticipant(domain)
        scan_type = WrongScan if wrong_scan_type else LaserScan
        self.scan_w = DataWriter(self.dp, Topic(self.dp, "rt/scan", scan_type), qos=SENSOR)
        self.scan_type = scan_type
        self.image_w = DataWriter(
            self.dp, Topic(self.dp, "rt/camera/image_raw", Image), qos=SENSOR
        )
        self.instr_w = DataWriter(
            self.dp, Topic(self.dp, "rt/reflex/instruction", String), qos=RELIABLE
        )
        self.estop_w = DataWriter(self.dp, Topic(self.dp, "rt/reflex/estop", Bool), qos=LATCHED)
        self.reset_w = DataWriter(
            self.dp, Topic(self.dp, "rt/reflex/estop_reset", Empty), qos=RELIABLE
        )
        self.cmd_r = DataReader(self.dp, Topic(self.dp, "rt/cmd_vel", Twist), qos=RELIABLE)
        # How `ros2 node list` finds nodes: rmw_dds_common's discovery topic.
        self.graph_r = DataReader(
            self.dp,
            Topic(self.dp, "ros_discovery_info", ParticipantEntitiesInfo),
            qos=Qos(
                Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)),
                Policy.Durability.TransientLocal,
                Policy.History.KeepLast(1),
            ),
        )
        self.wall_m = None  # distance of a wall ahead, or None for a clear path
        self.scans_on = True
        self.stop = threading.Event()
        self.cmds = []  # (time, vx)
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._scans, daemon=True),
            threading.Thread(target=self._images, daemon=True),
            threading.Thread(target=self._listen, daemon=True),
        ]

    def start(self):
        for th in self.threads:
            th.start()

    def _scans(self):
        inc = 2 * math.pi / BEAMS
        while not self.stop.is_set():
            if self.scans_on:
                ranges = []
                for i in range(BEAMS):
                    a = -math.pi + i * inc
                    r = float("inf")
                    if self.wall_m is not None and abs(a) < 0.6:
                        r = (self.wall_m + 0.35) / max(math.cos(a), 1e-3)
                    ranges.append(r)
                self.scan_w.write(
                    self.scan_type(
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

    def _images(self):
        # A red marker straight ahead on a grey background (what the demo VLA drives to).
        w = h = 96
        data = bytearray([90, 90, 90] * (w * h))
        for y in range(36, 60):
            for x in range(40, 56):
                data[(y * w + x) * 3 : (y * w + x) * 3 + 3] = bytes([220, 30, 30])
        img = Image(
            header=Header(frame_id="camera"),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
            data=list(data),
        )
        while not self.stop.is_set():
            self.image_w.write(img)
            time.sleep(0.05)

    def _listen(self):
        while not self.stop.is_set():
            for s in self.cmd_r.take(100):
                if isinstance(s, Twist):
                    with self.lock:
                        self.cmds.append((time.monotonic(), s.linear.x))
            time.sleep(0.005)

    def vx_since(self, t0):
        with self.lock:
            return [(t - t0, vx) for t, vx in self.cmds if t >= t0]

    def wait_for(self, what, pred, timeout):
        """Seconds until pred(vx) holds for a /cmd_vel sample after now, or None."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for dt, vx in self.vx_since(t0):
                if pred(vx):
                    return dt
            time.sleep(0.02)
        print(f"  {what}: not within {timeout} s (last vx: {self.vx_since(t0)[-3:]})")
        return None


def scan_publisher(domain):
    """A lidar as its own process: clear scans at 25 Hz until killed."""
    robot = Robot(domain)
    robot.threads = [threading.Thread(target=robot._scans, daemon=True)]
    robot.start()
    while True:
        time.sleep(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reflex")
    ap.add_argument("--wrong-scan-type", action="store_true")
    ap.add_argument("--scan-publisher", type=int, metavar="DOMAIN")
    a = ap.parse_args()
    if a.scan_publisher is not None:
        return scan_publisher(a.scan_publisher)
    if not a.reflex:
        ap.error("--reflex is required")
    domain = random.randint(1, 200)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    robot = Robot(domain, a.wrong_scan_type)
    # An E-stop pressed before Reflex starts (transient-local: Reflex gets it on discovery).
    robot.estop_w.write(Bool(data=True))
    robot.start()
    failures = []

    def check(name, ok):
        print(("PASS " if ok else "FAIL ") + name)
        if not ok:
            failures.append(name)

    proc = subprocess.Popen(
        [
            a.reflex,
            "run",
            "--io",
            "dds",
            "--config",
            str(HERE / "reflex_dds.toml"),
            "--policy",
            str(REPO / "models/demo/reflex-demo-vla"),
            "--duration",
            "60",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    try:
        # Reflex is up once it publishes /cmd_vel.
        t0 = time.monotonic()
        while not robot.vx_since(t0) and proc.poll() is None and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        if not robot.vx_since(t0):
            proc.kill()
            out, err = proc.communicate()
            sys.exit(f"reflex never published /cmd_vel:\n{err[-2000:]}")
        nodes = set()
        t0 = time.monotonic()
        while "/reflex" not in nodes and time.monotonic() - t0 < 5:
            for info in robot.graph_r.take(20):
                if isinstance(info, ParticipantEntitiesInfo):
                    for n in info.node_entities_info_seq:
                        nodes.add(n.node_namespace.rstrip("/") + "/" + n.node_name)
            time.sleep(0.05)
        check(f"Reflex appears in the ROS graph as a node ({sorted(nodes)})", "/reflex" in nodes)
        robot.instr_w.write(String(data="go to the red marker"))
        robot.reset_w.write(Empty())  # a reset while pressed must not release
        time.sleep(2.0)
        moved = [vx for _, vx in robot.vx_since(time.monotonic() - 2.0) if abs(vx) > 1e-6]
        check("E-stop latched before start keeps the robot stopped", not moved)

        robot.estop_w.write(Bool(data=False))
        time.sleep(0.2)
        robot.reset_w.write(Empty())
        dt = robot.wait_for("motion on a clear path", lambda vx: vx > 0.05, 5.0)
        check(f"clear path => motion ({dt and round(dt, 2)} s after release + reset)", dt is not None)
        if a.wrong_scan_type:
            sys.exit(3 if dt is None else 0)

        robot.wall_m = 0.05  # inside the 0.10 m margin: no forward motion is safe
        dt = robot.wait_for("stop for an obstacle", lambda vx: abs(vx) < 1e-6, 2.0)
        check(f"obstacle 0.05 m ahead => stop ({dt and round(dt, 2)} s)", dt is not None)
        robot.wall_m = None
        dt = robot.wait_for("motion again", lambda vx: vx > 0.05, 5.0)
        check("obstacle gone => motion again", dt is not None)

        robot.estop_w.write(Bool(data=True))
        dt = robot.wait_for("stop for the E-stop topic", lambda vx: abs(vx) < 1e-6, 2.0)
        check(f"E-stop topic => stop ({dt and round(dt, 2)} s)", dt is not None)
        robot.estop_w.write(Bool(data=False))
        time.sleep(0.2)
        robot.reset_w.write(Empty())
        dt = robot.wait_for("motion after reset", lambda vx: vx > 0.05, 5.0)
        check("release + reset => motion", dt is not None)

        # The scan publisher is a separate process: it takes over /scan, then it is SIGKILLed.
        # Stale after max_age, then braking at 1.5 m/s² from ≤ 0.6 m/s.
        robot.scans_on = False
        lidar = subprocess.Popen(
            [sys.executable, __file__, "--scan-publisher", str(domain)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        dt = robot.wait_for("motion on the separate lidar process", lambda vx: vx > 0.05, 10.0)
        check("motion on scans from the lidar process", dt is not None)
        time.sleep(0.5)
        lidar.send_signal(signal.SIGKILL)
        lidar.wait()
        limit = SCAN_MAX_AGE_S + 0.6 / 1.5 + 0.2
        dt = robot.wait_for("stop after the lidar process is killed", lambda vx: abs(vx) < 1e-6, 3.0)
        check(
            f"scan publisher killed => stop within {limit:.2f} s ({dt and round(dt, 2)} s)",
            dt is not None and dt <= limit,
        )
    finally:
        robot.stop.set()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if failures:
        sys.exit(f"{len(failures)} checks failed: {failures}")
    print("all checks passed")


if __name__ == "__main__":
    main()
