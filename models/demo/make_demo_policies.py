#!/usr/bin/env python3
"""Builds Reflex's demo policy packages, reproducibly (same bytes on every run).

  reflex-demo-vla/  a small VLA-shaped ONNX model, constructed (not trained):
                    image uint8 [1,3,96,96] + state float32 [1,3] + instruction int64 [1,8]
                    -> action chunk float32 [1,20,3] (base vx, vy, wz at 50 Hz, normalized).
                    The instruction picks the goal colour ("red" or "blue"); the image's pixels
                    of that colour steer: turn toward their horizontal centroid, drive forward
                    when it is centred, slow as it fills the view, rotate to search when it is
                    not visible. The chunk blends from the measured velocity (state) to that
                    target over the first 5 steps.
  tiny-mlp/         a 16-64-64-60 MLP on the state only, for the inference benchmark.
  reflex-demo-arm-reach/  an arm policy (policy.json schema 2), constructed, with two cameras:
                    `front` uint8 NCHW [1,3,64,64] (bilinear, letterboxed) and `wrist` float32
                    NHWC [1,48,48,3] (bilinear, center-cropped, ImageNet mean/std), + state
                    float32 [1,4] (shoulder, elbow, wrist positions by joint name, gripper
                    position) -> chunk float32 [1,25,4] of absolute joint and gripper position
                    targets at 50 Hz: each step moves toward a fixed reach pose by at most
                    0.5 rad/s (joints) and 0.05 m/s (gripper) from the measured state; either
                    camera dark (mean pixel <= 20, e.g. covered) holds it.
  tiny-flow/        the I/O of a flow-matching head (schema 2), constructed: state float32
                    [1,4] (the arm demo's joints and gripper) + noise float32 [1,10,4] (role
                    `noise`, N(0,1) drawn by Reflex from seed 0) -> chunk [1,10,4] of absolute
                    targets = state + 0.05 * noise, plus a second output `noise_power` [1,1]
                    (mean square of the noise) that Reflex checks and does not use; the graph
                    lists it first, so the chunk is found by name.
  tiny-language/  an instruction given as a precomputed embedding (schema 2), constructed:
                    state float32 [1,4] (the arm demo's joints and gripper) + `instruction`
                    float32 [1,8] (role `instruction_embedding`: the row of `instructions.npy`
                    for the instruction the robot was given) -> chunk [1,10,4] of absolute
                    targets ramping from the state to state + embedding @ M over the chunk;
                    each instruction's embedding is built so that @ M it is that
                    instruction's offset (LANGUAGE_OFFSETS), exactly in float32.
  tiny-mlp-external/  tiny-mlp's graph with its weights as initializers in an external data file
                    (`model.onnx.data`, as onnx writes models past 2 GB), listed in
                    policy.json's `targets[0].external_data`; same golden pairs as tiny-mlp.

Each package gets policy.json (with sha256 of every file) and golden.json (input/output pairs
computed here with numpy, checked against onnxruntime when it is installed).

Usage: python3 models/demo/make_demo_policies.py [--out models/demo] [--check]
  --check  rebuild in a temporary folder and compare with --out: ONNX graphs byte for byte,
           policy.json exactly (but the golden digest), golden outputs within a stated
           tolerance (their last float32 bits depend on the CPU's BLAS kernels).
Needs: numpy, onnx (pinned in models/demo/requirements.txt).
"""
import argparse
import filecmp
import hashlib
import json
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
PACKAGES = ["reflex-demo-vla", "tiny-mlp", "reflex-demo-arm-reach", "tiny-flow", "tiny-mlp-external", "tiny-language"]
H, A = 20, 3
RATE_HZ = 50.0
VOCAB = ["<pad>", "<unk>", "go", "to", "the", "red", "blue", "marker", "drive", "find"]
TOKENS = 8
# Normalization of state and actions (both base velocities): a_n = a / std.
STD = np.array([0.5, 0.5, 1.0], dtype=np.float32)


def const(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name))


