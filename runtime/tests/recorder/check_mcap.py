#!/usr/bin/env python3
"""Reads a Reflex flight recording with PyPI `mcap` and `mcap-ros2-support` (what Foxglove's
ecosystem uses) and prints one JSON summary; or writes a tampered copy for the replay tests.

    check_mcap.py summary FILE
    check_mcap.py tamper FILE OUT [--keep-hash]   # widens safety.lidar.margin_m by 0.3 m
    check_mcap.py flip FILE OUT TICK               # flips the recorded drive power of one tick
"""
import json
import sys

from mcap.reader import make_reader
from mcap.writer import Writer, CompressionType
from mcap_ros2.decoder import DecoderFactory


def summary(path):
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        out = {"profile": header.profile, "channels": {}, "scan_beams": None, "ticks_json": 0}
        first_tick = last_tick = None
        reasons = set()
        for schema, channel, message, decoded in reader.iter_decoded_messages(
            topics=["/scan", "/camera/image"]
        ):
            out["channels"].setdefault(channel.topic, 0)
            out["channels"][channel.topic] += 1
            if channel.topic == "/scan":
                out["scan_beams"] = len(decoded.ranges)
                out["scan_schema"] = schema.name
                out["scan_frame"] = decoded.header.frame_id
            else:
                out["image"] = [decoded.width, decoded.height, decoded.encoding, len(decoded.data)]
        for schema, channel, message in reader.iter_messages(
            topics=["/reflex/ticks", "/reflex/safety_io", "/reflex/inference"]
        ):
            out["channels"].setdefault(channel.topic, 0)
            out["channels"][channel.topic] += 1
            if channel.topic == "/reflex/ticks":
                tick = json.loads(message.data)
                reasons.update(tick["reasons"])
                first_tick = first_tick or tick["t_ns"]
                last_tick = tick["t_ns"]
                out["ticks_json"] += 1
                out["tick_schema_encoding"] = schema.encoding
        out["reasons"] = sorted(reasons)
        out["span_s"] = (last_tick - first_tick) / 1e9
        out["metadata"] = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        out["attachments"] = [a.name for a in reader.iter_attachments()]
        summ = reader.get_summary()
        out["chunks"] = len(summ.chunk_indexes)
        out["compression"] = sorted({c.compression for c in summ.chunk_indexes})
    print(json.dumps(out))


def tamper(path, out_path, keep_hash, flip_tick=None):
    with open(path, "rb") as f:
        reader = make_reader(f)
        summ = reader.get_summary()
        with open(out_path, "wb") as o:
            w = Writer(o, compression=CompressionType.ZSTD)
            w.start(profile="ros2", library="tamper")
            ids = {}
            for sid, s in summ.schemas.items():
                ids[sid] = w.register_schema(s.name, s.encoding, s.data)
            chans = {}
            for cid, c in summ.channels.items():
                chans[cid] = w.register_channel(
                    c.topic, c.message_encoding, ids.get(c.schema_id, 0), c.metadata
                )
            io_seen = 0
            for schema, channel, m in reader.iter_messages():
                data = m.data
                if channel.topic == "/reflex/safety_io":
                    if io_seen == flip_tick:
                        # ... action u8, reasons u64, power u8, flags u8, then the arm's
                        # per-joint state (SafetyState::ARM_BYTES: 16 joints x yield u8, stall
                        # sign u8, anchor f64, time f64, opened u8, last target f64 = 432
                        # bytes: the record's tail)
                        b = bytearray(data)
                        b[-2 - 16 * 27] ^= 1
                        data = bytes(b)
                    io_seen += 1
                w.add_message(chans[channel.id], m.log_time, data, m.publish_time, m.sequence)
            for a in reader.iter_attachments():
                data = a.data
                if a.name == "safety_config.json" and flip_tick is None:
                    cfg = json.loads(data)
                    cfg["lidar"]["margin_m"] += 0.3
                    data = json.dumps(cfg).encode()
                w.add_attachment(a.create_time, a.log_time, a.name, a.media_type, data)
            for m in reader.iter_metadata():
                md = dict(m.metadata)
                if not keep_hash and flip_tick is None:
                    md["config_hash"] = "sha256:" + "0" * 64
                w.add_metadata(m.name, md)
            w.finish()


if __name__ == "__main__":
    if sys.argv[1] == "summary":
        summary(sys.argv[2])
    elif sys.argv[1] == "flip":
        tamper(sys.argv[2], sys.argv[3], True, int(sys.argv[4]))
    elif sys.argv[1] == "tamper":
        tamper(sys.argv[2], sys.argv[3], "--keep-hash" in sys.argv)
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
