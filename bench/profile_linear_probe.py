"""Where a cold-cache linear probe spends its time and memory: a timeline of its log lines with the process's
resident memory at each, the peak, and (with --cprofile) the top functions by cumulative time.

    python bench/profile_linear_probe.py --data ../shared/data/kermany_cxr_224 \
        --weights ../shared/weights/mobilenet_v2_imagenet.pth [--cprofile 25]

Resident memory is read from /proc/self/status (Linux): VmRSS now, VmHWM the peak so far, the number
`/usr/bin/time -v` reports as "Maximum resident set size". A sampler thread records the peak between
log lines, so a phase that allocates and frees between two messages still shows.
"""
from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import tempfile
import threading
import time


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size in MB."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


class Timeline(logging.Handler):
    """One row per log record: seconds since start, RSS now, the highest RSS sampled since the last row."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.start, self.rows, self.window_peak = time.perf_counter(), [], 0.0
        self.peak_lock = threading.Lock()  # not self.lock: that is the Handler's own

    def sample(self) -> None:
        with self.peak_lock:
            self.window_peak = max(self.window_peak, rss_mb()[0])

    def emit(self, record: logging.LogRecord) -> None:
        now, _ = rss_mb()
        with self.peak_lock:
            peak, self.window_peak = max(self.window_peak, now), now
        self.rows.append((time.perf_counter() - self.start, now, peak, record.getMessage()[:110]))


def run(args) -> None:
    timeline = Timeline()
    logging.getLogger("mobilemed").addHandler(timeline)
    logging.getLogger("mobilemed").setLevel(logging.INFO)
    stop = threading.Event()

    def sampler():
        while not stop.wait(0.2):
            timeline.sample()

    threading.Thread(target=sampler, daemon=True).start()
    profiler = cProfile.Profile() if args.cprofile else None
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as out:
        os.environ["MOBILEMED_HOME"] = home  # cold caches
        from mobilemed.cli.main import main

        argv = ["--quiet", "train", args.data, "--mode", "linear-probe", "--weights", args.weights,
                "--epochs", str(args.epochs), "--out", f"{out}/run", *args.extra]
        if profiler:
            profiler.enable()
        code = main(argv)
        if profiler:
            profiler.disable()
    stop.set()
    print(f"\nexit code {code}; wall {time.perf_counter() - timeline.start:.1f} s; peak RSS {rss_mb()[1]:.0f} MB\n")
    print("| t (s) | RSS (MB) | peak since previous line (MB) | log line |\n|---:|---:|---:|---|")
    for t, now, peak, message in timeline.rows:
        print(f"| {t:.1f} | {now:.0f} | {peak:.0f} | {message} |")
    if profiler:
        print()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.cprofile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kermany_cxr_224")
    parser.add_argument("--weights", default="../shared/weights/mobilenet_v2_imagenet.pth")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="print the top N functions")
    parser.add_argument("extra", nargs="*", help="more `mobilemed train` options, after --")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