def demo_vla_model():
    f32 = np.float32
    nodes = [
        const("c255", f32(255.0)),
        const("half", f32(0.5)),
        const("thresh", f32(0.25)),
        const("eps", f32(1e-3)),
        const("soft", f32(20.0)),
        const("one", f32(1.0)),
        const("area", f32(96 * 96 * 0.3)),
        const("k_turn", f32(1.5)),
        const("search", f32(0.4)),
        const("v_fwd", f32(0.6)),
        const("tok_red", np.int64(VOCAB.index("red"))),
        const("tok_blue", np.int64(VOCAB.index("blue"))),
        const("cols", np.linspace(-1.0, 1.0, 96, dtype=f32).reshape(1, 1, 1, 96)),
        const("axes_img", np.array([1, 2, 3], dtype=np.int64)),
        const("shape_b111", np.array([1, 1, 1, 1], dtype=np.int64)),
        const("shape_b13", np.array([1, 1, 1], dtype=np.int64)),
        const("shape_b113", np.array([1, 1, 3], dtype=np.int64)),
        const("std", STD.reshape(1, 1, 3)),
        const("alpha", np.minimum(1.0, (np.arange(H, dtype=f32) + 1.0) / 5.0).reshape(1, H, 1).astype(f32)),
        const("zero3", np.zeros((1, 1, 1), dtype=f32)),
        const("split3", np.array([1, 1, 1], dtype=np.int64)),
        # image -> [0, 1] floats, channels
        helper.make_node("Cast", ["image"], ["img_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["img_f", "c255"], ["img"]),
        helper.make_node("Split", ["img", "split3"], ["R", "G", "B"], axis=1),
        # colour masks: a channel clearly above the mean of the other two
        helper.make_node("Add", ["G", "B"], ["GB"]),
        helper.make_node("Mul", ["GB", "half"], ["GB2"]),
        helper.make_node("Sub", ["R", "GB2"], ["r0"]),
        helper.make_node("Sub", ["r0", "thresh"], ["r1"]),
        helper.make_node("Relu", ["r1"], ["red"]),
        helper.make_node("Add", ["R", "G"], ["RG"]),
        helper.make_node("Mul", ["RG", "half"], ["RG2"]),
        helper.make_node("Sub", ["B", "RG2"], ["b0"]),
        helper.make_node("Sub", ["b0", "thresh"], ["b1"]),
        helper.make_node("Relu", ["b1"], ["blue"]),
        # instruction: which colour is asked for
        helper.make_node("Equal", ["instruction", "tok_red"], ["is_red"]),
        helper.make_node("Cast", ["is_red"], ["is_red_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["is_red_f"], ["want_red0"], axes=[1], keepdims=1),
        helper.make_node("Reshape", ["want_red0", "shape_b111"], ["want_red"]),
        helper.make_node("Equal", ["instruction", "tok_blue"], ["is_blue"]),
        helper.make_node("Cast", ["is_blue"], ["is_blue_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["is_blue_f"], ["want_blue0"], axes=[1], keepdims=1),
        helper.make_node("Reshape", ["want_blue0", "shape_b111"], ["want_blue"]),
        helper.make_node("Mul", ["red", "want_red"], ["m_red"]),
        helper.make_node("Mul", ["blue", "want_blue"], ["m_blue"]),
        helper.make_node("Add", ["m_red", "m_blue"], ["mask"]),
        # centroid, visibility, size
        helper.make_node("ReduceSum", ["mask", "axes_img"], ["mass"], keepdims=1),
        helper.make_node("Mul", ["mask", "cols"], ["mx_map"]),
        helper.make_node("ReduceSum", ["mx_map", "axes_img"], ["mx"], keepdims=1),
        helper.make_node("Add", ["mass", "eps"], ["mass_e"]),
        helper.make_node("Div", ["mx", "mass_e"], ["offset"]),
        helper.make_node("Add", ["mass", "soft"], ["mass_s"]),
        helper.make_node("Div", ["mass", "mass_s"], ["visible"]),
        helper.make_node("Div", ["mass", "area"], ["size0"]),
        helper.make_node("Min", ["size0", "one"], ["size"]),
        # target velocities
        helper.make_node("Mul", ["offset", "k_turn"], ["turn0"]),
        helper.make_node("Mul", ["turn0", "visible"], ["turn1"]),
        helper.make_node("Neg", ["turn1"], ["turn"]),
        helper.make_node("Sub", ["one", "visible"], ["unseen"]),
        helper.make_node("Mul", ["unseen", "search"], ["seek"]),
        helper.make_node("Add", ["turn", "seek"], ["wz"]),
        helper.make_node("Abs", ["offset"], ["abs_off"]),
        helper.make_node("Sub", ["one", "abs_off"], ["centred"]),
        helper.make_node("Sub", ["one", "size"], ["room"]),
        helper.make_node("Mul", ["centred", "room"], ["go0"]),
        helper.make_node("Mul", ["go0", "visible"], ["go1"]),
        helper.make_node("Mul", ["go1", "v_fwd"], ["vx"]),
        helper.make_node("Reshape", ["vx", "shape_b13"], ["vx3"]),
        helper.make_node("Reshape", ["wz", "shape_b13"], ["wz3"]),
        helper.make_node("Concat", ["vx3", "zero3", "wz3"], ["target"], axis=2),
        helper.make_node("Div", ["target", "std"], ["target_n"]),
        # blend from the measured (normalized) velocity over the first steps
        helper.make_node("Reshape", ["state", "shape_b113"], ["state3"]),
        helper.make_node("Sub", ["target_n", "state3"], ["delta"]),
        helper.make_node("Mul", ["delta", "alpha"], ["ramp"]),
        helper.make_node("Add", ["state3", "ramp"], ["actions"]),
    ]
    graph = helper.make_graph(
        nodes,
        "reflex_demo_vla",
        [
            helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 3, 96, 96]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("instruction", TensorProto.INT64, [1, TOKENS]),
        ],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, H, A])],
    )
    return graph


def demo_vla_reference(image, state, instruction):
    """numpy twin of the graph, for golden outputs."""
    img = image.astype(np.float32) / np.float32(255.0)
    R, G, B = img[:, 0:1], img[:, 1:2], img[:, 2:3]
    red = np.maximum(R - (G + B) * np.float32(0.5) - np.float32(0.25), 0)
    blue = np.maximum(B - (R + G) * np.float32(0.5) - np.float32(0.25), 0)
    want_red = np.float32((instruction == VOCAB.index("red")).any())
    want_blue = np.float32((instruction == VOCAB.index("blue")).any())
    mask = red * want_red + blue * want_blue
    cols = np.linspace(-1.0, 1.0, 96, dtype=np.float32).reshape(1, 1, 1, 96)
    mass = mask.sum(dtype=np.float32)
    offset = (mask * cols).sum(dtype=np.float32) / (mass + np.float32(1e-3))
    visible = mass / (mass + np.float32(20.0))
    size = min(mass / np.float32(96 * 96 * 0.3), np.float32(1.0))
    wz = -(offset * np.float32(1.5)) * visible + (1 - visible) * np.float32(0.4)
    vx = (1 - abs(offset)) * (1 - size) * visible * np.float32(0.6)
    target = np.array([vx, 0.0, wz], dtype=np.float32).reshape(1, 1, 3) / STD.reshape(1, 1, 3)
    alpha = np.minimum(1.0, (np.arange(H, dtype=np.float32) + 1.0) / 5.0).reshape(1, H, 1).astype(np.float32)
    s = state.reshape(1, 1, 3)
    return (s + (target - s) * alpha).astype(np.float32)


def tiny_mlp_model():
    rng = np.random.default_rng(7)
    w = [rng.normal(0, 0.2, s).astype(np.float32) for s in [(16, 64), (64, 64), (64, H * A)]]
    b = [np.zeros(s, dtype=np.float32) for s in [64, 64, H * A]]
    nodes = []
    x = "state"
    for i in range(3):
        nodes += [const(f"w{i}", w[i]), const(f"b{i}", b[i])]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"]))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"h{i}"], [f"a{i}"]))
            x = f"a{i}"
    nodes += [const("shape", np.array([1, H, A], dtype=np.int64)), helper.make_node("Reshape", ["h2", "shape"], ["actions"])]
    graph = helper.make_graph(
        nodes,
        "reflex_tiny_mlp",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, H, A])],
    )
    return graph, w, b


