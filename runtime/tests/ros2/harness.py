#!/usr/bin/env python3
"""Black-box ROS 2 test of `reflex run` (`--io ros2`, r2r over rcl, or `--io dds`, RustDDS) with
rclpy nodes of ROS 2 Jazzy (PyPI wheels, Fast DDS: what a Jazzy robot runs by default) playing the
robot. Run it with the ROS venv's Python, with `.ros2/env.sh` sourced (scripts/setup-ros2).

The harness is the whole robot: it publishes /scan, /camera/image_raw, /reflex/instruction,
/reflex/estop (reliable, transient-local) and /reflex/estop_reset, and listens to /cmd_vel and
/diagnostics.

    harness.py --reflex target/debug/reflex --io ros2|dds [--scenario NAME] [--json OUT]

Scenarios:
  basic    the node in the rclpy graph; an E-stop latched before Reflex starts keeps it stopped;
           release + reset alone => still stopped (SAF-013), + start => motion; obstacle =>
           stop; E-stop topic => stop; reset and start (the std_srvs/Trigger services under
           ros2, the topics under dds) => motion; a 1 ms press latches (SAF-012); a lidar node
           in its own process, SIGKILLed => stop within max age + braking; /diagnostics content;
           SIGTERM => zero last on the wire, exit 0 (SAF-011).
  remap    (ros2) `--ros-args -r __node:=… -r __ns:=… -r /scan:=…`: the node under its new name
           and namespace, scans only on the remapped topic still drive it, the service moves too.
  params   (ros2) `--ros-args --params-file launch/params/mobile_base.yaml` over a config whose
           [ros.topics] point elsewhere: the shipped file's topics take effect (motion on /scan),
           its values are visible to rclpy as the node's parameters; `-p safety.…` is refused
           at start (SAF-014).
  params-arm  (ros2) the shipped launch/arm.toml with `--params-file launch/params/arm.yaml`
           and the two-camera arm demo package: the file's parameters are the node's, Reflex
           subscribes the two cameras the file names (320×240 rgb8, 160×120 bgr8; not arm.toml's
           [ros.cameras]), and takes their frames; an rclpy arm (a
           plant following the commands) gets trajectory_msgs/JointTrajectory and the gripper's
           std_msgs/Float64MultiArray after release + reset + start, reaches the policy's pose,
           and every command keeps arm.toml's limits.
  launch   (ros2) launch/reflex.launch.py and launch/reflex.launch.xml as shipped, with the
           shipped launch/mobile_base.toml (the robot publishes the safety controller's heartbeat): the command
           line launch_ros would build from each file's Node (executable, arguments, name,
           namespace, params file + the use_sim_time dict as a params file, remappings; the
           wheels have no `ros2 launch`), plus `--policy` (no [updates] here: issue 22), runs
           against the rclpy robot: the node under its namespace, its service, its parameters,
           release + reset => motion.
  wrong-type  negative control: scans of another message type on /scan never reach Reflex, so
           the motion check must fail (exit 3).
  measure  discovery-to-first-command time, and N E-stop presses at random phase: E-stop message
           published => first zero /cmd_vel, on the wire (its source timestamp), received, and
           seen here (stop category --category 0|1), p50/p99/max (--json).
  rt-panic, rt-stall  (SAF-011) the RT thread killed / stalled 1 s while driving: zero on the
           wire within two periods of the last verdict, then silence / a latched stop.
  odom     odometry required, header stamps checked (200 ms), `cmd_vel_type = "twist"`: a wall
           1.6 m ahead stops the robot only while /odom says the base slides at 2.5 m/s; odometry
           stamped 0.5 s late is refused (counted in /diagnostics) and the robot stops.
  pendants (SAF-012) a second pendant node keeps saying "clear" on /reflex/estop: under dds it
           cannot hide the first one's press (one state per publisher); under ros2 (r2r cannot
           tell publishers apart) the device counts as unknown until it is gone.
/cmd_vel is TwistStamped (Jazzy's default for both adapters) unless the config says twist;
the robot publishes /odom (following the last command) at 100 Hz.
Exit 0 when every check passed, 1 when one failed, 3 for the negative control's expected failure.
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
import tempfile
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import GetParameters
from sensor_msgs.msg import Image, LaserScan
from std_msgs.msg import Bool, Empty, Float32MultiArray, String
from std_srvs.srv import Trigger

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))
import odom_checks  # noqa: E402  (shared with the dds harness)
CONFIG = REPO / "runtime/tests/dds/reflex_dds.toml"
POLICY = REPO / "models/demo/reflex-demo-vla"
BEAMS = 360
SCAN_MAX_AGE_S = 0.1  # safety.lidar.max_age_ms of the test config
# What /cmd_vel carries: Jazzy's default (TwistStamped) unless a scenario's config says otherwise.
CMD_VEL_TYPE = "twist_stamped"

def level(status):
    """DiagnosticStatus.level is a ROS `byte`: bytes of length 1 in rclpy."""
    return status.level[0] if isinstance(status.level, bytes) else status.level


RELIABLE = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
)
LATCHED = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
)


def scan_msg(wall_m, node):
    inc = 2 * math.pi / BEAMS
    ranges = []
    for i in range(BEAMS):
        a = -math.pi + i * inc
        r = float("inf")
        if wall_m is not None and abs(a) < 0.6:
            r = (wall_m + 0.35) / max(math.cos(a), 1e-3)
        ranges.append(r)
    m = LaserScan()
    m.header.frame_id = "laser"
    m.header.stamp = node.get_clock().now().to_msg()
    m.angle_min = -math.pi
    m.angle_max = math.pi - inc
    m.angle_increment = inc
    m.scan_time = 0.04
    m.range_min = 0.05
    m.range_max = 30.0
    m.ranges = ranges
    return m


def image_msg():
    # A red marker straight ahead on a grey background (what the demo VLA drives to).
    w = h = 96
    data = bytearray([90, 90, 90] * (w * h))
    for y in range(36, 60):
        for x in range(40, 56):
            data[(y * w + x) * 3 : (y * w + x) * 3 + 3] = bytes([220, 30, 30])
    m = Image()
    m.header.frame_id = "camera"
    m.height, m.width, m.encoding, m.is_bigendian, m.step = h, w, "rgb8", 0, w * 3
    m.data = bytes(data)
    return m


class Robot:
    """An rclpy node: sensors published from timers, every /cmd_vel and /diagnostics recorded."""

    def __init__(self, scan_topic="/scan", wrong_scan_type=False, scans=True, hw_heartbeat=False, cmd_vel_type=None):
        self.node = rclpy.create_node("robot_peer")
        n = self.node
        if hw_heartbeat:
            # The safety controller: the hardware E-stop circuit's state (clear) at 50 Hz, the
            # `hardware` device of launch/mobile_base.toml.
            hw = n.create_publisher(Bool, "/safety_controller/estop", LATCHED)
            n.create_timer(0.02, lambda: hw.publish(Bool(data=False)))
        self.scan_pub = (
            n.create_publisher(Float32MultiArray, scan_topic, qos_profile_sensor_data)
            if wrong_scan_type
            else n.create_publisher(LaserScan, scan_topic, qos_profile_sensor_data)
        )
        self.wrong_scan_type = wrong_scan_type
        self.image_pub = n.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.instr_pub = n.create_publisher(String, "/reflex/instruction", RELIABLE)
        self.estop_pub = n.create_publisher(Bool, "/reflex/estop", LATCHED)
        self.reset_pub = n.create_publisher(Empty, "/reflex/estop_reset", RELIABLE)
        self.start_pub = n.create_publisher(Empty, "/reflex/start", RELIABLE)
        self.lock = threading.Lock()
        self.cmds = []  # (monotonic s, vx, source timestamp ns, received timestamp ns)
        self.cmd_headers = []  # (header stamp ns, frame_id, source timestamp ns) of TwistStamped
        self.diagnostics = []
        self.stamped = (cmd_vel_type or CMD_VEL_TYPE) == "twist_stamped"
        n.create_subscription(
            TwistStamped if self.stamped else Twist, "/cmd_vel", self._on_cmd, RELIABLE
        )
        # The drive's odometry (/odom at 100 Hz): it follows the last command, unless a scenario
        # makes the base slide (odom_vx) or the odometry lag (odom_lag_s, in the header stamp).
        self.odom_pub = n.create_publisher(Odometry, "/odom", RELIABLE)
        self.odom_vx = None
        self.odom_lag_s = 0.0
        self.odom_on = True
        n.create_timer(0.01, self._odom)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RELIABLE)
        self.wall_m = None
        self.scans_on = scans
        self.image = image_msg()
        n.create_timer(0.04, self._scan)
        n.create_timer(0.05, lambda: self.image_pub.publish(self.image))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)

    def start(self):
        self.thread.start()

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()

    def _scan(self):
        if not self.scans_on:
            return
        if self.wrong_scan_type:
            self.scan_pub.publish(Float32MultiArray(data=[float("inf")] * BEAMS))
        else:
            self.scan_pub.publish(scan_msg(self.wall_m, self.node))

    def _odom(self):
        if not self.odom_on:
            return
        with self.lock:
            vx = self.cmds[-1][1] if self.cmds else 0.0
        m = Odometry()
        m.header.frame_id = "odom"
        m.child_frame_id = "base_link"
        stamp_ns = time.time_ns() - int(self.odom_lag_s * 1e9)
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        m.twist.twist.linear.x = float(self.odom_vx if self.odom_vx is not None else vx)
        self.odom_pub.publish(m)

    def _on_cmd(self, msg, info):
        # rmw's message info: the writer's source timestamp (when Reflex put it on the wire)
        # and when this peer's middleware received it, both on the system clock (ns).
        src = info.get("source_timestamp", 0) if isinstance(info, dict) else 0
        recv = info.get("received_timestamp", 0) if isinstance(info, dict) else 0
        twist = msg.twist if self.stamped else msg
        with self.lock:
            self.cmds.append((time.monotonic(), twist.linear.x, src, recv))
            if self.stamped:
                h = msg.header
                self.cmd_headers.append(
                    (h.stamp.sec * 1_000_000_000 + h.stamp.nanosec, h.frame_id, src)
                )

    def _on_diag(self, msg):
        with self.lock:
            self.diagnostics.append(msg)

    def vx_since(self, t0):
        with self.lock:
            return [(c[0] - t0, c[1]) for c in self.cmds if c[0] >= t0]

    def samples_since(self, t0):
        with self.lock:
            return [c for c in self.cmds if c[0] >= t0]

    def wait_for(self, what, pred, timeout, t0=None):
        """Seconds from t0 (default: now) until pred(vx) holds for a /cmd_vel sample, or None."""
        t0 = time.monotonic() if t0 is None else t0
        while time.monotonic() - t0 < timeout:
            for dt, vx in self.vx_since(t0):
                if pred(vx):
                    return dt
            time.sleep(0.005)
        print(f"  {what}: not within {timeout} s (last vx: {self.vx_since(t0)[-3:]})")
        return None

    def press(self, pressed):
        self.estop_pub.publish(Bool(data=pressed))

    def reset(self):
        self.reset_pub.publish(Empty())

    def send_start(self):
        """SAF-013: after a reset the robot moves only after a start."""
        self.start_pub.publish(Empty())

    def reset_and_start(self):
        self.reset()
        time.sleep(0.15)
        self.send_start()

    def nodes(self):
        return {
            (ns.rstrip("/") + "/" + name)
            for name, ns in self.node.get_node_names_and_namespaces()
        }

    def wait_node(self, fqn, timeout=10.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if fqn in self.nodes():
                return True
            time.sleep(0.05)
        return False

    def call(self, srv_type, name, request, timeout=5.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                return None
            future = client.call_async(request)
            t0 = time.monotonic()
            while not future.done() and time.monotonic() - t0 < timeout:
                time.sleep(0.01)
            return future.result() if future.done() else None
        finally:
            self.node.destroy_client(client)


def lidar_process():
    """A lidar as its own process: clear scans at 25 Hz until killed (or its parent is gone:
    an orphan must not keep feeding clear scans to a later test)."""
    parent = os.getppid()
    rclpy.init()
    node = rclpy.create_node("lidar_peer")
    pub = node.create_publisher(LaserScan, "/scan", qos_profile_sensor_data)

    def tick():
        if os.getppid() != parent:
            os._exit(0)
        pub.publish(scan_msg(None, node))

    node.create_timer(0.04, tick)
    rclpy.spin(node)


class Checks:
    def __init__(self):
        self.failures = []

    def __call__(self, name, ok):
        print(("PASS " if ok else "FAIL ") + name, flush=True)
        if not ok:
            self.failures.append(name)
        return ok


def start_reflex(a, config, ros_args=(), env=None):
    cmd = [a.reflex, "run", "--io", a.io, "--config", str(config), "--policy", str(POLICY)]
    cmd += ["--duration", "120"]
    if ros_args:
        cmd += ["--ros-args", *ros_args]
    return subprocess.Popen(
        cmd,
        env=env or os.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_reflex(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    try:
        return proc.communicate()
    except ValueError:  # already collected
        return "", ""


def wait_first_command(robot, proc, t0, timeout=30.0):
    while not robot.vx_since(t0) and proc.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.002)
    cmds = robot.vx_since(t0)
    if not cmds:
        out, err = stop_reflex(proc)
        raise SystemExit(
            f"reflex never published /cmd_vel (exit {proc.returncode}):\n{err[-3000:]}"
        )
    return cmds[0][0]


def release_and_reset(robot, reset=None, what="motion after release + reset + start", start=None, check=None):
    """Releases the E-stop, then resets (`reset()`, default the topic) and starts (`start()`,
    default the topic; SAF-013) until the robot drives: a reset that arrives before the release
    is refused, as it must be. With `check`, first proves a reset alone does not move it.
    Seconds from the first reset to motion, or None."""
    robot.press(False)
    t0 = None
    for _ in range(4):
        time.sleep(0.1)
        t0 = t0 or time.monotonic()
        (reset or robot.reset)()
        if check is not None:
            t_reset = time.monotonic()
            time.sleep(1.0)
            moved = [vx for _, vx in robot.vx_since(t_reset) if abs(vx) > 1e-6]
            check("SAF-013 release + reset without a start => still stopped (1 s)", not moved)
            check = None
        time.sleep(0.15)
        (start or robot.send_start)()
        if robot.wait_for(what, lambda vx: vx > 0.05, 1.5) is not None:
            return next(dt for dt, vx in robot.vx_since(t0) if vx > 0.05)
    return None


def diagnostics_values(robot, timeout=3.0):
    """The newest /diagnostics status (waiting for one) and its values as a dict."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with robot.lock:
            d = [m for m in robot.diagnostics if m.status]
        if d:
            return d[-1].status[0], {kv.key: kv.value for kv in d[-1].status[0].values}
        time.sleep(0.05)
    return None, {}


