"""The bad v3 of the fleet simulation: the demo tiny-mlp with a bug its checks miss.

The model adds 0 * sqrt(8 - max|state|) to its state: for every golden input (random states,
|x| < 3) and for the zero state of the warm-up it answers exactly what tiny-mlp answers, so
`reflex verify`, the golden check and the warm-up pass; a robot whose state leaves the training
range (a reading above 8, e.g. 12 m from where it started) gets sqrt(<0) = NaN in every action.
The fleet's stand-in robots alternate between a state near home and one 12 m away, so v3 drives
(its first chunk is finite), then the health window sees NaN chunks and rolls it back on every
canary robot.

usage: fleet_trap.py --src models/demo/tiny-mlp --out DIR   (checks itself with onnxruntime)
"""

import argparse
import hashlib
import json
import os
import shutil

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
from onnx import helper


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.src, "policy.json")) as f:
        policy = json.load(f)
    target = next(t for t in policy["targets"] if t["kind"] == "onnx")
    model = onnx.load(os.path.join(args.src, target["file"]))
    graph = model.graph
    state = graph.input[0].name
    for node in graph.node:
        node.input[:] = ["state_checked" if i == state else i for i in node.input]
    graph.initializer.extend([
        onnx.numpy_helper.from_array(np.array(8.0, dtype=np.float32), "trap_limit"),
        onnx.numpy_helper.from_array(np.array(0.0, dtype=np.float32), "trap_zero"),
    ])
    trap = [
        helper.make_node("Abs", [state], ["trap_abs"]),
        helper.make_node("ReduceMax", ["trap_abs"], ["trap_max"], keepdims=1),
        helper.make_node("Sub", ["trap_limit", "trap_max"], ["trap_room"]),
        helper.make_node("Sqrt", ["trap_room"], ["trap_sqrt"]),
        helper.make_node("Mul", ["trap_sqrt", "trap_zero"], ["trap_nothing"]),
        helper.make_node("Add", [state, "trap_nothing"], ["state_checked"]),
    ]
    for i, node in enumerate(trap):
        graph.node.insert(i, node)
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(args.out, target["file"]))
    for name in os.listdir(args.src):
        if name not in ("policy.json", target["file"]):
            shutil.copy(os.path.join(args.src, name), os.path.join(args.out, name))
    policy["description"] = "tiny-mlp that answers NaN when a state reading leaves the training range (fleet simulation's bad v3)"
    target["sha256"] = sha256(os.path.join(args.out, target["file"]))
    with open(os.path.join(args.out, "policy.json"), "w") as f:
        json.dump(policy, f, indent=2)

    # The bug is real and the golden pairs miss it.
    bad = ort.InferenceSession(os.path.join(args.out, target["file"]))
    good = ort.InferenceSession(os.path.join(args.src, target["file"]))
    with open(os.path.join(args.src, policy["golden"]["file"])) as f:
        golden = json.load(f)
    for pair in golden:
        x = np.asarray(pair["inputs"][state], dtype=np.float32).reshape(1, -1)
        a, b = bad.run(None, {state: x})[0], good.run(None, {state: x})[0]
        assert np.allclose(a, b, atol=1e-5), "the trap changed a golden output"
    rest = bad.run(None, {state: np.zeros((1, x.shape[1]), dtype=np.float32)})[0]
    assert np.isfinite(rest).all(), "the trap fires at rest (the warm-up would catch it)"
    far = np.full((1, x.shape[1]), 0.1, dtype=np.float32)
    far[0, 0] = 12.0
    assert np.isnan(bad.run(None, {state: far})[0]).all(), "the trap does not fire out of range"
    print(os.path.abspath(args.out))


if __name__ == "__main__":
    main()