ARM_H, ARM_A = 25, 4
ARM_GOAL = np.array([0.8, -0.6, 1.2, 0.06], dtype=np.float32)
ARM_STEP = np.array([0.5, 0.5, 0.5, 0.05], dtype=np.float32) / np.float32(RATE_HZ)
ARM_RAMP = (np.arange(1, ARM_H + 1, dtype=np.float32).reshape(1, ARM_H, 1) * ARM_STEP.reshape(1, 1, ARM_A)).astype(np.float32)
ARM_JOINTS = ["shoulder", "elbow", "wrist"]


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# The wrist camera's darkness threshold in its normalized values: a uniform pixel 20.
WRIST_DARK = np.float32(np.mean([(20.0 / 255.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]))
ARM_INPUTS = [
    {"name": "front", "dtype": "uint8", "shape": [1, 3, 64, 64], "role": "image",
     "preprocess": {"layout": "nchw", "resize": "bilinear", "fit": "letterbox"}},
    {"name": "wrist", "dtype": "float32", "shape": [1, 48, 48, 3], "role": "image",
     "preprocess": {"layout": "nhwc", "resize": "bilinear", "fit": "center_crop",
                    "mean": IMAGENET_MEAN, "std": IMAGENET_STD}},
    {"name": "state", "dtype": "float32", "shape": [1, 4], "role": "state"},
]


def demo_arm_model():
    f32 = np.float32
    nodes = [
        const("goal", ARM_GOAL.reshape(1, ARM_A)),
        const("ramp", ARM_RAMP),
        const("neg_ramp", -ARM_RAMP),
        const("dark", f32(20.0)),
        const("wrist_dark", WRIST_DARK),
        const("shape3", np.array([1, 1, ARM_A], dtype=np.int64)),
        helper.make_node("Cast", ["front"], ["img_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["img_f"], ["brightness"], axes=[0, 1, 2, 3], keepdims=0),
        helper.make_node("Greater", ["brightness", "dark"], ["front_lit"]),
        helper.make_node("ReduceMean", ["wrist"], ["wrist_level"], axes=[0, 1, 2, 3], keepdims=0),
        helper.make_node("Greater", ["wrist_level", "wrist_dark"], ["wrist_lit"]),
        helper.make_node("And", ["front_lit", "wrist_lit"], ["lit"]),
        helper.make_node("Cast", ["lit"], ["gate"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["goal", "state"], ["d"]),
        helper.make_node("Reshape", ["d", "shape3"], ["d3"]),
        helper.make_node("Max", ["d3", "neg_ramp"], ["lo"]),
        helper.make_node("Min", ["lo", "ramp"], ["delta"]),
        helper.make_node("Mul", ["delta", "gate"], ["gated"]),
        helper.make_node("Reshape", ["state", "shape3"], ["s3"]),
        helper.make_node("Add", ["s3", "gated"], ["actions"]),
    ]
    return helper.make_graph(
        nodes,
        "reflex_demo_arm_reach",
        [
            helper.make_tensor_value_info("front", TensorProto.UINT8, [1, 3, 64, 64]),
            helper.make_tensor_value_info("wrist", TensorProto.FLOAT, [1, 48, 48, 3]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, ARM_A]),
        ],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, ARM_H, ARM_A])],
    )