def scenario_basic(a, check):
    robot = Robot(wrong_scan_type=a.scenario == "wrong-type")
    robot.press(True)  # pressed before Reflex starts: transient-local delivers it on discovery
    robot.start()
    proc = start_reflex(a, CONFIG)
    lidar = None
    try:
        t0 = time.monotonic()
        wait_first_command(robot, proc, t0)
        check("Reflex appears in the rclpy graph as /reflex", robot.wait_node("/reflex"))
        robot.instr_pub.publish(String(data="go to the red marker"))
        robot.reset()  # a reset while pressed must not release
        time.sleep(2.0)
        moved = [vx for _, vx in robot.vx_since(time.monotonic() - 2.0) if abs(vx) > 1e-6]
        # The press itself arrived (not merely a source that never reported). A late-joining
        # RustDDS reader gets Fast DDS's transient-local sample on the writer's next heartbeat
        # (Fast DDS: every 3 s), rcl's at once; the robot is held stopped meanwhile either way.
        got_press = None
        while got_press is None and time.monotonic() - t0 < 10.0:
            d, values = diagnostics_values(robot)
            if int(values.get("inputs.estop_messages", "0")) >= 1:
                got_press = time.monotonic() - t0
            else:
                time.sleep(0.2)
        moved += [vx for _, vx in robot.vx_since(t0) if abs(vx) > 1e-6]
        check(
            "E-stop latched before start keeps the robot stopped "
            f"(the press arrived, seen in /diagnostics {got_press and round(got_press, 1)} s "
            "after the first command)",
            not moved and got_press is not None,
        )
        check(
            "/diagnostics says ERROR 'E-stop latched' while latched",
            d is not None and level(d) == 2 and "E-stop latched" in d.message,
        )
        dt = release_and_reset(robot, what="motion on a clear path", check=check)
        check(f"clear path => motion ({dt and round(dt, 2)} s after the reset)", dt is not None)
        if a.scenario == "wrong-type":
            # The negative control holds only if the scans are the one thing missing.
            d, values = diagnostics_values(robot)
            images, scans = int(values.get("inputs.images", "0")), values.get("inputs.scans")
            print(f"  wrong-type: inputs.images {images}, inputs.scans {scans}")
            return 3 if dt is None and images > 0 and scans == "0" else 1

        robot.wall_m = 0.05  # inside the 0.10 m margin: no forward motion is safe
        dt = robot.wait_for("stop for an obstacle", lambda vx: abs(vx) < 1e-6, 2.0)
        check(f"obstacle 0.05 m ahead => stop ({dt and round(dt, 2)} s)", dt is not None)
        robot.wall_m = None
        dt = robot.wait_for("motion again", lambda vx: vx > 0.05, 5.0)
        check("obstacle gone => motion again", dt is not None)

        robot.press(True)
        dt = robot.wait_for("stop for the E-stop topic", lambda vx: abs(vx) < 1e-6, 2.0)
        check(f"E-stop topic => stop ({dt and round(dt, 2)} s)", dt is not None)
        if a.io == "ros2":
            # The std_srvs/Trigger service ~/reset_estop: refused while pressed, then resets.
            time.sleep(0.1)
            res = robot.call(Trigger, "/reflex/reset_estop", Trigger.Request())
            check(
                f"~/reset_estop while pressed answers success=false ({res and res.message!r})",
                res is not None and not res.success and "refused" in res.message,
            )
            answers = []

            def trigger():
                res = robot.call(Trigger, "/reflex/reset_estop", Trigger.Request())
                answers.append(res)

            starts = []

            def start_service():
                starts.append(robot.call(Trigger, "/reflex/start", Trigger.Request()))

            dt = release_and_reset(robot, trigger, start=start_service)
            res = answers[-1] if answers else None
            check(
                f"~/reset_estop (std_srvs/Trigger) after release answers success ({res and res.message!r})",
                res is not None and res.success,
            )
            res = starts[-1] if starts else None
            check(
                f"~/start (std_srvs/Trigger) after the reset answers success ({res and res.message!r})",
                res is not None and res.success,
            )
        else:
            dt = release_and_reset(robot)
        check("release + reset => motion", dt is not None)

        # Diagnostics while running: the model, its digest, the loop's and the inputs' numbers.
        time.sleep(1.2)
        d, values = diagnostics_values(robot)
        check(
            f"/diagnostics while running: '{d and d.name}' level {d and level(d)} "
            f"({d and d.message}), hardware_id {d and d.hardware_id!r}, model "
            f"{values.get('model')!r}, inputs.scans {values.get('inputs.scans')}",
            d is not None
            and d.name == "reflex: control loop"
            and level(d) in (0, 1)
            and d.hardware_id == "/reflex"
            and values.get("model") == "reflex-demo-vla 0.1.0"
            and len(values.get("model_digest", "")) == 64
            and int(values.get("ticks", "0")) > 100
            and values.get("estop_latched") == "false"
            and values.get("state") == "running"
            and values.get("safety_config_hash", "").startswith("sha256:")
            and int(values.get("inputs.scans", "0")) > 10
            and int(values.get("inputs.images", "0")) > 10,
        )

        if robot.stamped:
            with robot.lock:
                hs = robot.cmd_headers[-300:]
            off = [h for h in hs if h[1] != "base_link" or h[0] != 0]
            check(
                f"/cmd_vel is TwistStamped (Jazzy's default) with a zero stamp (the controller "
                f"stamps it on receipt) and frame base_link: {len(hs)} samples, {len(off)} off {off[:3]}",
                len(hs) > 100 and not off,
            )

        # SAF-012: a press released 1 ms later (shorter than a period) still latches.
        robot.press(True)
        time.sleep(0.001)
        robot.press(False)
        dt = robot.wait_for("stop for a 1 ms press", lambda vx: abs(vx) < 1e-6, 2.0)
        check(f"SAF-012 a 1 ms press => stop ({dt and round(dt, 3)} s)", dt is not None)
        t1 = time.monotonic()
        time.sleep(1.5)
        moved = [vx for _, vx in robot.vx_since(t1) if abs(vx) > 1e-6]
        check("SAF-012 ... and it stays latched after the release (1.5 s)", not moved)
        dt = release_and_reset(robot)
        check("release + reset + start => motion after the short press", dt is not None)

        # The lidar is its own node in its own process: it takes over /scan, then it is killed.
        robot.scans_on = False
        lidar = subprocess.Popen([sys.executable, __file__, "--lidar-process"])
        dt = robot.wait_for("motion on the lidar process's scans", lambda vx: vx > 0.05, 10.0)
        check("motion on scans from the lidar process", dt is not None)
        time.sleep(0.5)
        lidar.send_signal(signal.SIGKILL)
        lidar.wait()
        limit = SCAN_MAX_AGE_S + 0.6 / 1.5 + 0.2
        dt = robot.wait_for("stop after the lidar is killed", lambda vx: abs(vx) < 1e-6, 3.0)
        check(
            f"lidar process killed => stop within {limit:.2f} s ({dt and round(dt, 2)} s)",
            dt is not None and dt <= limit,
        )
        robot.scans_on = True
        dt = robot.wait_for("motion on the harness's scans again", lambda vx: vx > 0.05, 5.0)
        check("scans back => motion", dt is not None)
        # SAF-011: SIGTERM (systemd's stop; ros2 launch sends SIGINT) => zero, then a clean exit.
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.3)
        after = robot.vx_since(t_term)
        last = after[-1][1] if after else None
        check(f"SAF-011 SIGTERM => the last command on the wire is zero ({len(after)} after it, last {last})", last is not None and abs(last) < 1e-9)
        check(f"SAF-011 SIGTERM => clean exit (status {proc.returncode})", proc.returncode == 0)
    finally:
        if lidar is not None and lidar.poll() is None:
            lidar.kill()
            lidar.wait()
        out, err = stop_reflex(proc)
        robot.close()
        if check.failures:
            print(err[-3000:])
    return 0


