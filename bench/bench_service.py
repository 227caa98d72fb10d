"""Load test of `mobilemed serve` on loopback: a bounded number of uploads at a fixed concurrency.

    python bench/bench_service.py --model runs/bench-linear-probe/best.int8.onnx \
        --image ../shared/data/kermany_cxr_224/test/PNEUMONIA/<file>.jpeg --requests 500 --concurrency 16

Starts the service in a subprocess on a free 127.0.0.1 port, sends --requests POST /v1/predict uploads with at
most --concurrency in flight, stops the service, and prints requests/s, p50/p90/p99 latency and the number of
errors by status. Loopback only; the request count and a timeout bound the run.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(model: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "mobilemed", "--quiet", "serve", model, "--port", str(port)])
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the service did not come up within 60 s")


async def load(url: str, content: bytes, name: str, requests: int, concurrency: int) -> tuple[list, Counter]:
    latencies, statuses = [], Counter()
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120) as client:
        async def one():
            async with gate:
                start = time.perf_counter()
                try:
                    response = await client.post(f"{url}/v1/predict", files={"file": (name, content)})
                    statuses[response.status_code] += 1
                except httpx.HTTPError as err:
                    statuses[type(err).__name__] += 1
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(one() for _ in range(requests)))
    return latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="best.pt or an exported .onnx")
    parser.add_argument("--image", required=True, help="the PNG / JPEG / DICOM every request uploads")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    port = free_port()
    service = start_service(args.model, port)
    try:
        image = Path(args.image)
        start = time.perf_counter()
        latencies, statuses = asyncio.run(load(f"http://127.0.0.1:{port}", image.read_bytes(), image.name,
                                               args.requests, args.concurrency))
        seconds = time.perf_counter() - start
    finally:
        service.terminate()
        service.wait(timeout=30)
    ms = np.asarray(latencies) * 1000
    errors = {k: v for k, v in statuses.items() if k != 200}
    print(f"\n{Path(args.model).name}, {args.requests} requests at concurrency {args.concurrency}, {image.name}\n")
    print("| requests/s | p50 (ms) | p90 (ms) | p99 (ms) | 200 OK | errors |")
    print("|---:|---:|---:|---:|---:|---|")
    print(f"| {args.requests / seconds:.1f} | {np.percentile(ms, 50):.0f} | {np.percentile(ms, 90):.0f} | "
          f"{np.percentile(ms, 99):.0f} | {statuses[200]} | {errors or 'none'} |")
    five_xx = sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500)
    if five_xx:
        raise SystemExit(f"{five_xx} responses were 5xx")


if __name__ == "__main__":
    main()
