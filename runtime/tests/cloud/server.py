#!/usr/bin/env python3
"""A small openpi policy server for the cloud-link tests: PyPI `websockets` with the openpi
client's msgpack-numpy encoding (`openpi_client.msgpack_numpy`), TLS from a test CA made here
with openssl, and an API key. Listens on 127.0.0.1; prints `READY <port> <ca.pem>`.

    server.py --dir DIR --api-key KEY --mode normal|slow|malformed|flood|drop|droid [--vx 0.3]
              [--goal q1,q2,q3,gripper] [--latency-ms 0]

normal: answers every observation with a (10, 3) float32 chunk [vx, 0, 0].
droid: takes the observation a DROID policy server takes (openpi's `DroidInputs`: two
224 x 224 x 3 uint8 images, `observation/joint_position`, `observation/gripper_position`,
`prompt`), refuses anything else with a text error frame naming what is wrong, and answers a
(15, 4) chunk of absolute joint and gripper targets stepping from the measured joint position
toward `--goal` by 0.04 rad per step (0.6 rad/s at 15 Hz) - a closed-loop policy of its own -
each `--latency-ms` after its observation (a remote GPU's inference time).
slow: answers 0.5 s late.            malformed: garbage, no `actions`, NaN, a wrong shape, a
text error frame, then one good answer, in turn.   flood: each answer followed by 200
unsolicited ones.   drop: closes the connection after 15 answers (the client must reconnect).
"""
import argparse
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
from openpi_client import msgpack_numpy
from websockets.sync.server import serve
from websockets.http11 import Response
from websockets.datastructures import Headers


def make_tls(d: pathlib.Path):
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=reflex-cloud-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "server.pem", d / "server.key")
    return ctx, d / "ca.pem"


def droid_problem(obs):
    """What is wrong with a DROID observation, or None."""
    want = {
        "observation/exterior_image_1_left": ((224, 224, 3), np.uint8),
        "observation/wrist_image_left": ((224, 224, 3), np.uint8),
        "observation/joint_position": ((3,), np.float32),
        "observation/gripper_position": ((1,), np.float32),
    }
    for key, (shape, dtype) in want.items():
        if key not in obs:
            return f"no {key} (keys: {sorted(obs)})"
        v = obs[key]
        if not isinstance(v, np.ndarray) or v.shape != shape or v.dtype != dtype:
            return f"{key}: {getattr(v, 'dtype', type(v))} {getattr(v, 'shape', '')}, want {dtype.__name__} {shape}"
        if dtype == np.float32 and not np.all(np.isfinite(v)):
            return f"{key}: not finite: {v}"
    for key in ("observation/exterior_image_1_left", "observation/wrist_image_left"):
        if obs[key].std() < 1.0:
            return f"{key}: a flat image (std {obs[key].std():.2f}): not the rendered camera"
    if not isinstance(obs.get("prompt"), str):
        return "no prompt"
    if "observation/state" in obs or "observation/image" in obs:
        return "the default keys are sent beside the mapped ones"
    return None


def droid(obs, goal):
    problem = droid_problem(obs)
    if problem is not None:
        print(f"bad observation: {problem}", file=sys.stderr, flush=True)
        return f"bad observation: {problem}"
    q = np.concatenate([obs["observation/joint_position"], obs["observation/gripper_position"]])
    steps = np.arange(1, 16, dtype=np.float32).reshape(15, 1) * np.float32(0.04)
    chunk = q + np.clip(goal - q, -steps, steps)
    chunk[:, 3] = goal[3]
    return msgpack_numpy.packb({"actions": chunk.astype(np.float32)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--mode", default="normal")
    ap.add_argument("--vx", type=float, default=0.3)
    ap.add_argument("--goal", default="0.5,-0.3,0.6,0.02")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    a = ap.parse_args()
    goal = np.array([float(v) for v in a.goal.split(",")], dtype=np.float32)
    ctx, ca = make_tls(pathlib.Path(a.dir))
    good = msgpack_numpy.packb(
        {"actions": np.tile(np.array([a.vx, 0.0, 0.0], dtype=np.float32), (10, 1))}
    )
    bad = [
        b"\xc1 not msgpack",
        msgpack_numpy.packb({"no_actions": 1}),
        msgpack_numpy.packb({"actions": np.full((10, 3), np.nan, dtype=np.float32)}),
        msgpack_numpy.packb({"actions": np.zeros((2, 2, 2), dtype=np.float32)}),
        "server-side error: policy crashed (text frame, as openpi reports errors)",
    ]

    def auth(connection, request):
        if request.headers.get("Authorization") != f"Api-Key {a.api_key}":
            return Response(401, "Unauthorized", Headers(), b"bad api key\n")
        return None

    def handler(ws):
        ws.send(msgpack_numpy.packb({"server": "reflex-test", "action_horizon": 10}))
        n = 0
        for frame in ws:
            obs = msgpack_numpy.unpackb(frame)
            if a.mode == "droid":
                answer = droid(obs, goal)
                time.sleep(a.latency_ms / 1000.0)
                ws.send(answer)
                continue
            state = obs["observation/state"]
            assert state.dtype == np.float32 and state.shape == (3,), state
            assert isinstance(obs["prompt"], str)
            n += 1
            if a.mode == "slow":
                time.sleep(0.5)
                ws.send(good)
            elif a.mode == "malformed":
                ws.send(bad[n % 6] if n % 6 < 5 else good)
            elif a.mode == "flood":
                ws.send(good)
                for _ in range(200):
                    ws.send(good)
            elif a.mode == "drop" and n >= 15:
                ws.send(good)
                ws.close()
                return
            else:
                ws.send(good)

    with serve(handler, "127.0.0.1", 0, ssl=ctx, process_request=auth,
               max_size=2**22) as server:
        port = server.socket.getsockname()[1]
        print(f"READY {port} {ca}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