def scenario_remap(a, check):
    robot = Robot(scan_topic="/front_lidar/scan")
    robot.start()
    proc = start_reflex(
        a,
        CONFIG,
        ["-r", "__node:=base_safety", "-r", "__ns:=/robot1", "-r", "/scan:=/front_lidar/scan"],
    )
    try:
        wait_first_command(robot, proc, time.monotonic())
        check(
            "--ros-args -r __node:= -r __ns:= => the node is /robot1/base_safety in the rclpy graph",
            robot.wait_node("/robot1/base_safety"),
        )
        check("no node named /reflex", "/reflex" not in robot.nodes())
        robot.instr_pub.publish(String(data="go to the red marker"))
        answers = []
        dt = release_and_reset(
            robot,
            lambda: answers.append(
                robot.call(Trigger, "/robot1/base_safety/reset_estop", Trigger.Request())
            ),
            what="motion on remapped scans",
        )
        check(
            "the reset service moved with the node: /robot1/base_safety/reset_estop",
            bool(answers) and answers[-1] is not None and answers[-1].success,
        )
        check(f"-r /scan:=/front_lidar/scan => motion on scans published there only ({dt and round(dt, 2)} s)", dt is not None)
        t0 = time.monotonic()
        while not [m for m in robot.diagnostics if m.status] and time.monotonic() - t0 < 3.0:
            time.sleep(0.05)
        d = [m.status[0].hardware_id for m in robot.diagnostics if m.status]
        check(
            f"/diagnostics hardware_id is the remapped node's name ({d[-1:]})",
            d[-1:] == ["/robot1/base_safety"],
        )
    finally:
        stop_reflex(proc)
        robot.close()
    return 0


