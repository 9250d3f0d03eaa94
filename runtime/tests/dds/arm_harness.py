#!/usr/bin/env python3
"""Black-box ROS 2 wire test of an arm: `reflex run --io dds` with the shipped launch/arm.toml
and the arm demo package (models/demo/reflex-demo-arm-reach, policy.json schema 2), against an
arm robot on PyPI `cyclonedds` that stands in for ros2_control:

- it publishes /joint_states at 100 Hz (shoulder, elbow, wrist, gripper) from a first-order
  plant (time constant 40 ms) that follows the first point of the last
  trajectory_msgs/JointTrajectory on /arm_controller/joint_trajectory and the last
  std_msgs/Float64MultiArray on /gripper_controller/commands (the two `[[ros.controllers]]` of
  arm.toml: joint_trajectory_controller and a JointGroupPositionController);
- the safety controller's hardware E-stop heartbeat (/safety_controller/estop, 50 Hz), the
  operator E-stop (/reflex/estop, latched), and the two cameras arm.toml's [ros.cameras]
  binds to the policy's image inputs: a 320×240 rgb8 front camera and a 160×120 bgr8 wrist
  camera (20 Hz each; the policy takes them as 64×64 uint8 NCHW letterboxed and 48×48 float32
  NHWC center-cropped and normalized).

    arm_harness.py --reflex target/debug/reflex

Checks: the latched arm holds (zero velocities) until release + reset + start; then it reaches
the policy's pose; every trajectory names the controller's joints, starts on receipt (zero
stamp), ends at zero velocity, and every position and velocity is inside launch/arm.toml's
limits; the gripper's commands inside its range; an E-stop press stops the arm (category 1) and
a reset alone does not restart it; on its way, a covered (dark) wrist camera holds it (the
policy's own rule) and a silent wrist camera stops it (no observation without every camera:
Reflex's rule), and each time it moves on once the camera is back; pushed back and held by a person, it
stops there and stays (following error, SAF-015, latched) and after reset + start restarts
from there instead of snapping back;
a joint_states message without the wrist is refused and the arm stops (stale joint state);
swung by hand to the far side of arm.toml's keep-out box (SAF-016) and started, the arm turns
back toward its pose and stops before the box, and no commanded point (the stopping tails
included) puts a link into it (forward kinematics of arm.toml's chain computed here);
SAF-017: the cell's scanner (/scan, 20 Hz, 720 beams, a round wall 4 m away) sees a person
standing beyond where the moving arm takes its tool, inside what even a still arm needs
(arm.toml's separation keys): it stops short, farther than the margin from them, and stays;
they step back 0.6 m past that distance: it moves on, slowed (arm_separation_slow); they
leave: it reaches its pose.

A run in which Reflex latched its own E-stop for the host's timing (its summary counts
watchdog_trips: the RT thread starved past arm.toml's bounds, as on a CI VM with steal; or
vetoes.estop_source_stale: this Python peer's own E-stop heartbeat came late) and checks then
failed is repeated, at most twice; any other failure fails at once.
`--stall-first-run` checks that repeat: the first run's RT thread is stalled for 0.3 s (Reflex's
--inject-rt-fault hook) while the arm moves; that run must fail and a repeat must pass.
"""
import argparse
import json
import math
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field

import cyclonedds.idl.types as t
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE))
from harness import (LATCHED, RELIABLE, SENSOR, Bool, DiagnosticArray, Empty, Header, Image,  # noqa: E402
                     LaserScan, Time)

CONFIG = REPO / "launch/arm.toml"
POLICY = REPO / "models/demo/reflex-demo-arm-reach"
GOAL = [0.8, -0.6, 1.2]  # the demo policy's reach pose
GRIPPER_GOAL = 0.06


@dataclass
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header
    name: t.sequence[str]
    position: t.sequence[t.float64]
    velocity: t.sequence[t.float64]
    effort: t.sequence[t.float64]


@dataclass
class Duration(IdlStruct, typename="builtin_interfaces::msg::dds_::Duration_"):
    sec: t.int32 = 0
    nanosec: t.uint32 = 0


