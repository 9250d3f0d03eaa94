#!/usr/bin/env python3
"""A robot and its people for `reflex-hil hardware`: the hardware mode end to end without
hardware. The robot is made of PyPI `cyclonedds` with the ROS 2 IDL types (`--peer cyclonedds`,
for `--io dds`), or of rclpy nodes of ROS 2 Jazzy on Fast DDS (`--peer rclpy`, run with the
Python of .ros2/venv and .ros2/env.sh sourced; for `--io ros2`: it takes Jazzy's TwistStamped).

The robot: a holonomic base that follows /cmd_vel (100 Hz integration), a 360-beam lidar at
25 Hz ray-cast against the scenario's walls and posts (its set-up), the E-stop topic (latched,
released at start). The people: read the runner's PROMPT lines and do what they say after a
human reaction time (press/release the E-stop on /reflex/estop, reset on /reflex/estop_reset,
then start on /reflex/start).

    robot.py --reflex-hil target/debug/reflex-hil --scenario S.toml --config C.toml \
        [--peer cyclonedds|rclpy] [--io dds|ros2] [--ignore KIND]

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
    """The plant (follows the last /cmd_vel) and the lidar (ray-cast at 25 Hz); the middleware
    is a subclass's: write_scan(ranges), write_odom(vx, vy, wz), take_cmds() -> [(vx, vy, wz)],
    estop(b), reset(). The drive's odometry (/odom, 50 Hz) is the plant's velocity."""

    def __init__(self, world):
        self.world = world
        self.pose = [0.0, 0.0, 0.0]
        self.cmd = (0.0, 0.0, 0.0)
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def start(self):
        for f in (self._plant, self._lidar):
            threading.Thread(target=f, daemon=True).start()

    def _plant(self):
        last = time.monotonic()
        next_odom = last
        while not self.stop.is_set():
            for cmd in self.take_cmds():
                self.cmd = cmd
            now = time.monotonic()
            dt, last = now - last, now
            vx, vy, wz = self.cmd
            with self.lock:
                x, y, yaw = self.pose
                c, s_ = math.cos(yaw), math.sin(yaw)
                self.pose = [x + (c * vx - s_ * vy) * dt, y + (s_ * vx + c * vy) * dt, yaw + wz * dt]
            if now >= next_odom:
                next_odom = now + 0.02
                self.write_odom(vx, vy, wz)
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
            self.write_scan(ranges)
            time.sleep(0.04)


class CycloneRobot(Robot):
    def __init__(self, domain, world):
        super().__init__(world)
        sys.path.insert(0, str(REPO / "runtime/tests/dds"))
        # The ROS 2 IDL types and QoS of the dds interop test.
        import harness as h
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        self.h = h
        self.dp = DomainParticipant(domain)
        self.scan_w = DataWriter(self.dp, Topic(self.dp, "rt/scan", h.LaserScan), qos=h.SENSOR)
        self.estop_w = DataWriter(self.dp, Topic(self.dp, "rt/reflex/estop", h.Bool), qos=h.LATCHED)
        self.reset_w = DataWriter(
            self.dp, Topic(self.dp, "rt/reflex/estop_reset", h.Empty), qos=h.RELIABLE
        )
        self.start_w = DataWriter(self.dp, Topic(self.dp, "rt/reflex/start", h.Empty), qos=h.RELIABLE)
        # /cmd_vel: Twist, the plain `dds` build's default (Humble's convention).
        self.cmd_r = DataReader(self.dp, Topic(self.dp, "rt/cmd_vel", h.Twist), qos=h.RELIABLE)
        self.odom_w = DataWriter(self.dp, Topic(self.dp, "rt/odom", h.Odometry), qos=h.SENSOR)

    def write_odom(self, vx, vy, wz):
        o = self.h.Odometry(header=self.h.Header(frame_id="odom"), child_frame_id="base_link")
        o.twist.twist.linear.x, o.twist.twist.linear.y, o.twist.twist.angular.z = vx, vy, wz
        self.odom_w.write(o)

    def take_cmds(self):
        return [
            (s.linear.x, s.linear.y, s.angular.z)
            for s in self.cmd_r.take(100)
            if isinstance(s, self.h.Twist)
        ]

    def write_scan(self, ranges):
        inc = 2 * math.pi / BEAMS
        self.scan_w.write(
            self.h.LaserScan(
                header=self.h.Header(frame_id="laser"),
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

    def estop(self, pressed):
        self.estop_w.write(self.h.Bool(data=pressed))

    def reset(self):
        # SAF-013: a reset alone never restarts motion; the person then presses start.
        self.reset_w.write(self.h.Empty())
        time.sleep(0.2)
        self.start_w.write(self.h.Empty())


class RclpyRobot(Robot):
    def __init__(self, world):
        super().__init__(world)
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.qos import qos_profile_sensor_data
        from geometry_msgs.msg import TwistStamped
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import LaserScan
        from std_msgs.msg import Bool, Empty

        rclpy.init()
        self.msgs = (LaserScan, Bool, Empty, Odometry)
        n = self.node = rclpy.create_node("hil_robot")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.scan_p = n.create_publisher(LaserScan, "/scan", qos_profile_sensor_data)
        self.estop_p = n.create_publisher(Bool, "/reflex/estop", latched)
        self.reset_p = n.create_publisher(Empty, "/reflex/estop_reset", reliable)
        self.start_p = n.create_publisher(Empty, "/reflex/start", reliable)
        self.cmds = []
        self.odom_p = n.create_publisher(Odometry, "/odom", reliable)
        # /cmd_vel: TwistStamped, Jazzy's default (the `ros2` build's distribution).
        n.create_subscription(
            TwistStamped,
            "/cmd_vel",
            lambda m: self.cmds.append((m.twist.linear.x, m.twist.linear.y, m.twist.angular.z)),
            reliable,
        )
        executor = SingleThreadedExecutor()
        executor.add_node(n)
        threading.Thread(target=executor.spin, daemon=True).start()

    def take_cmds(self):
        cmds, self.cmds = self.cmds, []
        return cmds

    def write_scan(self, ranges):
        inc = 2 * math.pi / BEAMS
        m = self.msgs[0]()
        m.header.frame_id = "laser"
        m.header.stamp = self.node.get_clock().now().to_msg()
        m.angle_min, m.angle_max, m.angle_increment = -math.pi, math.pi - inc, inc
        m.scan_time, m.range_min, m.range_max = 0.04, 0.05, 30.0
        m.ranges = ranges
        self.scan_p.publish(m)

    def write_odom(self, vx, vy, wz):
        o = self.msgs[3]()
        o.header.frame_id, o.child_frame_id = "odom", "base_link"
        o.header.stamp = self.node.get_clock().now().to_msg()
        o.twist.twist.linear.x, o.twist.twist.linear.y, o.twist.twist.angular.z = vx, vy, wz
        self.odom_p.publish(o)

    def estop(self, pressed):
        self.estop_p.publish(self.msgs[1](data=pressed))

    def reset(self):
        # SAF-013: a reset alone never restarts motion; the person then presses start.
        self.reset_p.publish(self.msgs[2]())
        time.sleep(0.2)
        self.start_p.publish(self.msgs[2]())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reflex-hil", required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--ignore", action="append", default=[])
    ap.add_argument("--peer", choices=["cyclonedds", "rclpy"], default="cyclonedds")
    ap.add_argument("--io", choices=["dds", "ros2"], default="dds")
    a = ap.parse_args()
    scenario = tomllib.loads(pathlib.Path(a.scenario).read_text())
    domain = random.randint(1, 100)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    if a.peer == "rclpy":
        # rcl and Reflex stay on loopback (the Cyclone peer keeps its own default set-up, and
        # with it Reflex's dds adapter its default: a LOCALHOST participant only meets others).
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    world = World(scenario)
    robot = CycloneRobot(domain, world) if a.peer == "cyclonedds" else RclpyRobot(world)
    robot.estop(False)  # released; the runner prompts the reset
    robot.start()
    env = dict(os.environ)
    proc = subprocess.Popen(
        [a.reflex_hil, "hardware", a.scenario, "--io", a.io, "--config", a.config,
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
                robot.reset()
                time.sleep(0.5)
        elif "EstopPressed" in line:
            robot.estop(True)
        elif "EstopReleased" in line:
            robot.estop(False)
        elif line.startswith("Reset"):
            robot.reset()

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
