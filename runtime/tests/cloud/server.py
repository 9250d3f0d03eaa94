#!/usr/bin/env python3
"""A small openpi policy server for the cloud-link tests: PyPI `websockets` with the openpi
client's msgpack-numpy encoding (`openpi_client.msgpack_numpy`), TLS from a test CA made here
with openssl, and an API key. Listens on 127.0.0.1; prints `READY <port> <ca.pem>`.

    server.py --dir DIR --api-key KEY --mode normal|slow|malformed|flood|drop [--vx 0.3]

normal: answers every observation with a (10, 3) float32 chunk [vx, 0, 0].
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--mode", default="normal")
    ap.add_argument("--vx", type=float, default=0.3)
    a = ap.parse_args()
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