def demo_arm_reference(front, wrist, state):
    lit = front.astype(np.float32).mean() > 20.0 and wrist.astype(np.float32).mean() > WRIST_DARK
    gate = np.float32(lit)
    d = (ARM_GOAL.reshape(1, ARM_A) - state).reshape(1, 1, ARM_A)
    delta = np.minimum(np.maximum(d, -ARM_RAMP), ARM_RAMP) * gate
    return (state.reshape(1, 1, ARM_A) + delta).astype(np.float32)


def wrist_of(pixel):
    """The wrist input of a uniform camera frame of `pixel`: (pixel / 255 - mean) / std."""
    v = np.array([(pixel / 255.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], dtype=np.float32)
    return np.broadcast_to(v, (1, 48, 48, 3)).astype(np.float32)


FLOW_H, FLOW_A, FLOW_SCALE = 10, 4, np.float32(0.05)


def tiny_flow_model():
    nodes = [
        const("state_shape", np.array([1, 1, FLOW_A], dtype=np.int64)),
        helper.make_node("Reshape", ["state", "state_shape"], ["state_row"]),
        const("scale", np.array(FLOW_SCALE, dtype=np.float32)),
        helper.make_node("Mul", ["noise", "scale"], ["step"]),
        helper.make_node("Add", ["state_row", "step"], ["actions"]),
        helper.make_node("Mul", ["noise", "noise"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["power"], axes=[1, 2], keepdims=0),
        const("power_shape", np.array([1, 1], dtype=np.int64)),
        helper.make_node("Reshape", ["power", "power_shape"], ["noise_power"]),
    ]
    return helper.make_graph(
        nodes,
        "reflex_tiny_flow",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, FLOW_A]),
         helper.make_tensor_value_info("noise", TensorProto.FLOAT, [1, FLOW_H, FLOW_A])],
        # The chunk is not the graph's first output: Reflex finds it by its policy.json name.
        [helper.make_tensor_value_info("noise_power", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, FLOW_H, FLOW_A])],
    )


LANG_H, LANG_A, LANG_D = 10, 4, 8
# The instructions tiny-language knows and the offset (shoulder, elbow, wrist rad, gripper m)
# each asks for.
LANGUAGE_OFFSETS = [
    ("raise the arm", [-0.3, 0.2, 0.0, 0.0]),
    ("lower the arm", [0.3, -0.2, 0.1, 0.0]),
    ("open the gripper", [0.0, 0.0, 0.0, 0.04]),
]


def language_embeddings():
    """[3, 8]: instruction i is one-hot at i plus a shared pattern on dims 3..7 (what a text
    encoder's common words would add); exact in float32."""
    shared = np.array([0.0, 0.0, 0.0, 0.25, -0.5, 0.75, 0.125, -0.25], dtype=np.float32)
    e = np.tile(shared, (len(LANGUAGE_OFFSETS), 1))
    for i in range(len(LANGUAGE_OFFSETS)):
        e[i, i] = 1.0
    return e.astype(np.float32)


def language_projection():
    """[8, 4]: rows 0..2 are the offsets, the shared dims project to nothing."""
    m = np.zeros((LANG_D, LANG_A), dtype=np.float32)
    for i, (_, offset) in enumerate(LANGUAGE_OFFSETS):
        m[i] = offset
    return m


LANG_RAMP = (np.arange(1, LANG_H + 1, dtype=np.float32) / np.float32(LANG_H)).reshape(1, LANG_H, 1)


def tiny_language_model():
    nodes = [
        const("m", language_projection()),
        helper.make_node("MatMul", ["instruction", "m"], ["offset"]),
        const("row_shape", np.array([1, 1, LANG_A], dtype=np.int64)),
        helper.make_node("Reshape", ["offset", "row_shape"], ["offset_row"]),
        helper.make_node("Reshape", ["state", "row_shape"], ["state_row"]),
        const("ramp", LANG_RAMP),
        helper.make_node("Mul", ["ramp", "offset_row"], ["step"]),
        helper.make_node("Add", ["state_row", "step"], ["actions"]),
    ]
    return helper.make_graph(
        nodes,
        "reflex_tiny_language",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, LANG_A]),
         helper.make_tensor_value_info("instruction", TensorProto.FLOAT, [1, LANG_D])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, LANG_H, LANG_A])],
    )


def tiny_language_reference(state, embedding):
    offset = (embedding.reshape(1, LANG_D) @ language_projection()).reshape(1, 1, LANG_A)
    return (state.reshape(1, 1, LANG_A) + LANG_RAMP * offset).astype(np.float32)


def tiny_flow_reference(state, noise):
    return (state.reshape(1, 1, FLOW_A) + FLOW_SCALE * noise).astype(np.float32)


def tiny_mlp_reference(state, w, b):
    h = np.maximum(state @ w[0] + b[0], 0)
    h = np.maximum(h @ w[1] + b[1], 0)
    return (h @ w[2] + b[2]).reshape(1, H, A).astype(np.float32)


