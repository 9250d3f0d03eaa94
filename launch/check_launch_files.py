#!/usr/bin/env python3
"""Checks that launch/ cannot drift from Reflex's config schema.

- every params file (launch/params/NAME.yaml): each parameter, flattened to its dotted name, is
  applied to launch/NAME.toml with `reflex check-config --set KEY=VALUE`, which refuses any key
  the schema does not have (ROS's own `use_sim_time` maps to `ros.use_sim_time`);
- ros2_control/arm_controllers.yaml matches arm.toml's [[ros.controllers]]: each controller's
  topic is `/<controller name>/<its topic>`, its type and joints are the ones Reflex commands,
  and the settings that stop the arm when Reflex falls silent hold (JTC: cmd_timeout > 0 and
  above goal_time, trajectories may not end moving; no velocity forward controller);
- reflex.launch.py (parsed with `ast`) and reflex.launch.xml (ElementTree) declare the same
  arguments, start `reflex run --config …`, set only parameters that exist, and remap only
  topics Reflex has (defaults read from runtime/ros/src/port.rs).

    .venv/bin/python launch/check_launch_files.py --reflex target/debug/reflex
    ... --inject-bad-key   # negative control: must fail
"""
import argparse
import ast
import json
import pathlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

from ruamel.yaml import YAML

LAUNCH = pathlib.Path(__file__).resolve().parent
REPO = LAUNCH.parent
ROS_STANDARD = {"use_sim_time": "ros.use_sim_time"}
EXPECTED_ARGS = {"config", "params_file", "namespace", "use_sim_time"}


def fail(msg):
    sys.exit(f"check_launch_files: {msg}")


def flatten(prefix, value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[ROS_STANDARD.get(prefix, prefix)] = value


def params_of(path):
    doc = YAML(typ="safe").load(path.read_text())
    out = {}
    for node, body in doc.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            fail(f"{path}: node {node!r} has no ros__parameters")
        flatten("", body["ros__parameters"], out)
    return out


def toml_literal(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str, list)):
        return json.dumps(value)
    fail(f"unsupported parameter value {value!r}")


def check_config(reflex, config, params):
    cmd = [reflex, "check-config", "--config", str(config)]
    for key, value in params.items():
        cmd += ["--set", f"{key}={toml_literal(value)}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{config} with {sorted(params)}: {out.stderr.strip() or out.stdout.strip()}")
    return len(params)


def reflex_topics():
    src = (REPO / "runtime/ros/src/port.rs").read_text()
    block = src[src.index("impl Default for Topics") :]
    block = block[: block.index("\n}\n")]
    return set(re.findall(r'"(/[^"]+)"\.into\(\)', block))


def check_launch_py(path, topics):
    tree = ast.parse(path.read_text())
    args, node = set(), None
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            continue
        if call.func.id == "DeclareLaunchArgument":
            args.add(ast.literal_eval(call.args[0]))
        elif call.func.id == "Node":
            node = {kw.arg: kw.value for kw in call.keywords}
    if args != EXPECTED_ARGS:
        fail(f"{path}: launch arguments {sorted(args)} != {sorted(EXPECTED_ARGS)}")
    if node is None or ast.literal_eval(node["executable"]) != "reflex":
        fail(f"{path}: no Node(executable='reflex')")
    arguments = node["arguments"]
    first = [ast.literal_eval(e) for e in arguments.elts[:4]]
    if first != ["run", "--io", "ros2", "--config"]:
        fail(f"{path}: the node must run `reflex run --io ros2 --config CONFIG`, not {first}")
    params = {}
    for p in node["parameters"].elts:
        if isinstance(p, ast.Dict):
            for k in p.keys:
                key = ast.literal_eval(k)
                params[ROS_STANDARD.get(key, key)] = True
    for remap in node["remappings"].elts:
        src = ast.literal_eval(remap.elts[0])
        if src not in topics:
            fail(f"{path}: remaps {src}, which is not a Reflex topic ({sorted(topics)})")
    return params