def scenario_params(a, check):
    # The test config with its topics pointing nowhere: only the shipped params file's
    # ros.topics.* (the defaults /scan, /camera/image_raw, /cmd_vel) make the robot move.
    text = CONFIG.read_text().replace(
        '[ros]\nnode_name = "reflex"',
        '[ros]\nnode_name = "reflex"\n\n[ros.topics]\nscan = "/not_the_scan"\n'
        'image = "/not_the_camera"\ncmd_vel = "/not_cmd_vel"',
    )
    assert "/not_the_scan" in text, "the test config changed: [ros] node_name"
    tmp = pathlib.Path(tempfile.mkdtemp()) / "reflex.toml"
    tmp.write_text(text)
    params = REPO / "launch/params/mobile_base.yaml"
    robot = Robot()
    robot.start()
    proc = start_reflex(a, tmp, ["--params-file", str(params)])
    try:
        first = wait_first_command(robot, proc, time.monotonic())
        check(
            f"/cmd_vel on the params file's topic, not the config's /not_cmd_vel ({first:.2f} s)",
            first is not None,
        )
        check("the node is /reflex", robot.wait_node("/reflex"))
        names = ["ros.topics.scan", "ros.topics.cmd_vel", "ros.topics.image"]
        res = robot.call(GetParameters, "/reflex/get_parameters", GetParameters.Request(names=names))
        got = {} if res is None else {
            n: parameter_value_to_python(v) for n, v in zip(names, res.values)
        }
        check(
            f"the params file's values are the node's parameters, seen from rclpy ({got})",
            got == {
                "ros.topics.scan": "/scan",
                "ros.topics.cmd_vel": "/cmd_vel",
                "ros.topics.image": "/camera/image_raw",
            },
        )
        robot.instr_pub.publish(String(data="go to the red marker"))
        dt = release_and_reset(robot)
        check(f"scans and camera on the params file's topics => motion ({dt and round(dt, 2)} s)", dt is not None)
    finally:
        stop_reflex(proc)
        robot.close()
    # SAF-014: a launch parameter that would change the safety config is refused at start.
    proc = start_reflex(a, tmp, ["--params-file", str(params), "-p", "safety.base.max_vx_mps:=5.0"])
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    out, err = stop_reflex(proc)
    check(
        f"SAF-014 -p safety.base.max_vx_mps:=5.0 is refused at start (exit {proc.returncode}: "
        f"{(err or '').strip().splitlines()[-1:]})",
        proc.returncode not in (None, 0) and "SAF-014" in (err or ""),
    )
    return 0