def tiny_mlp_external_model(w, b):
    """tiny-mlp with its weights as initializers (what external data holds)."""
    inits = []
    nodes = []
    x = "state"
    for i in range(3):
        inits += [numpy_helper.from_array(w[i], f"w{i}"), numpy_helper.from_array(b[i], f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"]))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"h{i}"], [f"a{i}"]))
            x = f"a{i}"
    # The reshape target stays in the graph: ORT's shape inference reads it at load.
    nodes += [const("shape", np.array([1, H, A], dtype=np.int64)), helper.make_node("Reshape", ["h2", "shape"], ["actions"])]
    return helper.make_graph(
        nodes,
        "reflex_tiny_mlp_external",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, H, A])],
        initializer=inits,
    )


def save_model_external(graph, pkg, name, data_name):
    """The graph in `name`, every initializer in `data_name` beside it (onnx's own writer)."""
    from onnx import external_data_helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="reflex-make-demo-policies")
    model.ir_version = 8
    onnx.checker.check_model(model)
    external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=data_name, size_threshold=0)
    data_path = os.path.join(pkg, data_name)
    if os.path.exists(data_path):
        os.remove(data_path)
    external_data_helper.write_external_data_tensors(model, pkg)
    with open(os.path.join(pkg, name), "wb") as f:
        f.write(model.SerializeToString(deterministic=True))


