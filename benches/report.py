#!/usr/bin/env python3
"""The performance report: runs every benchmark of Reflex side by side in one session, writes the
results as JSON, draws the plots and checks the targets. `bash scripts/bench-report` builds what it
needs and calls this; see benches/README.md.

    report.py [--quick] [--only STEP,...] [--plots-only]

Steps (in this order; each writes benches/results/<file>):
  machine   machine.json          CPU, cores, kernel, virtualization, RT settings
  safety    safety_evaluate.json  Safety::evaluate per call vs beam count (reflex-bench)
  loop      loop_reflex.json, loop_cyclictest.json, loop_python.json
            100 Hz and 1 kHz, idle and with a CPU hog on CPU 0, 60 s each: Reflex's RT loop,
            cyclictest at the same period/priority/CPU, and the LeRobot-style Python peer
  infer     policy_infer_rust.json, policy_infer_python.json
  updates   pull.json (verified pull, docker-registry on 127.0.0.1), swap.json (hot swaps)
  soak      soak.json             `reflex run --io dds` for 10 min: RSS, E-stop to zero command
Then: report.json (headline numbers and targets), report.md (the table), plots/*.svg + *.png.
--quick shortens every run (a smoke test of the harness; its numbers are not the report's).
"""
import argparse
import json
import os
import pathlib
import platform
import re
import signal
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
PLOTS = RESULTS / "plots"
BENCH = REPO / "target/release/reflex-bench"
REFLEX_DDS = REPO / "target/release/reflex"
PY = REPO / ".venv/bin/python"
STEPS = ["machine", "safety", "loop", "arm", "infer", "updates", "soak"]
CONFIGS = [(10.0, False), (10.0, True), (1.0, False), (1.0, True)]


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def save(name, value):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(value, indent=1))


def load(name):
    path = RESULTS / name
    if not path.is_file():
        sys.exit(f"report.py: {path} missing; run without --plots-only (or with --only for that step)")
    return json.loads(path.read_text())