def scenario_params_arm(a, check):
    """The shipped launch/arm.toml + launch/params/arm.yaml with the arm demo package, against
    an rclpy arm standing in for ros2_control: joint states from a first-order plant that
    follows the JointTrajectory and Float64MultiArray commands Reflex sends its controllers."""
    import tomllib

    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory

    config = tomllib.loads((REPO / "launch/arm.toml").read_text())
    arm_cfg = config["safety"]["arm"]
    limits = [(j["min_position"], j["max_position"], j["max_velocity"]) for j in arm_cfg["joints"]]
    jtc = next(c for c in config["ros"]["controllers"] if c["type"] == "joint_trajectory")
    grip = next(c for c in config["ros"]["controllers"] if c["type"] == "forward_position")
    robot = Robot(hw_heartbeat=True)
    # Two cameras on the topics arm.yaml names (not arm.toml's [ros.cameras]): a 320×240 rgb8
    # front camera and a 160×120 bgr8 wrist camera, as realsense-style drivers publish them.
    front_pub = robot.node.create_publisher(Image, "/camera_front/color/image_raw", qos_profile_sensor_data)
    wrist_pub = robot.node.create_publisher(Image, "/camera_wrist/color/image_raw", qos_profile_sensor_data)

    def camera_msg(w, h, encoding):
        m = Image()
        m.header.frame_id = "camera"
        m.height, m.width, m.encoding, m.step = h, w, encoding, w * 3
        m.data = bytes([120]) * (w * h * 3)
        return m

    front_img, wrist_img = camera_msg(320, 240, "rgb8"), camera_msg(160, 120, "bgr8")
    robot.node.create_timer(0.05, lambda: (front_pub.publish(front_img), wrist_pub.publish(wrist_img)))
    joints = robot.node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    plant = {"q": [0.1, -0.2, 0.3], "g": 0.0, "target": None, "g_target": None, "trajs": [], "grips": []}

    def on_traj(m):
        with robot.lock:
            plant["trajs"].append(m)
            if m.points:
                plant["target"] = list(m.points[0].positions)

    def on_grip(m):
        with robot.lock:
            plant["grips"].append(list(m.data))
            if m.data:
                plant["g_target"] = m.data[0]

    robot.node.create_subscription(JointTrajectory, jtc["topic"], on_traj, RELIABLE)
    robot.node.create_subscription(Float64MultiArray, grip["topic"], on_grip, RELIABLE)

    def publish_joints():
        with robot.lock:
            if plant["target"] is not None:
                plant["q"] = [q + (x - q) * 0.25 for q, x in zip(plant["q"], plant["target"])]
            if plant["g_target"] is not None:
                plant["g"] += (plant["g_target"] - plant["g"]) * 0.25
            q, g = list(plant["q"]), plant["g"]
        m = JointState()
        m.header.stamp = robot.node.get_clock().now().to_msg()
        m.name = jtc["joints"] + ["gripper"]
        m.position = q + [g]
        m.velocity = [0.0] * 4
        joints.publish(m)

    robot.node.create_timer(0.01, publish_joints)
    robot.start()
    cmd = [a.reflex, "run", "--io", "ros2", "--config", str(REPO / "launch/arm.toml")]
    cmd += ["--policy", str(REPO / "models/demo/reflex-demo-arm-reach"), "--duration", "8"]
    cmd += ["--metrics-bind", "127.0.0.1:0"]
    cmd += ["--ros-args", "--params-file", str(REPO / "launch/params/arm.yaml")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_first_command(robot, proc, time.monotonic())
        check("the node is /reflex_arm ([ros] node_name of arm.toml)", robot.wait_node("/reflex_arm"))
        names = ["ros.cameras.front", "ros.cameras.wrist", "ros.topics.joint_states", "ros.topics.scan"]
        res = robot.call(GetParameters, "/reflex_arm/get_parameters", GetParameters.Request(names=names))
        got = {} if res is None else {
            n: parameter_value_to_python(v) for n, v in zip(names, res.values)
        }
        check(
            f"arm.yaml's values are the node's parameters ({got})",
            got == {
                "ros.cameras.front": "/camera_front/color/image_raw",
                "ros.cameras.wrist": "/camera_wrist/color/image_raw",
                "ros.topics.joint_states": "/joint_states",
                "ros.topics.scan": "/scan",
            },
        )

        def subscribers(topic):
            return {
                (i.node_namespace.rstrip("/") + "/" + i.node_name)
                for i in robot.node.get_subscriptions_info_by_topic(topic)
            }

        check(
            "Reflex subscribes both cameras arm.yaml names",
            "/reflex_arm" in subscribers("/camera_front/color/image_raw")
            and "/reflex_arm" in subscribers("/camera_wrist/color/image_raw"),
        )
        check(
            "and not arm.toml's [ros.cameras] topics nor the default /camera/image_raw",
            not any("/reflex_arm" in subscribers(t)
                    for t in ("/front_camera/image_raw", "/wrist_camera/image_raw", "/camera/image_raw")),
        )
        # Release, reset (~/reset_estop), start (~/start): the arm moves to the policy's pose.
        started = False
        for _ in range(8):
            robot.press(False)
            time.sleep(0.2)
            robot.call(Trigger, "/reflex_arm/reset_estop", Trigger.Request())
            time.sleep(0.2)
            robot.call(Trigger, "/reflex_arm/start", Trigger.Request())
            time.sleep(0.5)
            with robot.lock:
                moving = [m for m in plant["trajs"] if m.points and any(abs(v) > 0.01 for v in m.points[0].velocities)]
            if moving:
                started = True
                break
        check("release + ~/reset_estop + ~/start => JointTrajectory with velocities reaches the rclpy arm", started)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            with robot.lock:
                q = list(plant["q"])
            if max(abs(x - y) for x, y in zip(q, [0.8, -0.6, 1.2])) < 0.03:
                break
            time.sleep(0.05)
        check(f"the arm reaches the policy's pose ({[round(x, 3) for x in q]})",
              max(abs(x - y) for x, y in zip(q, [0.8, -0.6, 1.2])) < 0.03)
        with robot.lock:
            trajs, grips = list(plant["trajs"]), list(plant["grips"])
        bad = []
        for m in trajs:
            if list(m.joint_names) != jtc["joints"] or not m.points or any(v != 0.0 for v in m.points[-1].velocities):
                bad.append(f"names {list(m.joint_names)} / {len(m.points)} points")
            for pt in m.points:
                for k, (x, v) in enumerate(zip(pt.positions, pt.velocities)):
                    lo, hi, vmax = limits[k]
                    if not (lo - 1e-9 <= x <= hi + 1e-9) or abs(v) > vmax + 1e-6:
                        bad.append(f"{jtc['joints'][k]}: {x} rad, {v} rad/s")
        check(f"every JointTrajectory ({len(trajs)}) names the controller's joints, ends at zero velocity and "
              f"keeps arm.toml's limits ({bad[:3]})", len(trajs) > 50 and not bad)
        g_lo, g_hi = arm_cfg["gripper"]["min_position"], arm_cfg["gripper"]["max_position"]
        check(f"gripper Float64MultiArray ({len(grips)}) inside [{g_lo}, {g_hi}]",
              grips and all(len(d) == 1 and g_lo <= d[0] <= g_hi for d in grips))
        out, err = proc.communicate(timeout=30)
        summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        stats = summary.get("ros2", {})
        check(
            f"joint states and both cameras' frames reached Reflex, joint commands left it ({stats})",
            stats.get("joint_states", 0) > 100 and stats.get("images", 0) > 20
            and stats.get("images_refused", 1) == 0
            and stats.get("joint_commands_published", 0) > 100,
        )
    finally:
        stop_reflex(proc)
        robot.close()
    return 0


def launch_node(path):
    """The Node of a shipped launch file, as launch_ros sees it: executable, arguments, name,
    namespace, parameters and remappings, with LaunchConfiguration names left as ('arg', name)."""
    import ast
    import re
    import xml.etree.ElementTree as ET

    if path.suffix == ".py":
        tree = ast.parse(path.read_text())
        configs = {}  # variable name -> launch argument name
        for n in ast.walk(tree):
            if (
                isinstance(n, ast.Assign)
                and isinstance(n.value, ast.Call)
                and getattr(n.value.func, "id", "") == "LaunchConfiguration"
            ):
                configs[n.targets[0].id] = n.value.args[0].value

        def value(v):
            if isinstance(v, ast.Name):
                return ("arg", configs[v.id])
            if isinstance(v, ast.Constant):
                return v.value
            if isinstance(v, (ast.List, ast.Tuple)):
                return [value(x) for x in v.elts]
            if isinstance(v, ast.Dict):
                return {value(k): value(x) for k, x in zip(v.keys, v.values)}
            raise ValueError(f"{path}: cannot read {ast.dump(v)}")

        node = next(
            n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"
        )
        kw = {k.arg: value(k.value) for k in node.keywords}
        return {
            "executable": kw["executable"],
            "arguments": kw.get("arguments", []),
            "name": kw.get("name"),
            "namespace": kw.get("namespace", ""),
            "parameters": kw.get("parameters", []),
            "remappings": [tuple(r) for r in kw.get("remappings", [])],
        }
    node = ET.parse(path).getroot().find("node")

    def subst(text):
        m = re.fullmatch(r"\$\(var (\w+)\)", text or "")
        return ("arg", m.group(1)) if m else text

    # launch substitutes $(var …) in the args string, then splits it (shlex).
    import shlex

    args = []
    for word in shlex.split(re.sub(r"\$\(var (\w+)\)", r"@@\1@@", node.get("args", ""))):
        m = re.fullmatch(r"@@(\w+)@@", word)
        args.append(("arg", m.group(1)) if m else word)
    params = []
    for p in node.findall("param"):
        if p.get("from"):
            params.append(subst(p.get("from")))
        else:
            params.append({p.get("name"): subst(p.get("value"))})
    return {
        "executable": node.get("exec"),
        "arguments": args,
        "name": node.get("name"),
        "namespace": subst(node.get("namespace", "")),
        "parameters": params,
        "remappings": [(r.get("from"), r.get("to")) for r in node.findall("remap")],
    }


def launch_command(node, args, reflex, tmpdir):
    """The command line launch_ros builds for `node` with launch arguments `args`."""
    import yaml

    def sub(v):
        return args[v[1]] if isinstance(v, tuple) and v[0] == "arg" else v

    cmd = [reflex if node["executable"] == "reflex" else node["executable"]]
    cmd += [str(sub(x)) for x in node["arguments"]]
    cmd += ["--ros-args"]
    if node["name"]:
        cmd += ["-r", f"__node:={node['name']}"]
    ns = str(sub(node["namespace"]) or "")
    if ns:
        cmd += ["-r", f"__ns:={ns if ns.startswith('/') else '/' + ns}"]
    for i, p in enumerate(node["parameters"]):
        if isinstance(p, dict):
            # launch_ros writes a dict of parameters to a temporary params file, values parsed
            # as YAML ("false" -> false).
            values = {str(sub(k)): yaml.safe_load(str(sub(v))) for k, v in p.items()}
            f = pathlib.Path(tmpdir) / f"launch_params_{i}.yaml"
            f.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
            cmd += ["--params-file", str(f)]
        else:
            cmd += ["--params-file", str(sub(p))]
    for src, dst in node["remappings"]:
        cmd += ["-r", f"{sub(src)}:={sub(dst)}"]
    return cmd


def scenario_launch(a, check):
    for path in [REPO / "launch/reflex.launch.py", REPO / "launch/reflex.launch.xml"]:
        node = launch_node(path)
        tmpdir = tempfile.mkdtemp()
        args = {
            # The shipped config: its hardware E-stop device is the safety controller's
            # heartbeat, which this robot publishes (hw_heartbeat).
            "config": str(REPO / "launch/mobile_base.toml"),
            "params_file": str(REPO / "launch/params/mobile_base.yaml"),
            "namespace": "/robot1",
            "use_sim_time": "false",
        }
        cmd = launch_command(node, args, a.reflex, tmpdir)
        print(f"  {path.name}: {' '.join(cmd[1:])}")
        # As shipped, the file runs the model manager, which needs an [updates] section that
        # neither the shipped configs nor this one have (issue 22): the package directory is
        # given instead, before --ros-args; everything else is the file's.
        at = cmd.index("--ros-args")
        cmd[at:at] = ["--policy", str(POLICY)]
        check(
            f"{path.name}: the command is `reflex run --io ros2 --config … --ros-args …`",
            cmd[1:5] == ["run", "--io", "ros2", "--config"] and "--ros-args" in cmd,
        )
        robot = Robot(hw_heartbeat=True)
        robot.start()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_first_command(robot, proc, time.monotonic())
            check(f"{path.name}: the node is /robot1/reflex", robot.wait_node("/robot1/reflex"))
            robot.instr_pub.publish(String(data="go to the red marker"))
            answers = []
            dt = release_and_reset(
                robot,
                lambda: answers.append(
                    robot.call(Trigger, "/robot1/reflex/reset_estop", Trigger.Request())
                ),
            )
            check(f"{path.name}: release + reset (its ~/reset_estop) => motion ({dt and round(dt, 2)} s)", dt is not None)
            res = robot.call(
                GetParameters,
                "/robot1/reflex/get_parameters",
                GetParameters.Request(names=["use_sim_time", "ros.topics.cmd_vel"]),
            )
            got = [] if res is None else [parameter_value_to_python(v) for v in res.values]
            check(f"{path.name}: its parameters reached the node ({got})", got == [False, "/cmd_vel"])
        finally:
            stop_reflex(proc)
            robot.close()
    return 0


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


def scenario_rt_fault(a, check):
    """SAF-011 with an rclpy robot: the RT thread panics (or stalls 1 s) 9 s after the start
    while the robot drives; what reaches the wire is read from the zero's source timestamp."""
    fault = "panic@9" if a.scenario == "rt-panic" else "stall@9:1.0"
    robot = Robot()
    robot.press(False)
    robot.start()
    cmd = [a.reflex, "run", "--io", a.io, "--config", str(CONFIG), "--policy", str(POLICY)]
    cmd += ["--duration", "60", "--inject-rt-fault", fault]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_first_command(robot, proc, time.monotonic())
        robot.instr_pub.publish(String(data="go to the red marker"))
        dt = release_and_reset(robot)
        check(f"motion before the fault ({dt and round(dt, 2)} s)", dt is not None)
        # A stop that is not the injected fault is told apart by what follows: the fault leaves
        # the gate's 10 zeros and then silence (panic, or the 1 s stall), while Reflex's
        # watchdog latched by the host's own timing (a CI VM's steal: 3 deadlines missed in a
        # row) keeps sending zero every period. Such a latch is released, reset and started
        # again (printed, at most 3 times).
        t_up = time.monotonic()
        t_fault = None
        host_latches = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            s = robot.samples_since(time.monotonic() - 0.2)
            if s and all(abs(c[1]) < 1e-9 for c in s[-3:]) and any(abs(c[1]) > 1e-6 for c in s):
                t_fault = s[-1][0]
                time.sleep(0.6)
                zeros = [c for c in robot.samples_since(t_fault) if c[0] <= t_fault + 0.5]
                if len(zeros) <= 25 or len(host_latches) == 3:
                    break
                host_latches.append(round(t_fault - t_up, 2))
                print(f"  HOST: Reflex stopped {t_fault - t_up:.2f} s after motion began and kept sending "
                      f"zero ({len(zeros)} in 0.5 s): its watchdog latched for the host's timing, not the "
                      "fault; release + reset + start again", flush=True)
                t_fault = None
                release_and_reset(robot)
            time.sleep(0.01)
        check(f"the fault happened while driving (host latches before it: {host_latches})", t_fault is not None)
        if t_fault is None:
            return 0
        time.sleep(1.5)
        samples = robot.samples_since(t_fault - 2.0)
        before = [i for i, c in enumerate(samples) if c[0] <= t_fault and abs(c[1]) > 1e-9]
        ok = bool(before) and before[-1] + 1 < len(samples)
        check("a zero followed the last command", ok)
        if not ok:
            return 0
        k = before[-1]
        last, zero, rest = samples[k], samples[k + 1], samples[k + 1 :]
        gap_ms = (zero[2] - last[2]) / 1e6 if last[2] and zero[2] else (zero[0] - last[0]) * 1e3
        check(f"SAF-011 {a.scenario}: zero on the wire {gap_ms:.1f} ms after the last verdict (<= 30 ms: two periods + margin)", gap_ms <= 30.0)
        moving = [c[1] for c in rest if abs(c[1]) > 1e-9]
        check(f"SAF-011 {a.scenario}: nothing but zero after it ({len(rest)} samples, {len(moving)} moving)", not moving)
        if a.scenario == "rt-panic":
            check(f"SAF-011 rt-panic: then silence ({len(rest)} zeros: 10, then the exit's own, <= 14)", len(rest) <= 14)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            out, err = stop_reflex(proc)
            check(
                f"SAF-011 rt-panic: reflex exits with an error (status {proc.returncode})",
                proc.returncode not in (None, 0) and "RT thread" in (err or ""),
            )
        else:
            t1 = time.monotonic()
            time.sleep(1.5)
            moved = [vx for _, vx in robot.vx_since(t1) if abs(vx) > 1e-6]
            check("SAF-011 rt-stall: latched after the stall (no motion for 1.5 s)", not moved)
            dt = release_and_reset(robot)
            check("release + reset + start => motion after the stall", dt is not None)
    finally:
        stop_reflex(proc)
        robot.close()
    return 0


def scenario_measure(a, check):
    # Stop category 0 (or 1 with --category 1): the E-stop ingress makes the gate send zero at
    # once in both, so the time to the first zero is the reaction of adapter + gate + wire.
    text = CONFIG.read_text().replace("stop_category = 1", f"stop_category = {a.category}")
    assert f"stop_category = {a.category}" in text
    tmp = pathlib.Path(tempfile.mkdtemp()) / "reflex.toml"
    tmp.write_text(text)
    robot = Robot()
    robot.press(False)
    robot.start()
    t_spawn = time.monotonic()
    proc = start_reflex(a, tmp)
    result = {"io": a.io, "presses": a.presses, "stop_category": a.category}
    try:
        first = wait_first_command(robot, proc, t_spawn, timeout=60.0)
        t_node = None
        while t_node is None and time.monotonic() - t_spawn < 30:
            if "/reflex" in robot.nodes():
                t_node = time.monotonic() - t_spawn
            time.sleep(0.002)
        result["spawn_to_first_command_s"] = round(first, 3)
        result["spawn_to_node_in_graph_s"] = t_node and round(t_node, 3)
        robot.instr_pub.publish(String(data="go to the red marker"))
        # The start-up reset, again until it drives (the released E-stop may still be in flight).
        for _ in range(5):
            time.sleep(0.3)
            robot.reset_and_start()
            if robot.wait_for("first motion", lambda vx: vx > 0.05, 2.0) is not None:
                break
        else:
            check("motion before the presses", False)
            return 0
        latencies = []
        wire, received = [], []
        missed = 0
        for _ in range(a.presses):
            time.sleep(random.uniform(0.0, 0.05))  # random phase against the 10 ms grids
            t0 = time.monotonic()
            t_press = time.time_ns()
            robot.press(True)
            dt = robot.wait_for("zero after the press", lambda vx: abs(vx) < 1e-9, 1.0, t0=t0)
            if dt is None:
                missed += 1
            else:
                latencies.append(dt * 1e3)
                zero = next(
                    (c for c in robot.samples_since(t0) if abs(c[1]) < 1e-9 and c[2] >= t_press),
                    None,
                )
                if zero is not None:
                    # On the wire: Reflex's write (source timestamp); at the peer: its rmw.
                    wire.append((zero[2] - t_press) / 1e6)
                    received.append((zero[3] - t_press) / 1e6)
            robot.press(False)
            # Release, then reset until it drives again (a reset before the release arrived is
            # refused, as it must be).
            for _ in range(5):
                time.sleep(0.05)
                robot.reset_and_start()
                if robot.wait_for("motion after reset", lambda vx: vx > 0.01, 1.0) is not None:
                    break
            else:
                check("motion after release + reset between presses", False)
                break
        result["stopped"] = len(latencies)
        for key, xs in (("estop_to_zero_on_wire_ms", wire), ("estop_to_zero_received_ms", received)):
            if xs:
                result[key] = {
                    "n": len(xs),
                    "p50": round(percentile(xs, 50), 3),
                    "p99": round(percentile(xs, 99), 3),
                    "max": round(max(xs), 3),
                }
        result["missed"] = missed
        if latencies:
            result["estop_to_zero_ms"] = {
                "p50": round(percentile(latencies, 50), 2),
                "p99": round(percentile(latencies, 99), 2),
                "max": round(max(latencies), 2),
            }
        print(json.dumps(result))
        if a.json:
            raw = dict(
                result,
                latencies_ms=[round(x, 3) for x in latencies],
                wire_ms=[round(x, 3) for x in wire],
                received_ms=[round(x, 3) for x in received],
            )
            pathlib.Path(a.json).write_text(json.dumps(raw) + "\n")
        check(f"every one of {a.presses} presses stopped the robot ({result})", missed == 0)
        # Bounds, not this host's speed: the median and the 90th percentile within a few
        # periods (one host stall on a 2-core CI machine must not fail it; the 1 s wait above
        # already fails a press that never stops).
        p50 = latencies and percentile(latencies, 50)
        p90 = latencies and percentile(latencies, 90)
        check(
            f"E-stop => zero /cmd_vel: p50 {p50} ms <= 40, p90 {p90} ms <= 60",
            bool(latencies) and p50 <= 40.0 and p90 <= 60.0,
        )
    finally:
        stop_reflex(proc)
        robot.close()
    return 0


class Pendant:
    """A second E-stop pendant: its own rclpy node publishing "clear" on /reflex/estop at 10 Hz."""

    def __init__(self):
        self.node = rclpy.create_node("pendant_b")
        pub = self.node.create_publisher(Bool, "/reflex/estop", LATCHED)
        self.node.create_timer(0.1, lambda: pub.publish(Bool(data=False)))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()


def scenario_pendants(a, check):
    """SAF-012 with two publishers on one E-stop topic: the robot's pendant (A) and a second
    one (B) that keeps saying "clear". dds: one state per publisher, so B cannot hide A's press.
    ros2 (r2r cannot tell publishers apart): the device counts as unknown while B exists."""
    robot = Robot()
    robot.press(True)
    robot.start()
    pendant = Pendant()
    proc = start_reflex(a, CONFIG)
    try:
        wait_first_command(robot, proc, time.monotonic())
        robot.instr_pub.publish(String(data="go to the red marker"))
        if a.io == "dds":
            dt = release_and_reset(robot)
            check(f"two pendants, both clear => motion ({dt and round(dt, 2)} s)", dt is not None)
            robot.press(True)
            dt = robot.wait_for("stop for pendant A", lambda vx: abs(vx) < 1e-6, 2.0)
            check(f"pendant A pressed => stop ({dt and round(dt, 2)} s)", dt is not None)
            time.sleep(0.3)
            for _ in range(3):
                robot.reset_and_start()
                time.sleep(0.3)
            check(
                "SAF-012 pendant B's 'clear' does not overwrite A's press: reset + start => still stopped (1 s)",
                no_motion(robot, 1.0),
            )
            dt = release_and_reset(robot)
            check(f"A released + reset + start => motion ({dt and round(dt, 2)} s)", dt is not None)
        else:
            time.sleep(1.0)
            robot.press(False)
            for _ in range(3):
                time.sleep(0.3)
                robot.reset_and_start()
            res = robot.call(Trigger, "/reflex/reset_estop", Trigger.Request())
            check(
                "SAF-012 ros2: two publishers on one E-stop topic => released + reset + start "
                "=> still stopped (1 s)",
                no_motion(robot, 1.0),
            )
            check(
                f"... ~/reset_estop refuses, naming the fix ({res and res.message!r})",
                res is not None and not res.success and "own topic" in res.message,
            )
            _, values = diagnostics_values(robot)
            check(
                f"... /diagnostics: inputs.estop_ambiguous_devices = {values.get('inputs.estop_ambiguous_devices')}",
                values.get("inputs.estop_ambiguous_devices") == "1",
            )
            pendant.close()
            pendant = None
            dt = release_and_reset(robot)
            check(f"pendant B gone => release + reset + start => motion ({dt and round(dt, 2)} s)", dt is not None)
    finally:
        if pendant is not None:
            pendant.close()
        out, err = stop_reflex(proc)
        robot.close()
        if check.failures:
            print(err[-3000:])
    return 0


no_motion = odom_checks.no_motion


def scenario_odom(a, check):
    """/odom feeds the stopping distance; stale header stamps are refused; `cmd_vel_type` set
    to Twist against the Jazzy default."""
    robot = Robot(cmd_vel_type="twist")
    robot.press(True)
    robot.start()
    proc = start_reflex(a, odom_checks.odom_config(CONFIG, "twist"))
    try:
        wait_first_command(robot, proc, time.monotonic())
        robot.instr_pub.publish(String(data="go to the red marker"))
        dt = release_and_reset(robot, what="motion with odometry required")
        check(f"cmd_vel_type = \"twist\": Twist on /cmd_vel; odometry fresh => motion ({dt and round(dt, 2)} s)", dt is not None)
        odom_checks.run(robot, check, lambda: diagnostics_values(robot)[1])
    finally:
        out, err = stop_reflex(proc)
        robot.close()
        if check.failures:
            print(err[-3000:])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reflex")
    ap.add_argument("--io", choices=["ros2", "dds"], default="ros2")
    ap.add_argument(
        "--scenario",
        choices=["basic", "remap", "params", "params-arm", "launch", "wrong-type", "measure", "rt-panic", "rt-stall", "odom", "pendants"],
        default="basic",
    )
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--category", type=int, choices=[0, 1], default=0)
    ap.add_argument("--json")
    ap.add_argument("--lidar-process", action="store_true")
    a = ap.parse_args()
    if a.lidar_process:
        return lidar_process()
    if not a.reflex:
        ap.error("--reflex is required")
    # One test, one DDS domain, loopback only (ROS_LOCALHOST_ONLY is deprecated in Jazzy);
    # Reflex and the lidar process inherit both.
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    rclpy.init()
    check = Checks()
    run = {
        "basic": scenario_basic,
        "wrong-type": scenario_basic,
        "remap": scenario_remap,
        "params": scenario_params,
        "params-arm": scenario_params_arm,
        "launch": scenario_launch,
        "measure": scenario_measure,
        "rt-panic": scenario_rt_fault,
        "rt-stall": scenario_rt_fault,
        "odom": scenario_odom,
        "pendants": scenario_pendants,
    }[a.scenario]
    code = run(a, check)
    rclpy.shutdown()
    if code == 3:
        sys.exit(3)
    if code == 1:
        sys.exit("the negative control did not fail for the reason it tests (see above)")
    if check.failures:
        sys.exit(f"{len(check.failures)} checks failed: {check.failures}")
    print("all checks passed")


if __name__ == "__main__":
    main()
