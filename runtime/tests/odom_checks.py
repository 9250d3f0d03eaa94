"""The /odom checks both wire harnesses run (runtime/tests/ros2/harness.py with rclpy,
runtime/tests/dds/harness.py with Cyclone DDS): the robot object has `wall_m`, `odom_vx`,
`odom_lag_s`, `vx_since(t0)` and `wait_for(what, pred, timeout)`."""
import pathlib
import tempfile
import time


def odom_config(base, cmd_vel_type, cmd_vel_stamp="zero"):
    """The test config with odometry required (100 ms), header stamps checked (clocks shared:
    the same host, 200 ms) and /cmd_vel of the given type (and stamp, for TwistStamped)."""
    text = pathlib.Path(base).read_text()
    assert "[safety.base]\n" in text and text.rstrip().endswith('node_name = "reflex"')
    text = text.replace("[safety.base]\n", "[safety.base]\nodometry_max_age_ms = 100.0\n")
    text += f'max_stamp_age_ms = 200.0\ncmd_vel_type = "{cmd_vel_type}"\ncmd_vel_stamp = "{cmd_vel_stamp}"\n'
    path = pathlib.Path(tempfile.mkdtemp(prefix="reflex-odom-")) / "odom.toml"
    path.write_text(text)
    return path


def run(robot, check, diagnostics):
    """A wall 1.6 m ahead is outside the stopping distance of what Reflex commands (<= 1 m/s:
    0.53 m + 0.8 m slow-down zone), inside that of a base that odometry says moves at 2.5 m/s
    (2.4 m); then odometry whose header stamps lag 0.5 s (refused: odometry stale => stop)."""
    robot.wall_m = 1.6
    time.sleep(1.5)
    t1 = time.monotonic()
    time.sleep(1.0)
    v = [vx for _, vx in robot.vx_since(t1)]
    moving = [vx for vx in v if vx > 0.02]
    # Most, not all: a host stall makes the actuator gate send a zero now and then (SAF-011).
    check(
        f"wall 1.6 m ahead, odometry = the commanded speed => still moving ({len(moving)} of "
        f"{len(v)} samples > 0.02 m/s, median {sorted(v)[len(v) // 2] if v else None})",
        len(v) > 20 and len(moving) >= 0.8 * len(v),
    )
    robot.odom_vx = 2.5
    dt = robot.wait_for("stop for the sliding base", lambda vx: abs(vx) < 1e-6, 3.0)
    check(f"odometry says 2.5 m/s (base sliding) => stop for the wall ({dt and round(dt, 2)} s)", dt is not None)
    time.sleep(0.3)
    check("... and it stays stopped while odometry says 2.5 m/s (1 s)", no_motion(robot, 1.0))
    robot.odom_vx = None
    robot.wall_m = None
    dt = robot.wait_for("motion once odometry follows again", lambda vx: vx > 0.05, 5.0)
    check(f"odometry back to the commanded speed, wall gone => motion ({dt and round(dt, 2)} s)", dt is not None)
    before = int(diagnostics().get("inputs.stale_stamps", "0"))
    for lag_s, what in [(0.5, "0.5 s old"), (-0.5, "0.5 s in the future")]:
        robot.odom_lag_s = lag_s
        dt = robot.wait_for(f"stop for odometry stamped {what}", lambda vx: abs(vx) < 1e-6, 3.0)
        check(
            f"odometry header stamps {what} (bound 200 ms) => refused => stop ({dt and round(dt, 2)} s)",
            dt is not None and no_motion(robot, 0.5),
        )
        robot.odom_lag_s = 0.0
        dt = robot.wait_for("motion once odometry is fresh again", lambda vx: vx > 0.05, 5.0)
        check(f"fresh odometry again => motion ({dt and round(dt, 2)} s)", dt is not None)
    values = diagnostics()
    stale = int(values.get("inputs.stale_stamps", "0"))
    check(
        f"/diagnostics counts them: inputs.stale_stamps {before} -> {stale}, "
        f"inputs.odometry_refused {values.get('inputs.odometry_refused')}",
        stale > before + 20 and int(values.get("inputs.odometry_refused", "0")) >= stale - before,
    )
    # The drive's odometry goes silent: required (100 ms), so the robot stops; counted.
    lapses = int(values.get("inputs.odometry_lapses", "0"))
    robot.odom_on = False
    dt = robot.wait_for("stop for silent odometry", lambda vx: abs(vx) < 1e-6, 3.0)
    check(
        f"odometry silent => stop ({dt and round(dt, 2)} s)",
        dt is not None and no_motion(robot, 0.5),
    )
    time.sleep(1.2)
    values = diagnostics()
    check(
        f"... counted: inputs.odometry_lapses {lapses} -> {values.get('inputs.odometry_lapses')}",
        int(values.get("inputs.odometry_lapses", "0")) > lapses,
    )
    robot.odom_on = True
    dt = robot.wait_for("motion once odometry is back", lambda vx: vx > 0.05, 5.0)
    check(f"odometry back => motion ({dt and round(dt, 2)} s)", dt is not None)


def no_motion(robot, seconds):
    t0 = time.monotonic()
    time.sleep(seconds)
    return not [vx for _, vx in robot.vx_since(t0) if abs(vx) > 1e-6]