def save_model(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="reflex-make-demo-policies")
    model.ir_version = 8
    onnx.checker.check_model(model)
    with open(path, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def blob_image(colour, column, radius=10):
    """A 96x96 grey image with a coloured disc centred at `column`."""
    img = np.full((1, 3, 96, 96), 90, dtype=np.uint8)
    yy, xx = np.mgrid[0:96, 0:96]
    disc = (yy - 48) ** 2 + (xx - column) ** 2 <= radius**2
    rgb = {"red": (220, 30, 30), "blue": (30, 40, 220)}[colour]
    for c in range(3):
        img[0, c][disc] = rgb[c]
    return img


def tokens(text):
    ids = [VOCAB.index(w) if w in VOCAB else 1 for w in text.lower().split()][:TOKENS]
    return np.array([ids + [0] * (TOKENS - len(ids))], dtype=np.int64)


def write_package(out, name, version, description, model_file, inputs, golden, extra, h=H, a=A):
    pkg = os.path.join(out, name)
    golden_path = os.path.join(pkg, "golden.json")
    with open(golden_path, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    manifest = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "description": description,
        "inputs": inputs,
        "outputs": [{"name": "actions", "dtype": "float32", "shape": [1, h, a]}],
        "action_space": [
            {"name": "vx", "unit": "m/s", "drives": "base_vx"},
            {"name": "vy", "unit": "m/s", "drives": "base_vy"},
            {"name": "wz", "unit": "rad/s", "drives": "base_wz"},
        ],
        "control_rate_hz": RATE_HZ,
        "chunk_horizon_s": h / RATE_HZ,
        "safety_envelope": {"max_vx_mps": 0.6, "max_vy_mps": 0.0, "max_wz_radps": 1.5},
        "targets": [{"kind": "onnx", "file": model_file, "sha256": sha256(os.path.join(pkg, model_file))}],
        "golden": {"file": "golden.json", "sha256": sha256(golden_path), "tolerance": {"abs": 1e-4, "rel": 1e-4}},
    }
    manifest.update(extra)
    with open(os.path.join(pkg, "policy.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def build(out):
    # reflex-demo-vla
    pkg = os.path.join(out, "reflex-demo-vla")
    os.makedirs(pkg, exist_ok=True)
    save_model(demo_vla_model(), os.path.join(pkg, "model.onnx"))
    cases = [
        ("go to the red marker", blob_image("red", 20), [0.0, 0.0, 0.0]),
        ("go to the blue marker", blob_image("blue", 70), [0.4, 0.0, -0.2]),
        ("go to the red marker", blob_image("blue", 48), [0.2, 0.0, 0.0]),
        ("find the blue marker", blob_image("blue", 48, radius=30), [0.6, 0.0, 0.0]),
    ]
    golden = []
    for text, image, state in cases:
        state_n = (np.array(state, dtype=np.float32) / STD).reshape(1, 3)
        ins = tokens(text)
        golden.append({
            "note": text,
            "inputs": {
                "image": image.flatten().tolist(),
                "state": state_n.flatten().tolist(),
                "instruction": ins.flatten().tolist(),
            },
            "outputs": {"actions": demo_vla_reference(image, state_n, ins).flatten().tolist()},
        })
    norm = {"state": {"mean": [0.0] * 3, "std": STD.tolist()}, "action": {"mean": [0.0] * 3, "std": STD.tolist()}}
    write_package(
        out, "reflex-demo-vla", "0.1.0",
        "Constructed demo VLA: drives a base toward the red or blue marker named in the instruction.",
        "model.onnx",
        [
            {"name": "image", "dtype": "uint8", "shape": [1, 3, 96, 96], "role": "image"},
            {"name": "state", "dtype": "float32", "shape": [1, 3], "role": "state"},
            {"name": "instruction", "dtype": "int64", "shape": [1, TOKENS], "role": "instruction_tokens"},
        ],
        golden,
        {"normalization": norm, "instruction_vocabulary": VOCAB},
    )
    # tiny-mlp
    pkg = os.path.join(out, "tiny-mlp")
    os.makedirs(pkg, exist_ok=True)
    graph, w, b = tiny_mlp_model()
    save_model(graph, os.path.join(pkg, "model.onnx"))
    rng = np.random.default_rng(11)
    golden = []
    for _ in range(3):
        s = rng.normal(0, 1, (1, 16)).astype(np.float32)
        golden.append({"note": "random state", "inputs": {"state": s.flatten().tolist()},
                       "outputs": {"actions": tiny_mlp_reference(s, w, b).flatten().tolist()}})
    norm = {"state": {"mean": [0.0] * 16, "std": [1.0] * 16}, "action": {"mean": [0.0] * 3, "std": [1.0] * 3}}
    write_package(
        out, "tiny-mlp", "0.1.0", "A 16-64-64-60 MLP on the state only, for benchmarks.", "model.onnx",
        [{"name": "state", "dtype": "float32", "shape": [1, 16], "role": "state"}],
        golden, {"normalization": norm},
    )
    # tiny-mlp-external: the same weights and golden pairs, the weights in external data
    pkg = os.path.join(out, "tiny-mlp-external")
    os.makedirs(pkg, exist_ok=True)
    save_model_external(tiny_mlp_external_model(w, b), pkg, "model.onnx", "model.onnx.data")
    write_package(
        out, "tiny-mlp-external", "0.1.0",
        "tiny-mlp with its weights in an external data file (model.onnx.data).", "model.onnx",
        [{"name": "state", "dtype": "float32", "shape": [1, 16], "role": "state"}],
        golden, {"normalization": norm},
    )
    manifest_path = os.path.join(pkg, "policy.json")
    manifest = json.load(open(manifest_path))
    manifest["targets"][0]["external_data"] = [
        {"file": "model.onnx.data", "sha256": sha256(os.path.join(pkg, "model.onnx.data"))}]
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    # reflex-demo-arm-reach (schema 2)
    pkg = os.path.join(out, "reflex-demo-arm-reach")
    os.makedirs(pkg, exist_ok=True)
    save_model(demo_arm_model(), os.path.join(pkg, "model.onnx"))
    lit = np.full((1, 3, 64, 64), 120, dtype=np.uint8)
    dark = np.full((1, 3, 64, 64), 5, dtype=np.uint8)
    golden = []
    for note, front, wrist, state in [
        ("both cameras lit, at rest at zero", lit, wrist_of(120), [0.0, 0.0, 0.0, 0.0]),
        ("both cameras lit, near the goal", lit, wrist_of(120), [0.79, -0.55, 1.0, 0.06]),
        ("front camera dark holds", dark, wrist_of(120), [0.3, 0.2, -0.1, 0.01]),
        ("wrist camera dark holds", lit, wrist_of(5), [0.3, 0.2, -0.1, 0.01]),
    ]:
        s_ = np.array([state], dtype=np.float32)
        golden.append({"note": note, "inputs": {"front": front.flatten().tolist(),
                                                "wrist": [float(v) for v in wrist.flatten()],
                                                "state": s_.flatten().tolist()},
                       "outputs": {"actions": demo_arm_reference(front, wrist, s_).flatten().tolist()}})
    ident = {"mean": [0.0] * ARM_A, "std": [1.0] * ARM_A}
    write_package(
        out, "reflex-demo-arm-reach", "0.2.0",
        "Constructed demo arm policy (schema 2, two cameras): reaches a fixed pose from the measured joint state, held while either camera is dark.",
        "model.onnx",
        ARM_INPUTS,
        golden,
        {
            "schema_version": 2,
            "normalization": {"state": ident, "action": ident},
            "state_sources": [f"joint_position/{j}" for j in ARM_JOINTS] + ["gripper_position"],
            "action_space": [{"name": j, "unit": "rad", "drives": f"joint_position/{j}"} for j in ARM_JOINTS]
            + [{"name": "gripper", "unit": "m", "drives": "gripper"}],
            "safety_envelope": {"max_vx_mps": 0.0, "max_vy_mps": 0.0, "max_wz_radps": 0.0},
        },
        h=ARM_H, a=ARM_A,
    )
    # tiny-flow (schema 2, a noise input and a second output)
    pkg = os.path.join(out, "tiny-flow")
    os.makedirs(pkg, exist_ok=True)
    save_model(tiny_flow_model(), os.path.join(pkg, "model.onnx"))
    rng = np.random.default_rng(13)
    golden = []
    for note, state in [("at rest at zero", [0.0, 0.0, 0.0, 0.0]), ("reaching", [0.3, -0.2, 0.5, 0.02]),
                        ("near the reach pose", [0.79, -0.55, 1.0, 0.06])]:
        s_ = np.array([state], dtype=np.float32)
        noise = rng.normal(0, 1, (1, FLOW_H, FLOW_A)).astype(np.float32)
        golden.append({"note": note, "inputs": {"state": s_.flatten().tolist(), "noise": noise.flatten().tolist()},
                       "outputs": {"actions": tiny_flow_reference(s_, noise).flatten().tolist()}})
    write_package(
        out, "tiny-flow", "0.1.0",
        "Constructed flow-matching I/O (schema 2): targets = state + 0.05 * noise, the noise drawn by Reflex from a seed; a second output it does not use.",
        "model.onnx",
        [{"name": "state", "dtype": "float32", "shape": [1, FLOW_A], "role": "state"},
         {"name": "noise", "dtype": "float32", "shape": [1, FLOW_H, FLOW_A], "role": "noise",
          "generator": {"distribution": "standard_normal", "seed": 0}}],
        golden,
        {
            "schema_version": 2,
            "outputs": [{"name": "actions", "dtype": "float32", "shape": [1, FLOW_H, FLOW_A]},
                        {"name": "noise_power", "dtype": "float32", "shape": [1, 1]}],
            "normalization": {"state": {"mean": [0.0] * FLOW_A, "std": [1.0] * FLOW_A},
                              "action": {"mean": [0.0] * FLOW_A, "std": [1.0] * FLOW_A}},
            "state_sources": [f"joint_position/{j}" for j in ARM_JOINTS] + ["gripper_position"],
            "action_space": [{"name": j, "unit": "rad", "drives": f"joint_position/{j}"} for j in ARM_JOINTS]
            + [{"name": "gripper", "unit": "m", "drives": "gripper"}],
            "safety_envelope": {"max_vx_mps": 0.0, "max_vy_mps": 0.0, "max_wz_radps": 0.0},
        },
        h=FLOW_H, a=FLOW_A,
    )
    # tiny-language (schema 2, the instruction as a precomputed embedding)
    pkg = os.path.join(out, "tiny-language")
    os.makedirs(pkg, exist_ok=True)
    save_model(tiny_language_model(), os.path.join(pkg, "model.onnx"))
    emb = language_embeddings()
    np.save(os.path.join(pkg, "instructions.npy"), emb)
    golden = []
    for i, ((text, _), state) in enumerate(zip(LANGUAGE_OFFSETS, [[0.0, 0.0, 0.0, 0.0], [0.3, -0.2, 0.5, 0.02],
                                                                   [0.79, -0.55, 1.0, 0.06]])):
        s_ = np.array([state], dtype=np.float32)
        golden.append({"note": text, "inputs": {"state": s_.flatten().tolist(), "instruction": emb[i].tolist()},
                       "outputs": {"actions": tiny_language_reference(s_, emb[i]).flatten().tolist()}})
    write_package(
        out, "tiny-language", "0.1.0",
        "Constructed language I/O (schema 2): the instruction as a precomputed embedding from the package; targets ramp from the state by the offset the instruction names.",
        "model.onnx",
        [{"name": "state", "dtype": "float32", "shape": [1, LANG_A], "role": "state"},
         {"name": "instruction", "dtype": "float32", "shape": [1, LANG_D], "role": "instruction_embedding"}],
        golden,
        {
            "schema_version": 2,
            "normalization": {"state": {"mean": [0.0] * LANG_A, "std": [1.0] * LANG_A},
                              "action": {"mean": [0.0] * LANG_A, "std": [1.0] * LANG_A}},
            "state_sources": [f"joint_position/{j}" for j in ARM_JOINTS] + ["gripper_position"],
            "action_space": [{"name": j, "unit": "rad", "drives": f"joint_position/{j}"} for j in ARM_JOINTS]
            + [{"name": "gripper", "unit": "m", "drives": "gripper"}],
            "safety_envelope": {"max_vx_mps": 0.0, "max_vy_mps": 0.0, "max_wz_radps": 0.0},
            "instruction_embeddings": {"file": "instructions.npy",
                                       "sha256": sha256(os.path.join(pkg, "instructions.npy")),
                                       "instructions": [t for t, _ in LANGUAGE_OFFSETS]},
        },
        h=LANG_H, a=LANG_A,
    )
    check_with_onnxruntime(out)


def check_with_onnxruntime(out):
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: golden outputs checked against numpy only")
        return
    for name in PACKAGES:
        pkg = os.path.join(out, name)
        manifest = json.load(open(os.path.join(pkg, "policy.json")))
        sess = ort.InferenceSession(os.path.join(pkg, "model.onnx"), providers=["CPUExecutionProvider"])
        dtypes = {"uint8": np.uint8, "float32": np.float32, "int64": np.int64}
        for pair in json.load(open(os.path.join(pkg, "golden.json"))):
            feeds = {i["name"]: np.array(pair["inputs"][i["name"]], dtype=dtypes[i["dtype"]]).reshape(i["shape"])
                     for i in manifest["inputs"]}
            got = sess.run([manifest["outputs"][0]["name"]], feeds)[0].flatten()
            want = np.array(pair["outputs"]["actions"], dtype=np.float32)
            err = np.abs(got - want).max()
            assert err <= 1e-4, f"{name}: onnxruntime differs from the numpy reference by {err}"
    print("golden outputs match onnxruntime", ort.__version__)


# What --check allows a fresh build's computed values to differ by: numpy's float32 matmuls and
# sums take other kernels (summation orders) on other CPUs (OpenBLAS on Intel vs AMD), so the
# last bits of golden outputs are not portable. 1e-6 abs + 1e-5 rel is ~100x float32 epsilon on
# these magnitudes and 100x tighter than the packages' own golden tolerance (1e-4).
CHECK_ABS = 1e-6
CHECK_REL = 1e-5


def compare_golden(fresh_path, kept_path):
    """Differences between two golden.json files: inputs and notes exactly, outputs within
    CHECK_ABS + CHECK_REL * |kept|. Returns a list of messages (empty = same)."""
    fresh, kept = json.load(open(fresh_path)), json.load(open(kept_path))
    if len(fresh) != len(kept):
        return [f"{len(kept)} pairs kept, {len(fresh)} built"]
    bad = []
    for i, (f, k) in enumerate(zip(fresh, kept)):
        if f.get("note") != k.get("note") or f["inputs"] != k["inputs"]:
            bad.append(f"pair {i}: inputs differ")
        for name in sorted(set(f["outputs"]) | set(k["outputs"])):
            a = np.array(f["outputs"].get(name, []), dtype=np.float64)
            b = np.array(k["outputs"].get(name, []), dtype=np.float64)
            if a.shape != b.shape:
                bad.append(f"pair {i}: output {name} has shape {a.shape}, kept {b.shape}")
                continue
            err = np.abs(a - b) - (CHECK_ABS + CHECK_REL * np.abs(b))
            if (err > 0).any() or not np.isfinite(a).all():
                j = int(np.argmax(err))
                bad.append(f"pair {i}: output {name}[{j}] = {a[j]!r}, kept {b[j]!r}")
    return bad


def policy_without_golden_digest(path):
    """policy.json as data, without the golden file's sha256 (it hashes computed floats)."""
    manifest = json.load(open(path))
    manifest.get("golden", {}).pop("sha256", None)
    return manifest


def comparator_self_test(kept_path, tmp):
    """The comparison can fail: a one-ulp change of every output passes, a change of 10x the
    tolerance in one output does not."""
    pairs = json.load(open(kept_path))
    ulp, far = json.loads(json.dumps(pairs)), json.loads(json.dumps(pairs))
    for p in ulp:
        a = np.array(p["outputs"]["actions"], dtype=np.float32)
        p["outputs"]["actions"] = [float(x) for x in np.nextafter(a, np.float32(np.inf))]
    v = far[0]["outputs"]["actions"][0]
    far[0]["outputs"]["actions"][0] = v + 10 * (CHECK_ABS + CHECK_REL * abs(v))
    bad = []
    for name, data, want_same in [("one-ulp", ulp, True), ("10x-tolerance", far, False)]:
        path = os.path.join(tmp, f"self-test-{name}.json")
        with open(path, "w") as f:
            json.dump(data, f)
        if (not compare_golden(path, kept_path)) != want_same:
            bad.append(f"comparator self-test: a {name} change was {'refused' if want_same else 'accepted'}")
    return bad


def check(out):
    """Rebuild into a temporary folder and compare with `out`: the ONNX graphs byte for byte
    (deterministic serialization), policy.json's structure exactly (all but the golden digest),
    the kept golden.json's digest against the kept file, and computed golden outputs within
    CHECK_ABS/CHECK_REL. Exits non-zero naming every file that differs."""
    with tempfile.TemporaryDirectory() as tmp:
        build(tmp)
        bad = []
        for name in PACKAGES:
            fresh, kept = os.path.join(tmp, name), os.path.join(out, name)
            extra_files = {"tiny-mlp-external": ["model.onnx.data"], "tiny-language": ["instructions.npy"]}
            for model_file in ["model.onnx"] + extra_files.get(name, []):
                if not filecmp.cmp(os.path.join(fresh, model_file), os.path.join(kept, model_file), shallow=False):
                    bad.append(f"{name}/{model_file} (bytes)")
            if policy_without_golden_digest(os.path.join(fresh, "policy.json")) != policy_without_golden_digest(
                os.path.join(kept, "policy.json")
            ):
                bad.append(f"{name}/policy.json (structure)")
            kept_manifest = json.load(open(os.path.join(kept, "policy.json")))
            if kept_manifest["golden"]["sha256"] != sha256(os.path.join(kept, "golden.json")):
                bad.append(f"{name}/policy.json (golden.sha256 is not the digest of the kept golden.json)")
            bad += [f"{name}/golden.json: {m}" for m in compare_golden(
                os.path.join(fresh, "golden.json"), os.path.join(kept, "golden.json"))]
        bad += comparator_self_test(os.path.join(out, "tiny-mlp", "golden.json"), tmp)
        if bad:
            sys.exit("not reproducible, these differ from a fresh build: " + "; ".join(bad)
                     + "\nfix: if the change is intended, rebuild with `python3 models/demo/make_demo_policies.py` and commit")
        print(f"reproducible: a fresh build matches {out} (model.onnx and policy.json exactly, "
              f"golden outputs within {CHECK_ABS} abs + {CHECK_REL} rel)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    if args.check:
        check(args.out)
    else:
        build(args.out)


if __name__ == "__main__":
    main()
