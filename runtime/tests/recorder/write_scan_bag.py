#!/usr/bin/env python3
"""Writes a rosbag2-style MCAP of a cell scanner with PyPI `mcap-ros2-support`'s writer (the
ROS 2 profile, `cdr` messages, the `ros2msg` schema: what `ros2 bag record -s mcap` writes), for
`reflex teach-background`'s tests: 720 beams, a wall 4 m around, four table legs; with
`--person` someone walks across the cell 1 m from the scanner during the recording; every
range off by up to `--noise-m` (uniform, seeded).

    write_scan_bag.py OUT [--person] [--scans N] [--noise-m M] [--topic /scan]
"""
import argparse
import math
import random

from mcap_ros2.writer import Writer

# sensor_msgs/msg/LaserScan with its dependencies, as rosbag2 stores it.
MSGDEF = """std_msgs/Header header
float32 angle_min
float32 angle_max
float32 angle_increment
float32 time_increment
float32 scan_time
float32 range_min
float32 range_max
float32[] ranges
float32[] intensities
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""

BEAMS = 720
LEGS = [(0.4, 0.2, 0.025), (0.4, -0.2, 0.025), (-0.3, 0.2, 0.025), (-0.3, -0.2, 0.025)]
BODY = 0.15


def hit(x, y, radius, c, s):
    along = x * c + y * s
    across2 = x * x + y * y - along * along
    if along > 0 and across2 <= radius * radius:
        return along - math.sqrt(radius * radius - across2)
    return math.inf


def ranges(t, person, noise, rng):
    inc = 2 * math.pi / BEAMS
    out = []
    for i in range(BEAMS):
        a = -math.pi + i * inc
        c, s = math.cos(a), math.sin(a)
        r = 4.0
        for x, y, radius in LEGS:
            r = min(r, hit(x, y, radius, c, s))
        if person:
            r = min(r, hit(-2.0 + 1.6 * t, 1.0, BODY, c, s))
        out.append(r + rng.uniform(-noise, noise) if math.isfinite(r) else r)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--person", action="store_true")
    p.add_argument("--scans", type=int, default=80)
    p.add_argument("--noise-m", type=float, default=0.0)
    p.add_argument("--topic", default="/scan")
    a = p.parse_args()
    inc = 2 * math.pi / BEAMS
    rng = random.Random(7)
    with open(a.out, "wb") as f:
        w = Writer(f)
        schema = w.register_msgdef("sensor_msgs/msg/LaserScan", MSGDEF)
        for k in range(a.scans):
            t = k * 0.05
            ns = 1_700_000_000_000_000_000 + k * 50_000_000
            w.write_message(
                topic=a.topic,
                schema=schema,
                message={
                    "header": {
                        "stamp": {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000},
                        "frame_id": "cell_scanner",
                    },
                    "angle_min": -math.pi,
                    "angle_max": math.pi - inc,
                    "angle_increment": inc,
                    "time_increment": 0.0,
                    "scan_time": 0.05,
                    "range_min": 0.05,
                    "range_max": 30.0,
                    "ranges": ranges(t, a.person, a.noise_m, rng),
                    "intensities": [],
                },
                log_time=ns,
                publish_time=ns,
                sequence=k,
            )
        w.finish()


if __name__ == "__main__":
    main()