@dataclass
class JointTrajectoryPoint(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectoryPoint_"):
    positions: t.sequence[t.float64]
    velocities: t.sequence[t.float64]
    accelerations: t.sequence[t.float64]
    effort: t.sequence[t.float64]
    time_from_start: Duration = field(default_factory=Duration)


@dataclass
class JointTrajectory(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectory_"):
    header: Header
    joint_names: t.sequence[str]
    points: t.sequence[JointTrajectoryPoint]


@dataclass
class MultiArrayDimension(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    label: str
    size: t.uint32
    stride: t.uint32


@dataclass
class MultiArrayLayout(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    dim: t.sequence[MultiArrayDimension]
    data_offset: t.uint32


@dataclass
class Float64MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    layout: MultiArrayLayout
    data: t.sequence[t.float64]


class Arm:
    """The arm robot: plant, sensors, and every command received."""

    def __init__(self, domain, limits, controllers, cameras, scan_topic):
        self.dp = DomainParticipant(domain)
        w = lambda topic, ty, qos: DataWriter(self.dp, Topic(self.dp, topic, ty), qos=qos)
        r = lambda topic, ty, qos: DataReader(self.dp, Topic(self.dp, topic, ty), qos=qos)
        self.js_w = w("rt/joint_states", JointState, SENSOR)
        self.hw_w = w("rt/safety_controller/estop", Bool, LATCHED)
        self.estop_w = w("rt/reflex/estop", Bool, LATCHED)
        self.reset_w = w("rt/reflex/estop_reset", Empty, RELIABLE)
        self.start_w = w("rt/reflex/start", Empty, RELIABLE)
        self.front_w = w("rt" + cameras["front"], Image, SENSOR)
        self.wrist_w = w("rt" + cameras["wrist"], Image, SENSOR)
        self.scan_w = w("rt" + scan_topic, LaserScan, SENSOR)
        self.person = None  # (x, y) in the scanner's frame: a 0.3 m wide body
        jtc = next(c for c in controllers if c["type"] == "joint_trajectory")
        grip = next(c for c in controllers if c["type"] == "forward_position")
        self.joints = jtc["joints"]
        self.traj_r = r("rt" + jtc["topic"], JointTrajectory, RELIABLE)
        self.grip_r = r("rt" + grip["topic"], Float64MultiArray, RELIABLE)
        self.diag_r = r("rt/diagnostics", DiagnosticArray, RELIABLE)
        self.diags = []  # (monotonic s, {key: value}) of Reflex's 1 Hz /diagnostics
        self.limits = limits
        self.q = [0.0, 0.0, 0.0]
        self.g = 0.0
        self.target = None
        self.g_target = None
        self.trajs = []  # (monotonic s, JointTrajectory)
        self.grips = []  # (monotonic s, data)
        self.wrist_bright = 120
        self.wrist_on = True
        self.drop_wrist = False
        self.held_at = None  # a person holding the arm at this pose (the plant cannot move)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._plant, self._hw, self._images, self._listen, self._scan)]

    def start(self):
        for th in self.threads:
            th.start()

    def _plant(self):
        dt, tau = 0.01, 0.04
        while not self.stop.is_set():
            with self.lock:
                if self.held_at is not None:
                    self.q = list(self.held_at)
                elif self.target is not None:
                    self.q = [q + (x - q) * dt / tau for q, x in zip(self.q, self.target)]
                if self.g_target is not None:
                    self.g += (self.g_target - self.g) * dt / tau
                names = self.joints + ["gripper"]
                pos = self.q + [self.g]
                if self.drop_wrist:
                    names, pos = names[:2] + names[3:], pos[:2] + pos[3:]
            sec, ns = divmod(time.time_ns(), 1_000_000_000)
            self.js_w.write(JointState(header=Header(), name=names, position=pos, velocity=[0.0] * len(pos), effort=[]))
            time.sleep(dt)

    def _hw(self):
        while not self.stop.is_set():
            self.hw_w.write(Bool(data=False))
            time.sleep(0.02)

    def _images(self):
        front = [120] * (320 * 240 * 3)
        while not self.stop.is_set():
            self.front_w.write(Image(header=Header(frame_id="front_camera"), height=240, width=320, encoding="rgb8",
                                     is_bigendian=0, step=320 * 3, data=front))
            if self.wrist_on:
                v = self.wrist_bright
                self.wrist_w.write(Image(header=Header(frame_id="wrist_camera"), height=120, width=160,
                                         encoding="bgr8", is_bigendian=0, step=160 * 3, data=[v] * (160 * 120 * 3)))
            time.sleep(0.05)

    def _scan(self):
        beams, inc = 720, 2 * math.pi / 720
        while not self.stop.is_set():
            ranges = [4.0] * beams
            if self.person is not None:
                px, py = self.person
                r = math.hypot(px, py)
                half = math.atan2(0.15, r)
                for i in range(beams):
                    a = -math.pi + i * inc
                    off = (a - math.atan2(py, px) + math.pi) % (2 * math.pi) - math.pi
                    if abs(off) <= half:
                        ranges[i] = r
            sec, nanosec = divmod(time.time_ns(), 1_000_000_000)
            self.scan_w.write(LaserScan(header=Header(stamp=Time(sec, nanosec), frame_id="cell_scanner"),
                                        angle_min=-math.pi, angle_max=math.pi - inc, angle_increment=inc,
                                        time_increment=0.0, scan_time=0.05, range_min=0.05, range_max=30.0,
                                        ranges=ranges, intensities=[]))
            time.sleep(0.05)

    def _listen(self):
        while not self.stop.is_set():
            for m in self.traj_r.take(50):
                if isinstance(m, JointTrajectory):
                    with self.lock:
                        self.trajs.append((time.monotonic(), m))
                        if m.points:
                            self.target = list(m.points[0].positions)
            for m in self.grip_r.take(50):
                if isinstance(m, Float64MultiArray):
                    with self.lock:
                        self.grips.append((time.monotonic(), list(m.data)))
                        if m.data:
                            self.g_target = m.data[0]
            for d in self.diag_r.take(5):
                if isinstance(d, DiagnosticArray) and d.status:
                    with self.lock:
                        self.diags.append((time.monotonic(), {kv.key: kv.value for kv in d.status[0].values}))
            time.sleep(0.002)

    def trajs_since(self, t0):
        with self.lock:
            return [m for t_, m in self.trajs if t_ >= t0]

    def diagnostics_after(self, t0, timeout=2.5):
        """The values of the first /diagnostics received after monotonic t0 ({} if none came)."""
        while True:
            with self.lock:
                later = [v for t_, v in self.diags if t_ > t0]
            if later or time.monotonic() - t0 > timeout:
                return later[0] if later else {}
            time.sleep(0.05)

    def last_diagnostics(self):
        """The values of the last /diagnostics received ({} if none came yet)."""
        with self.lock:
            return dict(self.diags[-1][1]) if self.diags else {}

    def state(self):
        with self.lock:
            return list(self.q), self.g

    def settles(self, timeout, window=0.2, eps=1e-3):
        """True once a window of `window` s passes without a joint moving more than eps."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.moved_within(window, eps):
                return True
        return False

    def moved_within(self, seconds, eps=1e-3):
        q0, _ = self.state()
        time.sleep(seconds)
        q1, _ = self.state()
        return max(abs(a - b) for a, b in zip(q0, q1)) > eps


def violations(trajs, joints, limits):
    """Every way a trajectory breaks the controller contract or the config's limits."""
    bad = []
    for m in trajs:
        if list(m.joint_names) != joints:
            bad.append(f"joint_names {list(m.joint_names)}")
        if m.header.stamp.sec or m.header.stamp.nanosec:
            bad.append("non-zero header stamp")
        if not m.points or len(m.points) > 2:
            bad.append(f"{len(m.points)} points")
            continue
        if any(len(p.positions) != len(joints) or len(p.velocities) != len(joints) for p in m.points):
            bad.append("a point without a position and velocity per joint")
            continue
        if any(abs(v) > 1e-12 for v in m.points[-1].velocities):
            bad.append(f"last point moves {list(m.points[-1].velocities)}")
        for p in m.points:
            for k, (x, v) in enumerate(zip(p.positions, p.velocities)):
                lo, hi, vmax = limits[k]
                if not (lo - 1e-9 <= x <= hi + 1e-9):
                    bad.append(f"{joints[k]} position {x} outside [{lo}, {hi}]")
                if abs(v) > vmax + 1e-6:
                    bad.append(f"{joints[k]} velocity {v} above {vmax}")
    return bad


def forward_kinematics(kin, q):
    """Joint origins and the tool point of arm.toml's [safety.arm.kinematics] chain (URDF
    origin xyz + rpy, revolute axis) at joint positions q: written here, not taken from Reflex."""
    def rot(axis, a):
        x, y, z = axis
        c, s_ = math.cos(a), math.sin(a)
        k = 1 - c
        return [[k * x * x + c, k * x * y - s_ * z, k * x * z + s_ * y],
                [k * x * y + s_ * z, k * y * y + c, k * y * z - s_ * x],
                [k * x * z - s_ * y, k * y * z + s_ * x, k * z * z + c]]
    mm = lambda a, b: [[sum(a[r][i] * b[i][c] for i in range(3)) for c in range(3)] for r in range(3)]
    mv = lambda a, v: [sum(a[r][i] * v[i] for i in range(3)) for r in range(3)]
    rotation, at, points = [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [0.0, 0.0, 0.0], []
    for link, qi in zip(kin["links"], q):
        r, p, y = link.get("rpy_rad", [0.0, 0.0, 0.0])
        origin = mm(rot([0, 0, 1], y), mm(rot([0, 1, 0], p), rot([1, 0, 0], r)))
        at = [a + b for a, b in zip(at, mv(rotation, link["xyz_m"]))]
        rotation = mm(mm(rotation, origin), rot(link["axis"], qi))
        points.append(at)
    points.append([a + b for a, b in zip(at, mv(rotation, kin["tool"]["xyz_m"]))])
    return points


def keep_out_clearance(kin, q, box):
    """The smallest distance from a link's surface (capsules, sampled) to the box; < 0 = inside."""
    points = forward_kinematics(kin, q)
    radii = [link["radius_m"] for link in kin["links"]] + [kin["tool"]["radius_m"]]
    lo, hi = box["min_m"], box["max_m"]
    best = math.inf
    for i, r in enumerate(radii):
        a, b = points[i], points[min(i + 1, len(points) - 1)]
        for k in range(101):
            p = [a[j] + (b[j] - a[j]) * k / 100 for j in range(3)]
            d = math.sqrt(sum(max(lo[j] - p[j], p[j] - hi[j], 0.0) ** 2 for j in range(3)))
            best = min(best, d - r)
    return best


def run_once(a, domain, stall=None):
    """One run of every phase against a fresh Reflex and arm on DDS domain `domain` (`stall`:
    an RT-thread stall injected with reflex's test hook): the failed checks and Reflex's
    summary."""
    config = tomllib.loads(CONFIG.read_text())
    arm_cfg = config["safety"]["arm"]
    limits = [(j["min_position"], j["max_position"], j["max_velocity"]) for j in arm_cfg["joints"]]
    kin = arm_cfg["kinematics"]
    g_lo, g_hi = arm_cfg["gripper"]["min_position"], arm_cfg["gripper"]["max_position"]
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    scan_topic = config["ros"].get("topics", {}).get("scan", "/scan")
    arm = Arm(domain, limits, config["ros"]["controllers"], config["ros"]["cameras"], scan_topic)
    arm.estop_w.write(Bool(data=False))
    arm.start()
    failures = []

    def check(name, ok):
        print(("PASS " if ok else "FAIL ") + name, flush=True)
        if not ok:
            failures.append(name)

    cmd = [a.reflex, "run", "--io", "dds", "--config", str(CONFIG), "--policy", str(POLICY),
           "--duration", "300", "--metrics-bind", "127.0.0.1:0"] + (["--inject-rt-fault", stall] if stall else [])
    print("RUN " + " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Up once it publishes the gripper (a hold of nothing yet) or anything at all.
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 30:
            with arm.lock:
                if arm.grips or arm.trajs:
                    break
            time.sleep(0.05)
        time.sleep(1.0)
        moving = [m for m in arm.trajs_since(0) if any(v != 0.0 for v in m.points[0].velocities)]
        check(
            f"latched at start => no trajectory moves the arm ({len(arm.trajs_since(0))} messages) and it stays",
            proc.poll() is None and not moving and not arm.moved_within(0.3),
        )
        # Release (already), reset, start (retried: a loaded host can make a source stale).
        started = False
        for _ in range(10):
            arm.reset_w.write(Empty())
            time.sleep(0.3)
            arm.start_w.write(Empty())
            time.sleep(0.3)
            if arm.moved_within(0.3):
                started = True
                break
        check("release + reset + start => the arm moves", started)
        # On the way to the pose: the wrist camera covered (dark), then silent.
        # The hold comes ~0.4 s after the cover (the next 20 Hz frame, an inference, the 5-step
        # crossfade at 30 Hz, braking at 4 rad/s²; measured the same with and without the
        # SAF-016 zones): the former fixed 0.4 s wait raced it. Bound the time to hold (3 s,
        # reported), then it must stay held for 0.5 s.
        arm.wrist_bright = 5
        t_cover = time.monotonic()
        held = arm.settles(3.0, eps=2e-3)
        check(f"wrist camera covered => the policy holds the arm on its way (held after "
              f"{time.monotonic() - t_cover:.2f} s, bound 3 s)",
              held and not arm.moved_within(0.5, eps=2e-3))
        arm.wrist_bright = 120
        check("wrist camera uncovered => it moves on", arm.moved_within(0.4))
        arm.wrist_on = False
        t_silent = time.monotonic()
        stopped = arm.settles(3.0, eps=2e-3)
        check(f"wrist camera silent => no observation, the chunk runs out, the arm stops (after "
              f"{time.monotonic() - t_silent:.2f} s, bound 3 s)",
              stopped and not arm.moved_within(0.5, eps=2e-3))
        arm.wrist_on = True
        check("wrist camera back => it moves on", arm.moved_within(0.5))
        t_move = time.monotonic()
        while time.monotonic() - t_move < 6:
            q, g = arm.state()
            if max(abs(x - y) for x, y in zip(q, GOAL)) < 0.02 and abs(g - GRIPPER_GOAL) < 0.005:
                break
            time.sleep(0.05)
        q, g = arm.state()
        dt = time.monotonic() - t_move
        check(f"the arm reaches the policy's pose {GOAL} + gripper {GRIPPER_GOAL} ({[round(x, 3) for x in q]}, {g:.4f}, {dt:.1f} s)",
              max(abs(x - y) for x, y in zip(q, GOAL)) < 0.02 and abs(g - GRIPPER_GOAL) < 0.005)
        moving = [m for m in arm.trajs_since(t_move) if any(abs(v) > 0.01 for v in m.points[0].velocities)]
        check(f"while moving, points carry velocities (cubic segments, no stop per message): {len(moving)} messages",
              len(moving) > 20)
        with arm.lock:
            grips = [d for _, d in arm.grips]
        bad_grip = [d for d in grips if len(d) != 1 or not (g_lo - 1e-9 <= d[0] <= g_hi + 1e-9)]
        check(f"gripper commands: one value inside [{g_lo}, {g_hi}] ({len(grips)} messages, {len(bad_grip)} bad)",
              grips and not bad_grip)
        # SAF-015: a person pushes the arm back to zero and holds it there for 0.2 s. The
        # following error is a protective stop that latches: released, the arm stays where it
        # was left; after reset + start it restarts from there at the policy's pace instead of
        # snapping back to where it was commanded before.
        with arm.lock:
            arm.held_at = [0.0, 0.0, 0.0]
        time.sleep(0.2)
        with arm.lock:
            arm.held_at = None
        time.sleep(0.1)
        check("SAF-015 pushed back and held => protective stop, latched: it stays where it was left",
              not arm.moved_within(0.6, eps=0.02))
        q_left, _ = arm.state()
        arm.reset_w.write(Empty())
        time.sleep(0.3)
        arm.start_w.write(Empty())
        t_rel = time.monotonic()
        peak = 0.0
        while time.monotonic() - t_rel < 0.3:
            q, _ = arm.state()
            peak = max(peak, max(abs(x - y) for x, y in zip(q, q_left)))
            time.sleep(0.005)
        check(f"reset + start => it restarts from where it was left (max move {peak:.3f} rad in 0.3 s; "
              f"it had been at {GOAL})", peak < 0.35)
        arm.estop_w.write(Bool(data=True))
        time.sleep(0.5)
        check("E-stop press => the arm stops (within 0.5 s)", not arm.moved_within(0.5))
        arm.estop_w.write(Bool(data=False))
        time.sleep(0.2)
        arm.reset_w.write(Empty())
        time.sleep(0.3)
        check("SAF-013 release + reset, no start => still stopped", not arm.moved_within(0.8))
        q_stop, _ = arm.state()
        arm.start_w.write(Empty())
        time.sleep(0.3)
        check(f"start => moving again (stopped at {[round(x, 3) for x in q_stop]})", arm.moved_within(0.5))
        # A joint state without the wrist: refused; the joint state goes stale; the arm stops.
        arm.drop_wrist = True
        time.sleep(0.4)
        check("joint_states without the wrist => refused => the arm stops", not arm.moved_within(0.5))
        arm.drop_wrist = False
        def moved_by_hand_while_estopped(shoulder):
            """E-stop; a person holds the shoulder at `shoulder` (the rest where they are);
            release and reset. The caller sends start."""
            arm.estop_w.write(Bool(data=True))
            time.sleep(0.3)
            with arm.lock:
                arm.held_at = [shoulder, GOAL[1], GOAL[2]]
            time.sleep(0.3)
            arm.estop_w.write(Bool(data=False))
            time.sleep(0.2)
            arm.reset_w.write(Empty())
            time.sleep(0.3)
            with arm.lock:
                arm.held_at = None

        def start_until_moving(window=0.4, tries=5):
            """Start; if the arm has not moved within `window`, reset + start again (a loaded host
            can make the Python E-stop heartbeat stale, which latches Reflex, as it must): the
            number of starts it took, 0 when it never moved."""
            for n in range(1, tries + 1):
                if n > 1:
                    arm.reset_w.write(Empty())
                    time.sleep(0.3)
                arm.start_w.write(Empty())
                if arm.moved_within(window):
                    return n
            return 0

        # SAF-017: E-stopped, the shoulder swung back to 0 by hand; after release + reset +
        # start the policy turns it toward its pose (+0.8 rad, away from the keep-out box).
        # As it moves, a person stands beyond where it takes the tool, inside what even a still
        # arm needs (human speed × (reaction + scan period + a tick) + margin, from arm.toml):
        # it stops short, farther than the margin from them, and stays; they step back past
        # that distance: it moves on, slowed; they leave: it reaches its pose.
        sep = arm_cfg["separation"]
        margin = sep["margin_m"]
        still_need = sep["human_speed_mps"] * (sep["reaction_time_ms"] + 50 + 10) / 1000 + margin
        moved_by_hand_while_estopped(0.0)
        starts = start_until_moving()
        check(f"SAF-017 start => the arm turns toward its pose ({starts} starts)", starts > 0)

        goal_tool = forward_kinematics(kin, GOAL)[-1]

        def beyond_goal(gap_m):
            r = math.hypot(goal_tool[0], goal_tool[1])
            # the body's near side gap_m beyond the tool sphere's surface
            d = r + 0.05 + gap_m
            return (goal_tool[0] * d / r, goal_tool[1] * d / r)

        def tool_to_person():
            q, _ = arm.state()
            tool = forward_kinematics(kin, q)[-1]
            return math.hypot(tool[0] - arm.person[0], tool[1] - arm.person[1]) - 0.05

        # Standing 0.1 m inside what a still arm needs, beyond where the policy takes the tool:
        # the allowed speed falls with the separation, to zero at that distance, so the arm
        # closes in ever slower and comes to rest short of its pose, never nearer than the margin.
        arm.person = beyond_goal(still_need - 0.1)
        time.sleep(4.0)
        q_stop, _ = arm.state()
        gap = tool_to_person()
        t_crawl = time.monotonic()
        time.sleep(1.0)
        q_after, _ = arm.state()
        crawl = max(abs(a - b) for a, b in zip(q_stop, q_after)) / (time.monotonic() - t_crawl)
        check(f"SAF-017 a person inside what a still arm needs, beyond the moving arm's goal => it stops "
              f"short of it (4 s after they came {still_need - 0.1:.2f} m beyond it: tool {gap:.3f} m from "
              f"them, margin {margin} m; shoulder {q_stop[0]:.3f} of {GOAL[0]}; then {crawl:.4f} rad/s, bound 0.03)",
              gap > margin - 0.02 and abs(q_stop[0] - GOAL[0]) > 0.02 and crawl < 0.03)
        arm.person = beyond_goal(still_need + 0.6)
        check(f"SAF-017 the person steps back to {still_need + 0.6:.2f} m beyond the goal => it moves on (slowed)",
              arm.moved_within(0.8, eps=2e-3))
        arm.person = None
        # A stop on the way in which Reflex latched (a stale E-stop heartbeat from this Python
        # peer on a loaded host latches it, as it must) gets reset + start, at most twice, and
        # is printed; a stop in any other state (a person it still sees) fails.
        t_move = time.monotonic()
        relatched = []
        while time.monotonic() - t_move < 8:
            q, _ = arm.state()
            if max(abs(x - y) for x, y in zip(q, GOAL)) < 0.02:
                break
            if len(relatched) < 2 and not arm.moved_within(0.3, eps=2e-3):
                state = arm.diagnostics_after(time.monotonic()).get("state")
                if state in ("latched", "stopping", "awaiting_start"):
                    relatched.append((round(q[0], 3), state))
                    print(f"  SAF-017 stopped at shoulder {q[0]:.3f} with Reflex {state}: reset + start again",
                          flush=True)
                    arm.reset_w.write(Empty())
                    time.sleep(0.3)
                    arm.start_w.write(Empty())
                    t_move = time.monotonic()
            time.sleep(0.05)
        q, _ = arm.state()
        check(f"SAF-017 the person leaves => the arm reaches its pose ({[round(x, 3) for x in q]}; "
              f"restarted after a latch at {relatched})",
              max(abs(x - y) for x, y in zip(q, GOAL)) < 0.02)
        # SAF-016: while the arm is E-stopped a person swings the shoulder to -1.5 rad; after
        # release + reset + start the policy turns it back toward its pose, through the fixture
        # arm.toml's keep_out box stands for: the arm stops before the box and stays there.
        # Why it stopped is read from Reflex itself (/diagnostics `state`, 1 Hz): the box holds
        # the arm in a protective stop (not latched: a start does not move it). A stop in which
        # Reflex latched instead (a stale heartbeat on a loaded host latches it, as it must)
        # gets reset + start again, up to 3 times, and is printed: restarts never take the arm
        # into the box. Which reason held it is Reflex's own count on /diagnostics
        # (reasons.<reason>, ticks that gave it): arm_keep_out must grow while the arm stands
        # there; a latch prints the reasons that grew since the report before its start.
        moved_by_hand_while_estopped(-1.5)
        t_zone = time.monotonic()
        restarts, stops = [], []
        def reasons_of(d):
            return {k[len("reasons."):]: int(v) for k, v in d.items() if k.startswith("reasons.")}
        for _ in range(3):
            base = reasons_of(arm.diagnostics_after(time.monotonic()))
            restarts.append(start_until_moving(window=0.3))
            t_wait = time.monotonic()
            while time.monotonic() - t_wait < 6 and arm.moved_within(0.3, eps=2e-3):
                pass
            q_zone, _ = arm.state()
            # A report made after a second of standing still: its counts cover the stop.
            at_stop = arm.diagnostics_after(time.monotonic() + 1.0)
            zone_state = at_stop.get("state")
            at_stop = reasons_of(at_stop)
            grew = {k: n - base.get(k, 0) for k, n in at_stop.items() if n > base.get(k, 0)}
            stops.append((round(q_zone[0], 3), zone_state, grew))
            if zone_state not in ("latched", "stopping", "awaiting_start"):
                break
            print(f"  SAF-016 stopped at shoulder {q_zone[0]:.3f} with Reflex {zone_state} "
                  f"(reasons since the report before this start: {grew}): reset + start again", flush=True)
            arm.reset_w.write(Empty())
            time.sleep(0.3)
        zone_trajs = arm.trajs_since(t_zone)
        clearances = [keep_out_clearance(kin, p.positions, box) for m in zone_trajs for p in m.points
                      for box in arm_cfg["keep_out"]]
        check(f"SAF-016 turned back toward the pose through the keep-out box => it stops before it in a "
              f"protective stop (shoulder {q_zone[0]:.3f}; the tool touches it from about -1.03 rad; "
              f"starts {restarts}; stops (shoulder, Reflex state, reasons given meanwhile) {stops})",
              -1.2 < q_zone[0] < -1.0 and zone_state == "protective_stop"
              and not arm.moved_within(0.5, eps=2e-3))
        held_by = reasons_of(arm.diagnostics_after(time.monotonic()))
        check(f"SAF-016 Reflex says on /diagnostics, while the arm stands, that the keep-out box holds it "
              f"(reasons.arm_keep_out {base.get('arm_keep_out', 0)} -> {at_stop.get('arm_keep_out', 0)} "
              f"-> {held_by.get('arm_keep_out', 0)})",
              held_by.get("arm_keep_out", 0) > at_stop.get("arm_keep_out", 0) > base.get("arm_keep_out", 0))
        check(f"SAF-016 every link of every commanded point ({len(clearances)}) stays out of the box "
              f"(FK of arm.toml's chain here; closest {min(clearances, default=0):.4f} m)",
              clearances and min(clearances) >= -1e-6)
        bad = violations(arm.trajs_since(0), arm.joints, limits)
        check(f"every trajectory ({len(arm.trajs_since(0))}) names {arm.joints}, starts on receipt, ends at zero "
              f"velocity, and keeps launch/arm.toml's position and velocity limits ({bad[:3]})", not bad)
    finally:
        arm.stop.set()
        # Reflex runs for --duration 300 s and is stopped here: one that ended before the last
        # check (a crash, or a duration shorter than a loaded host's scenario) is named.
        check(f"Reflex ran until the scenario ended (exit status {proc.poll()})", proc.poll() is None)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        lines = out.strip().splitlines()
        try:
            summary = json.loads(lines[-1]) if lines else {}
        except ValueError:
            summary = {}
        stats = summary.get("dds", {})
        vetoes = summary.get("vetoes", {})
        check(f"SAF-016 Reflex named the keep-out box as the reason it held the arm "
              f"(vetoes.arm_keep_out = {vetoes.get('arm_keep_out')})", vetoes.get("arm_keep_out", 0) > 0)
        check(f"SAF-017 Reflex named the person as the reason it stopped and slowed the arm "
              f"(vetoes.arm_separation = {vetoes.get('arm_separation')}, "
              f"arm_separation_slow = {vetoes.get('arm_separation_slow')})",
              vetoes.get("arm_separation", 0) > 0 and vetoes.get("arm_separation_slow", 0) > 0)
        check(f"Reflex counted the silent camera's observations as camera_unavailable and took both cameras' "
              f"frames ({ {k: stats.get(k) for k in ('images', 'images_refused', 'camera_unavailable')} })",
              stats.get("camera_unavailable", 0) > 0 and stats.get("images", 0) > 100
              and stats.get("images_refused", 1) == 0)
        if failures:
            print("reflex stderr (tail):\n" + err[-4000:])
            print("reflex summary:\n" + out.strip()[-3000:])
    return failures, summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reflex", required=True)
    ap.add_argument("--stall-first-run", action="store_true",
                    help="check the repeat itself: stall the first run's RT thread for 0.3 s at 14 s "
                         "(as a starved CI host does); that run must fail and the next one pass")
    a = ap.parse_args()
    # A noisy host (a CI VM's steal) can starve the RT thread for longer than arm.toml allows
    # (3 deadlines in a row, or silent > stall_estop_ms): Reflex then latches its own E-stop
    # (estop_internal / estop_watchdog) and stops the arm, as it must, and the phases after it
    # that expect motion cannot hold. Such a run is repeated, at most twice, and only when
    # Reflex's own summary counts the trip (watchdog_trips) or a late heartbeat from this peer
    # (vetoes.estop_source_stale); any other failure fails at once.
    domains = random.sample(range(1, 200), 3)
    for attempt, domain in enumerate(domains, 1):
        failures, summary = run_once(a, domain, "stall@14:0.3" if a.stall_first_run and attempt == 1 else None)
        if a.stall_first_run and attempt == 1 and not failures:
            sys.exit("the first run's RT thread stalled for 0.3 s and no check failed: the harness "
                     f"would not have seen a latched stop (rt_stalls {summary.get('rt_stalls')}, "
                     f"watchdog_trips {summary.get('watchdog_trips')})")
        trips = summary.get("watchdog_trips", 0)
        # This Python peer's own E-stop heartbeat (50 Hz) arriving late on a starved host is
        # the other latch the host causes: Reflex counts it (vetoes.estop_source_stale).
        stale = summary.get("vetoes", {}).get("estop_source_stale", 0)
        if not failures:
            break
        if not (trips or stale) or attempt == len(domains):
            break
        print(f"HOST attempt {attempt}: {len(failures)} checks failed after Reflex latched its E-stop "
              f"for the host's timing (watchdog_trips {trips}, estop_source_stale {stale}, deadline_misses "
              f"{summary.get('deadline_misses')}, lateness_p99_us {summary.get('lateness_p99_us')}, "
              f"tick_max_us {summary.get('tick_max_us')}); the run is repeated", flush=True)
    if failures:
        sys.exit(f"{len(failures)} checks failed: {failures}")
    print("all checks passed")


if __name__ == "__main__":
    main()
