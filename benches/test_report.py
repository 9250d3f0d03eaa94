#!/usr/bin/env python3
"""Checks of the performance report's own logic, run by `cargo test -p reflex-benches --test
harness` (so by `bash scripts/test`): histogram quantiles, the target verdicts (each can fail),
and a 0.3 s run of the Python peer. Prints "report checks: ok"."""
import json
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402


def main():
    # 1. Quantiles from a [value, count] histogram equal the whole sample's (Tail::of's rank rule).
    rng = random.Random(7)
    for _ in range(50):
        sample = sorted(rng.randint(0, 300) for _ in range(rng.randint(1, 2000)))
        hist = {}
        for v in sample:
            hist[v] = hist.get(v, 0) + 1
        for q in (0.5, 0.99, 0.999, 1.0):
            want = sample[int(round((len(sample) - 1) * q))]
            got = report.quantile_hist(sorted(hist.items()), q)
            assert got == want, (q, got, want)

    # 2. The verdicts, on the committed results: as committed, then with each target broken.
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for f in report.RESULTS.glob("*.json"):
            shutil.copy(f, tmp / f.name)
        report.RESULTS = tmp
        base = report.summarize()
        assert len(base["targets"]) == 11, base["targets"]
        report.markdown(base)
        assert "| target | measured | limit | met |" in (tmp / "report.md").read_text()

        def verdict(name_part):
            s = report.summarize()
            return next(t for t in s["targets"] if name_part in t["target"])["met"]

        def edit(name, fn):
            path = tmp / name
            value = json.loads(path.read_text())
            fn(value)
            path.write_text(json.dumps(value))

        edit("swap.json", lambda rows: [r.update(swap_tick_max_us=1e6) for r in rows if r["swaps"]])
        assert verdict("hot-swap") is False
        edit("soak.json", lambda s: s.update(rss_spread_after_warmup_mb=2.5))
        assert verdict("RSS flat") is False
        edit("pull.json", lambda p: p.update(median_mb_per_s=299.0))
        assert verdict("pull") is False
        edit("loop_reflex.json", lambda rows: [r.update(deadline_misses=0) for r in rows])
        assert verdict("zero deadline misses") is True
        edit("loop_reflex.json", lambda rows: rows[0].update(deadline_misses=1))
        assert verdict("zero deadline misses") is False

        # 3. The Python peer: 30 ticks at 100 Hz, every tick in its histograms.
        out = tmp / "peer.json"
        subprocess.run([sys.executable, str(HERE / "peer_loop.py"), "--period-ms", "10", "--seconds", "0.3",
                        "--json", str(out)], check=True, capture_output=True)
        row = json.loads(out.read_text())
        assert row["ticks"] == 30, row["ticks"]
        assert sum(c for _, c in row["tick_cost_hist_100ns"]) == 30
        assert sum(c for _, c in row["lateness_hist_us"]) == 29  # the first tick has no deadline
        bad = subprocess.run([sys.executable, str(HERE / "peer_loop.py"), "--period-ms", "0"],
                             capture_output=True, text=True)
        assert bad.returncode != 0 and "--period-ms" in bad.stderr, bad.stderr
    print("report checks: ok")


if __name__ == "__main__":
    main()
