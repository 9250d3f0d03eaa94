#!/usr/bin/env python3
"""CDR golden files for every ROS 2 message Reflex uses, serialized by PyPI `rosbags` (ROS 2
Humble type store; these messages are identical in Jazzy). runtime/tests/cdr_golden.rs builds the
same values in Rust and asserts byte equality both ways.

    .venv/bin/python runtime/tests/cdr/make_cdr_golden.py          # (re)write the .cdr files
    .venv/bin/python runtime/tests/cdr/make_cdr_golden.py --check  # fail if they differ
"""
import pathlib
import sys

import numpy as np
from rosbags.typesys import Stores, get_typestore

HERE = pathlib.Path(__file__).resolve().parent
ts = get_typestore(Stores.ROS2_HUMBLE)
T = ts.types


def header(sec, nanosec, frame):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame
    )


MESSAGES = {
    "laser_scan": T["sensor_msgs/msg/LaserScan"](
        header=header(12, 500_000_000, "laser"),
        angle_min=-3.125,
        angle_max=3.125,
        angle_increment=0.5,
        time_increment=0.0,
        scan_time=0.04,
        range_min=0.05,
        range_max=30.0,
        ranges=np.array([1.5, 2.25, float("inf"), 0.75], dtype=np.float32),
        intensities=np.array([], dtype=np.float32),
    ),
    "joint_state": T["sensor_msgs/msg/JointState"](
        header=header(3, 7, "base"),
        name=["shoulder", "elbow"],
        position=np.array([0.5, -1.25], dtype=np.float64),
        velocity=np.array([0.0, 0.125], dtype=np.float64),
        effort=np.array([], dtype=np.float64),
    ),
    "image": T["sensor_msgs/msg/Image"](
        header=header(1, 2, "camera"),
        height=2,
        width=3,
        encoding="rgb8",
        is_bigendian=0,
        step=9,
        data=np.arange(18, dtype=np.uint8),
    ),
    "string": T["std_msgs/msg/String"](data="go to the red marker"),
    "bool_true": T["std_msgs/msg/Bool"](data=True),
    "empty": T["std_msgs/msg/Empty"](),
    "twist": T["geometry_msgs/msg/Twist"](
        linear=T["geometry_msgs/msg/Vector3"](x=0.5, y=-0.25, z=0.0),
        angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=1.125),
    ),
    "twist_stamped": T["geometry_msgs/msg/TwistStamped"](
        header=header(1_700_000_000, 250_000_000, "base_link"),
        twist=T["geometry_msgs/msg/Twist"](
            linear=T["geometry_msgs/msg/Vector3"](x=0.5, y=0.0, z=0.0),
            angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=-0.75),
        ),
    ),
    "odometry": T["nav_msgs/msg/Odometry"](
        header=header(5, 6, "odom"),
        child_frame_id="base_link",
        pose=T["geometry_msgs/msg/PoseWithCovariance"](
            pose=T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=0.0),
                orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.5, w=0.875),
            ),
            covariance=np.arange(36, dtype=np.float64) / 8,
        ),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](
            twist=T["geometry_msgs/msg/Twist"](
                linear=T["geometry_msgs/msg/Vector3"](x=0.625, y=-0.125, z=0.0),
                angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.25),
            ),
            covariance=-np.arange(36, dtype=np.float64),
        ),
    ),
    "diagnostic_array": T["diagnostic_msgs/msg/DiagnosticArray"](
        header=header(100, 0, ""),
        status=[
            T["diagnostic_msgs/msg/DiagnosticStatus"](
                level=2,
                name="reflex: control loop",
                message="E-stop latched: robot stopped",
                hardware_id="robot-1",
                values=[
                    T["diagnostic_msgs/msg/KeyValue"](key="ticks", value="42"),
                    T["diagnostic_msgs/msg/KeyValue"](key="estop_latched", value="true"),
                ],
            )
        ],
    ),
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, msg in MESSAGES.items():
        data = bytes(ts.serialize_cdr(msg, msg.__msgtype__))
        path = HERE / f"{name}.cdr"
        if check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(path.name)
        else:
            path.write_bytes(data)
    if stale:
        sys.exit(f"CDR golden files differ from rosbags' output: {stale}; rerun without --check")
    print(("checked " if check else "wrote ") + f"{len(MESSAGES)} CDR golden files in {HERE}")


if __name__ == "__main__":
    main()