class Hog:
    """`reflex-bench hog --cpu 0` as its own process, stopped by PID."""

    def __init__(self, on):
        self.proc = subprocess.Popen([str(BENCH), "hog", "--cpu", "0"]) if on else None

    def __enter__(self):
        time.sleep(0.5 if self.proc else 0)
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def step_machine(_a):
    cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1")
    m = {
        "cpu": cpu,
        "cpus_online": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "preempt": "PREEMPT_RT" if "PREEMPT_RT" in platform.version() else
                   ("PREEMPT" if "PREEMPT " in platform.version() + " " else "voluntary/none"),
        "virtualization": sh("systemd-detect-virt") or "unknown",
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "cpu_governor": sh("cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or "n/a (no cpufreq)",
        "cpuidle": (sh("cat /sys/devices/system/cpu/cpuidle/current_driver") or "none")
                   + (f", guest_halt_poll_ns={v}" if (v := sh("cat /sys/module/haltpoll/parameters/guest_halt_poll_ns 2>/dev/null")) else ""),
        "isolated_cpus": sh("cat /sys/devices/system/cpu/isolated") or "none",
        "cyclictest": sh("cyclictest --help 2>&1 | head -1"),
        "rustc": sh("rustc --version"),
        "python": platform.python_version(),
        "onnxruntime": sh(f"{PY} -c 'import onnxruntime; print(onnxruntime.__version__)'"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host_preflight": sh(f"{REPO}/target/release/reflex preflight 2>&1 | head -20"),
    }
    save("machine.json", m)
    print(json.dumps({k: v for k, v in m.items() if k != "host_preflight"}, indent=1))


def step_safety(a):
    run([BENCH, "--calls", 20_000 if a.quick else 200_000, "--json", RESULTS / "safety_evaluate.json"])


def cyclictest(period_ms, seconds, hog):
    """cyclictest at the period, priority (80) and CPU (the last) of Reflex's RT loop."""
    cpu = (os.cpu_count() or 1) - 1
    us = int(round(period_ms * 1000))
    cmd = ["cyclictest", "-m", "-q", "-p", "80", "-i", str(us), "-a", str(cpu), "-t", "1",
           "-D", str(int(seconds)), "-h", "20000"]
    print("+", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    hist, overflows, mx = [], 0, None
    for line in out.splitlines():
        m = re.match(r"^(\d+)\s+(\d+)$", line)
        if m and int(m.group(2)):
            hist.append([int(m.group(1)), int(m.group(2))])
        if line.startswith("# Histogram Overflows:"):
            overflows = int(line.split(":")[1].split()[0])
        if line.startswith("# Max Latencies:"):
            mx = int(line.split(":")[1].split()[0])
    if overflows:
        hist.append([mx, overflows])  # beyond 20 ms: placed at the max (only the max is known)
    n = sum(c for _, c in hist)
    row = {"period_ms": period_ms, "seconds": seconds, "hog": hog, "command": " ".join(cmd),
           "samples": n, "max_us": mx, "lateness_hist_us": hist,
           "deadline_misses": sum(c for v, c in hist if v >= us)}
    row["lateness_us"] = {q: quantile_hist(hist, p) for q, p in QS}
    print(f"cyclictest {period_ms} ms hog={hog}: {row['lateness_us']} misses {row['deadline_misses']}")
    return row


QS = [("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)]


def quantile_hist(hist, q):
    """The value at quantile q of a [value, count] histogram (same rank rule as Tail::of)."""
    n = sum(c for _, c in hist)
    rank = int(round((n - 1) * q))
    seen = 0
    for v, c in sorted(hist):
        seen += c
        if seen > rank:
            return v
    return hist[-1][0] if hist else None


def steal_ms():
    """Hypervisor steal so far (ms, all CPUs), from /proc/stat — as rt::host_steal_ms reads it."""
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    return int(cpu[8]) * 1000 / os.sysconf("SC_CLK_TCK")


def step_loop(a):
    seconds = 5 if a.quick else 60
    reflex, cyc, peer = [], [], []
    for period_ms, hog in CONFIGS:
        tmp = RESULTS / "loop_tmp.json"
        run([BENCH, "loop", "--seconds", seconds, "--period-ms", period_ms,
             "--hog", "on" if hog else "off", "--json", tmp])
        reflex += json.loads(tmp.read_text())
        with Hog(hog):
            before = steal_ms()
            cyc.append(cyclictest(period_ms, seconds, hog))
            cyc[-1]["host_steal_ms"] = steal_ms() - before
        with Hog(hog):
            before = steal_ms()
            run([PY, HERE / "peer_loop.py", "--period-ms", period_ms, "--seconds", seconds,
                 *(["--hog"] if hog else []), "--json", tmp])
            stolen = steal_ms() - before
        peer.append(json.loads(tmp.read_text()))
        peer[-1]["host_steal_ms"] = stolen
        tmp.unlink()
    save("loop_reflex.json", reflex)
    save("loop_cyclictest.json", cyc)
    save("loop_python.json", peer)


def step_arm(a):
    run([BENCH, "arm-tick", "--seconds", 5 if a.quick else 60, "--json", RESULTS / "arm_tick.json"])


def step_infer(a):
    calls = 2_000 if a.quick else 20_000
    run([BENCH, "infer", "--calls", calls, "--json", RESULTS / "policy_infer_rust.json"])
    run([PY, HERE / "python_infer.py", "--calls", calls, "--json", RESULTS / "policy_infer_python.json"])


def step_updates(a):
    run([BENCH, "pull", "--mb", 64 if a.quick else 512, "--runs", 3, "--json", RESULTS / "pull.json"])
    run([BENCH, "swap", "--seconds", 6 if a.quick else 30, "--json", RESULTS / "swap.json"])


def step_soak(a):
    run([PY, HERE / "soak.py", "--reflex", REFLEX_DDS, "--seconds", 45 if a.quick else 600,
         "--json", RESULTS / "soak.json"])


# ---------------------------------------------------------------------------------------------
# Summary, targets, plots


def us(ns):
    return round(ns / 1000, 1)


def summarize():
    machine = load("machine.json")
    safety = load("safety_evaluate.json")
    reflex, cyc, peer = load("loop_reflex.json"), load("loop_cyclictest.json"), load("loop_python.json")
    rust_inf, py_inf = load("policy_infer_rust.json"), load("policy_infer_python.json")
    pull, swap, soak = load("pull.json"), load("swap.json"), load("soak.json")

    loops = []
    for r, c, p in zip(reflex, cyc, peer):
        assert (r["period_ms"], r["hog"]) == (c["period_ms"], c["hog"]) == (p["period_ms"], p["hog"])
        row = {"period_ms": r["period_ms"], "hog": r["hog"], "seconds": r["seconds"],
               "host_steal_ms": {"reflex": r.get("host_steal_ms"), "cyclictest": c.get("host_steal_ms"),
                                 "python": p.get("host_steal_ms")}}
        for who, lat, misses in [
            ("reflex", {q: us(r["lateness"][f"{q}_ns"]) for q, _ in QS}, r["deadline_misses"]),
            ("cyclictest", c["lateness_us"], c["deadline_misses"]),
            ("python", {q: us(p["lateness"][f"{q}_ns"]) for q, _ in QS}, p["deadline_misses"]),
        ]:
            row[who] = {"lateness_us": lat, "deadline_misses": misses}
        row["reflex"]["tick_us"] = {q: us(r["tick_cost"][f"{q}_ns"]) for q, _ in QS}
        row["python"]["tick_us"] = {q: us(p["tick_cost"][f"{q}_ns"]) for q, _ in QS}
        ct = max(c["lateness_us"]["p999"], 1)
        row["p999_reflex_over_cyclictest"] = round(row["reflex"]["lateness_us"]["p999"] / ct, 2)
        row["p99_reflex_over_cyclictest"] = round(
            row["reflex"]["lateness_us"]["p99"] / max(c["lateness_us"]["p99"], 1), 2)
        row["lateness_p99_python_over_reflex"] = round(
            row["python"]["lateness_us"]["p99"] / max(row["reflex"]["lateness_us"]["p99"], 0.1), 1)
        row["tick_p50_python_over_reflex"] = round(
            row["python"]["tick_us"]["p50"] / max(row["reflex"]["tick_us"]["p50"], 0.01), 1)
        row["tick_p99_python_over_reflex"] = round(
            row["python"]["tick_us"]["p99"] / max(row["reflex"]["tick_us"]["p99"], 0.01), 1)
        loops.append(row)

    s2048 = [r for r in safety if r["beams"] == 2048]
    worst2048 = max(s2048, key=lambda r: r["p50_ns"])
    rust_tiny = next(r for r in rust_inf if r["model"] == "tiny-mlp" and r["path"] == "reflex")
    py_tiny = next(r for r in py_inf if r["model"] == "tiny-mlp")
    no_swap = next(r for r in swap if r["swaps"] == 0)
    swaps = next(r for r in swap if r["swaps"] > 0)
    tick_p99 = max(r["reflex"]["tick_us"]["p99"] for r in loops)

    def target(name, measured, limit, ok, unit, detail=""):
        return {"target": name, "measured": measured, "limit": limit, "unit": unit, "met": bool(ok),
                "detail": detail}

    targets = []
    for r in loops:
        label = f"{'100 Hz' if r['period_ms'] == 10 else '1 kHz'} {'hog' if r['hog'] else 'idle'}"
        ratio = r["p999_reflex_over_cyclictest"]
        targets.append(target(
            f"lateness p99.9 ≤ 2× cyclictest ({label})", ratio, 2.0, ratio <= 2.0, "×",
            f"Reflex {r['reflex']['lateness_us']['p999']} µs vs cyclictest {r['cyclictest']['lateness_us']['p999']} µs"))
    misses100 = sum(r["reflex"]["deadline_misses"] for r in loops if r["period_ms"] == 10)
    targets.append(target("zero deadline misses at 100 Hz (idle + hog, 120 s)", misses100, 0, misses100 == 0, "misses",
                          "cyclictest: " + str(sum(r["cyclictest"]["deadline_misses"] for r in loops if r["period_ms"] == 10))))
    targets.append(target("safety evaluate 2048 beams median ≤ 5 µs (worst case)", us(worst2048["p50_ns"]), 5.0,
                          worst2048["p50_ns"] <= 5000, "µs", worst2048["case"]))
    targets.append(target("tick p99 ≤ 20 µs (worst of the four loop runs)", tick_p99, 20.0, tick_p99 <= 20.0, "µs"))
    # The arm loop (issue 20): H = 100, A = 14 at 100 Hz with two cameras handed off at 30 Hz.
    # Optional in results made before the step existed.
    arm = json.loads((RESULTS / "arm_tick.json").read_text()) if (RESULTS / "arm_tick.json").is_file() else None
    if arm is not None:
        targets.append(target(
            "arm tick p99 ≤ 20 µs (H = 100, A = 14, two cameras)", us(arm["tick_cost"]["p99_ns"]), 20.0,
            arm["tick_cost"]["p99_ns"] <= 20_000 and arm["ticks_driving"] > 0.9 * arm["tick_cost"]["samples"], "µs",
            f"p50 {us(arm['tick_cost']['p50_ns'])} / max {us(arm['tick_cost']['max_ns'])} µs; merge ticks p99 "
            f"{us(arm['merge_tick_cost']['p99_ns'])} µs; warm back to back p99 {us(arm['warm_tick_cost']['p99_ns'])} µs; "
            f"camera hand-off p50 / p99 {us(arm['camera_handoff_cost']['p50_ns'])} / "
            f"{us(arm['camera_handoff_cost']['p99_ns'])} µs (robot I/O thread)"))
    ratio = round(rust_tiny["p50_ns"] / py_tiny["p50_ns"], 2)
    targets.append(target("Rust inference ≤ 0.7× Python per call (tiny MLP, p50)", ratio, 0.7, ratio <= 0.7, "×",
                          f"{us(rust_tiny['p50_ns'])} µs vs {us(py_tiny['p50_ns'])} µs"))
    # "Normal" = the p99.9 of the same run's other ticks (same host conditions); the run without
    # swaps is shown next to it.
    normal = swaps.get("tick_p999_without_swaps_us", no_swap["tick_p999_us"])
    targets.append(target("hot-swap pause ≤ normal p99.9 tick", swaps["swap_tick_max_us"], normal,
                          swaps["swap_tick_max_us"] <= normal and swaps["ticks_without_action"] <= no_swap["ticks_without_action"],
                          "µs", f"costliest of {swaps['swap_ticks']} swap ticks vs the p99.9 of the same run's other "
                          f"ticks; run without swaps: p99.9 {no_swap['tick_p999_us']} µs, max {no_swap['tick_max_us']} µs; "
                          f"ticks without an action {swaps['ticks_without_action']} (no swaps: {no_swap['ticks_without_action']})"))
    targets.append(target("verified pull ≥ 300 MB/s (median)", round(pull["median_mb_per_s"]), 300,
                          pull["median_mb_per_s"] >= 300, "MB/s"))
    targets.append(target(f"RSS flat within 2 MB over the {soak['seconds'] / 60:.0f}-minute soak",
                          round(soak["rss_spread_after_warmup_mb"], 2), 2.0, soak["rss_spread_after_warmup_mb"] <= 2.0,
                          "MB", f"growth last minute vs minute 2: {soak['rss_growth_mb']:+.2f} MB"))
    summary = {
        "machine": {k: v for k, v in machine.items() if k != "host_preflight"},
        "loops": loops,
        "safety_evaluate": [{"beams": r["beams"], "case": r["case"], "p50_us": us(r["p50_ns"]),
                             "p99_us": us(r["p99_ns"])} for r in safety],
        "inference": {"tiny_mlp": {"rust_p50_us": us(rust_tiny["p50_ns"]), "python_p50_us": us(py_tiny["p50_ns"]),
                                   "ratio": ratio},
                      "all": [{"model": r["model"], "path": r["path"], "p50_us": us(r["p50_ns"]),
                               "p99_us": us(r["p99_ns"])} for r in rust_inf + py_inf]},
        "swap": swap,
        "pull": {"median_mb_per_s": pull["median_mb_per_s"], "sha256_mb_per_s": pull.get("sha256_mb_per_s")},
        "soak": {k: v for k, v in soak.items() if not k.endswith("samples_kb") and not k.endswith("samples_ms")},
        "targets": targets,
    }
    save("report.json", summary)
    return summary


def markdown(s):
    m = s["machine"]
    out = [f"Machine: {m['cpu']}, {m['cpus_online']} CPUs, {m['memory_gib']} GiB; virtualization: "
           f"{m['virtualization']} (systemd-detect-virt); kernel {m['kernel']} ({m['preempt']}), {m['os']}; "
           f"CPU governor: {m['cpu_governor']}; cpuidle: {m.get('cpuidle', '?')}; isolated CPUs: {m['isolated_cpus']}; {m['rustc']}; "
           f"Python {m['python']}, onnxruntime {m['onnxruntime']}; run {m['date']}.", "",
           "| loop | who | lateness p50 / p99 / p99.9 / max (µs) | misses | tick p50 / p99 (µs) |",
           "|---|---|---|---|---|"]
    for r in s["loops"]:
        label = f"{'100 Hz' if r['period_ms'] == 10 else '1 kHz'}, {'CPU hog' if r['hog'] else 'idle'}"
        for who in ("reflex", "cyclictest", "python"):
            x = r[who]
            lat = " / ".join(str(x["lateness_us"][q]) for q, _ in QS)
            tick = " / ".join(str(x["tick_us"][q]) for q in ("p50", "p99")) if "tick_us" in x else "—"
            name = {"reflex": "Reflex", "cyclictest": "cyclictest", "python": "Python peer"}[who]
            out.append(f"| {label} | {name} | {lat} | {x['deadline_misses']} | {tick} |")
    out += ["", "| loop | lateness p99.9: Reflex / cyclictest | lateness p99: Python / Reflex | "
            "tick p50: Python / Reflex | tick p99: Python / Reflex | host steal (ms): Reflex / cyclictest / Python runs |",
            "|---|---|---|---|---|---|"]
    for r in s["loops"]:
        label = f"{'100 Hz' if r['period_ms'] == 10 else '1 kHz'}, {'CPU hog' if r['hog'] else 'idle'}"
        out.append(f"| {label} | {r['p999_reflex_over_cyclictest']}× | {r['lateness_p99_python_over_reflex']}× | "
                   f"{r['tick_p50_python_over_reflex']}× | {r['tick_p99_python_over_reflex']}× | "
                   + " / ".join("?" if r["host_steal_ms"][w] is None else f"{r['host_steal_ms'][w]:.0f}"
                                for w in ("reflex", "cyclictest", "python")) + " |")
    out += ["", "| target | measured | limit | met |", "|---|---|---|---|"]
    for t in s["targets"]:
        verdict = "yes" if t["met"] else f"**no**, {t['measured'] / t['limit']:.2f}× the limit" if t["limit"] else "**no**"
        detail = f" ({t['detail']})" if t["detail"] else ""
        out.append(f"| {t['target']} | {t['measured']} {t['unit']}{detail} | {t['limit']} {t['unit']} | {verdict} |")
    so = s["soak"]
    e = so["estop_to_zero_ms"]
    out += ["", f"E-stop to zero command, end to end over DDS ({so['estop_presses']} presses during the soak): "
            f"p50 {fmt(e['p50'])} ms, p99 {fmt(e['p99'])} ms, max {fmt(e['max'])} ms; "
            f"{so['estop_no_stop_within_2s']} presses without a stop.",
            f"Inference p50, tiny MLP: Reflex {s['inference']['tiny_mlp']['rust_p50_us']} µs, "
            f"Python onnxruntime {s['inference']['tiny_mlp']['python_p50_us']} µs."]
    text = "\n".join(out) + "\n"
    (RESULTS / "report.md").write_text(text)
    print(text)


def fmt(x):
    return "—" if x is None else f"{x:.1f}"


def plots(_s):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    PLOTS.mkdir(parents=True, exist_ok=True)
    reflex, cyc, peer = load("loop_reflex.json"), load("loop_cyclictest.json"), load("loop_python.json")
    colors = {"Reflex": "#1f77b4", "cyclictest": "#2ca02c", "Python peer": "#d62728"}

    def series(r, c, p):
        return [("Reflex", r["lateness_hist_us"]), ("cyclictest", c["lateness_hist_us"]),
                ("Python peer", p["lateness_hist_us"])]

    def save_fig(fig, name):
        for ext in ("svg", "png"):
            fig.savefig(PLOTS / f"{name}.{ext}", dpi=110)
        plt.close(fig)

    for period in (10.0, 1.0):
        tag = "100hz" if period == 10 else "1khz"
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, hog in zip(axes, (False, True)):
            i = CONFIGS.index((period, hog))
            for name, hist in series(reflex[i], cyc[i], peer[i]):
                h = np.array(hist, dtype=float).reshape(-1, 2)
                ax.step(np.maximum(h[:, 0], 0.5), h[:, 1], where="post", label=name, color=colors[name])
            ax.set_xscale("log"); ax.set_yscale("log")
            ax.set_title(f"{'100 Hz' if period == 10 else '1 kHz'}, {'CPU hog on the other core' if hog else 'idle'}")
            ax.set_xlabel("wake-up lateness (µs, 1 µs bins)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("ticks")
        axes[0].legend()
        fig.tight_layout()
        save_fig(fig, f"lateness_hist_{tag}")

        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, hog in zip(axes, (False, True)):
            i = CONFIGS.index((period, hog))
            for name, hist in series(reflex[i], cyc[i], peer[i]):
                h = np.array(sorted(hist), dtype=float).reshape(-1, 2)
                n = h[:, 1].sum()
                exceed = 1.0 - np.cumsum(h[:, 1]) / n
                ax.step(np.maximum(h[:, 0], 0.5), np.maximum(exceed, 0.5 / n), where="post", label=name,
                        color=colors[name])
            ax.axhline(1e-3, color="grey", lw=0.8, ls="--")
            ax.set_xscale("log"); ax.set_yscale("log")
            ax.set_title(f"{'100 Hz' if period == 10 else '1 kHz'}, {'CPU hog' if hog else 'idle'}: 1 − CDF")
            ax.set_xlabel("wake-up lateness (µs)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("fraction of ticks later than x (dashed: p99.9)")
        axes[0].legend()
        fig.tight_layout()
        save_fig(fig, f"lateness_cdf_{tag}")

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (period, hog) in enumerate(CONFIGS):
        for name, row, ls in (("Reflex", reflex[i], "-"), ("Python peer", peer[i], ":")):
            h = np.array(sorted(row["tick_cost_hist_100ns"]), dtype=float).reshape(-1, 2)
            n = h[:, 1].sum()
            ax.step(h[:, 0] / 1000, np.cumsum(h[:, 1]) / n, where="post", ls=ls,
                    label=f"{name} {'100 Hz' if period == 10 else '1 kHz'}{' hog' if hog else ''}")
    ax.set_xscale("log"); ax.set_xlabel("tick cost (µs)"); ax.set_ylabel("CDF"); ax.grid(alpha=0.3)
    ax.set_title("Cost of one control tick: Reflex vs the Python peer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_fig(fig, "tick_cost_cdf")

    safety = load("safety_evaluate.json")
    fig, ax = plt.subplots(figsize=(7, 4))
    for case in sorted({r["case"] for r in safety}):
        rows = sorted((r for r in safety if r["case"] == case), key=lambda r: r["beams"])
        b = [r["beams"] for r in rows]
        ax.plot(b, [r["p50_ns"] / 1000 for r in rows], "o-", label=f"{case} p50")
        ax.plot(b, [r["p99_ns"] / 1000 for r in rows], "x:", label=f"{case} p99")
    ax.axhline(5.0, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("beams per scan"); ax.set_ylabel("Safety::evaluate (µs)"); ax.grid(alpha=0.3)
    ax.set_title("Safety evaluate cost vs beam count (dashed: 5 µs target at 2048)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_fig(fig, "safety_vs_beams")

    soak = load("soak.json")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    t = [x[0] / 60 for x in soak["rss_samples_kb"]]
    axes[0].plot(t, [x[1] / 1024 for x in soak["rss_samples_kb"]])
    axes[0].set_xlabel("minutes"); axes[0].set_ylabel("VmRSS (MiB)"); axes[0].grid(alpha=0.3)
    axes[0].set_title("RSS of reflex run --io dds")
    lat = soak["estop_to_zero_samples_ms"]
    if lat:
        axes[1].hist(lat, bins=30)
    axes[1].set_xlabel("E-stop press to first zero /cmd_vel (ms)"); axes[1].set_ylabel("presses")
    axes[1].set_title("E-stop to zero command over DDS"); axes[1].grid(alpha=0.3)
    fig.tight_layout()
    save_fig(fig, "soak")
    print(f"plots in {PLOTS}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="comma-separated steps: " + ",".join(STEPS))
    ap.add_argument("--plots-only", action="store_true")
    a = ap.parse_args()
    steps = [] if a.plots_only else (a.only.split(",") if a.only else STEPS)
    for step in steps:
        if step not in STEPS:
            sys.exit(f"report.py: unknown step {step!r}; steps: {','.join(STEPS)}")
    for binary in (BENCH, REFLEX_DDS):
        if steps and not binary.is_file():
            sys.exit(f"report.py: {binary} missing; run bash scripts/bench-report (it builds it)")
    t0 = time.monotonic()
    for step in steps:
        print(f"\n=== {step} ===", flush=True)
        globals()[f"step_{step}"](a)
    s = summarize()
    markdown(s)
    plots(s)
    missed = [t["target"] for t in s["targets"] if not t["met"]]
    print(f"report done in {time.monotonic() - t0:.0f} s; targets missed: {len(missed)}")
    for t in missed:
        print("  missed:", t)


if __name__ == "__main__":
    main()