def check_launch_xml(path, topics):
    root = ET.parse(path).getroot()
    args = {a.get("name") for a in root.findall("arg")}
    if args != EXPECTED_ARGS:
        fail(f"{path}: launch arguments {sorted(args)} != {sorted(EXPECTED_ARGS)}")
    node = root.find("node")
    if node is None or node.get("exec") != "reflex":
        fail(f"{path}: no <node exec='reflex'>")
    if not node.get("args", "").startswith("run --io ros2 --config "):
        fail(f"{path}: the node must run `reflex run --io ros2 --config CONFIG`")
    params = {}
    for p in node.findall("param"):
        if p.get("name"):
            params[ROS_STANDARD.get(p.get("name"), p.get("name"))] = True
        elif p.get("from") != "$(var params_file)":
            fail(f"{path}: <param from=…> must be the params_file argument")
    for r in node.findall("remap"):
        if r.get("from") not in topics:
            fail(f"{path}: remaps {r.get('from')}, which is not a Reflex topic")
    return params


def check_controllers(config_path, controllers_path):
    """arm.toml's [[ros.controllers]] against the ros2_control file a robot loads."""
    import tomllib

    ros = tomllib.loads(config_path.read_text()).get("ros", {})
    doc = YAML(typ="safe").load(controllers_path.read_text())
    manager = doc["controller_manager"]["ros__parameters"]
    kinds = {
        "joint_trajectory": ("joint_trajectory_controller/JointTrajectoryController", "joint_trajectory"),
        "forward_position": ("position_controllers/JointGroupPositionController", "commands"),
        "forward_velocity": ("velocity_controllers/JointGroupVelocityController", "commands"),
    }
    checked = 0
    for i, c in enumerate(ros.get("controllers", [])):
        where = f"{config_path.name} ros.controllers[{i}] ({c['topic']})"
        parts = c["topic"].strip("/").split("/")
        if len(parts) != 2:
            fail(f"{where}: expected /<controller>/<topic>")
        name, topic = parts
        want_type, want_topic = kinds[c["type"]]
        if manager.get(name, {}).get("type") != want_type or topic != want_topic:
            fail(f"{where}: {controllers_path.name} has no {want_type} named {name!r} taking ~/{topic}")
        params = doc.get(name, {}).get("ros__parameters", {})
        if params.get("joints") != c["joints"]:
            fail(f"{where}: joints {c['joints']} but {name}.joints = {params.get('joints')}")
        if c["type"] == "joint_trajectory":
            timeout = params.get("cmd_timeout", 0.0)
            goal = params.get("constraints", {}).get("goal_time", 0.0)
            if not timeout > max(goal, 0.0):
                fail(f"{name}.cmd_timeout = {timeout}: must be > 0 and > constraints.goal_time ({goal}), else JTC never times out")
            if params.get("allow_nonzero_velocity_at_trajectory_end", False):
                fail(f"{name}.allow_nonzero_velocity_at_trajectory_end: a trajectory could end moving")
        if c["type"] == "forward_velocity":
            fail(f"{where}: a velocity forward controller never times out")
        checked += 1
    if not checked:
        fail(f"{config_path.name}: no [[ros.controllers]] to check against {controllers_path.name}")
    return checked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reflex", required=True)
    ap.add_argument("--inject-bad-key", action="store_true")
    ap.add_argument("--controllers", default=str(LAUNCH / "ros2_control/arm_controllers.yaml"),
                    help="the ros2_control file checked against arm.toml (a test passes a broken copy)")
    a = ap.parse_args()
    topics = reflex_topics()
    if len(topics) < 8:
        fail(f"could not read the topic defaults from runtime/ros/src/port.rs: {topics}")
    checked = 0
    for params_file in sorted((LAUNCH / "params").glob("*.yaml")):
        config = LAUNCH / f"{params_file.stem}.toml"
        if not config.exists():
            fail(f"{params_file}: no matching config {config}")
        params = params_of(params_file)
        if a.inject_bad_key:
            params["safety.base.max_speeeed"] = 1.0
        checked += check_config(a.reflex, config, params)
    for launch_params in (
        check_launch_py(LAUNCH / "reflex.launch.py", topics),
        check_launch_xml(LAUNCH / "reflex.launch.xml", topics),
    ):
        # Launch-set parameters (values are launch substitutions): the keys must exist.
        params = {k: False for k in launch_params}
        checked += check_config(a.reflex, LAUNCH / "mobile_base.toml", params)
    controllers = check_controllers(LAUNCH / "arm.toml", pathlib.Path(a.controllers))
    print(f"launch files ok: {checked} parameters exist in Reflex's config schema; "
          f"{controllers} controllers of arm.toml match ros2_control/arm_controllers.yaml")


if __name__ == "__main__":
    main()
