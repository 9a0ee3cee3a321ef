#!/usr/bin/env python3
"""Benchmark: latency tails of the API's GET list and get endpoints under load.

Starts a release server on a fresh data directory, fills it with one pipeline and --runs runs of
the built-in `debug` shared task (no container needed), then drives each endpoint with
`wrk -t2 -c4 -d<seconds>s --latency` over loopback (default page sizes) and prints requests per
second with p50, p90 and p99 latency. Needs `wrk` (Debian: apt-get install wrk).

Usage: scripts/bench-api.py [--gofer PATH] [--seconds N] [--runs N]
"""
import argparse
import re
import shutil
import subprocess
import time

from benchlib import api, default_binary, ready_server

ENDPOINTS = [

    "/api/namespaces",
    "/api/namespaces/default",
    "/api/namespaces/default/pipelines",
    "/api/namespaces/default/pipelines/bench",
    "/api/namespaces/default/pipelines/bench/configs",
    "/api/namespaces/default/pipelines/bench/runs",
    "/api/namespaces/default/pipelines/bench/runs/1",
    "/api/namespaces/default/pipelines/bench/runs/1/tasks",
    "/api/namespaces/default/pipelines/bench/runs/1/tasks/noop",
    "/api/namespaces/default/pipelines/bench/subscriptions",
    "/api/plugins",
    "/api/events",
    "/api/system/metadata",
    "/api/health",
]



def to_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def drive(base, path, seconds):
    output = subprocess.run(
        ["wrk", "-t2", "-c4", f"-d{seconds}s", "--latency", "-H", "gofer-api-version: v0", base + path],
        check=True, capture_output=True, text=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", output, re.MULTILINE))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"{path}: {errors.group(1)} error responses")
    return rate, {key: to_ms(value) for key, value in percentiles.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer", default=default_binary())
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    with ready_server(args.gofer, "gofer-bench-api-") as (base, _server):
        pipeline = {"id": "bench", "name": "Bench", "tasks": [{"id": "noop", "plugin": "debug", "settings": {}}]}
        api(base, "POST", "/api/namespaces/default/pipelines/bench/configs", {"config": pipeline})
        api(base, "POST", "/api/namespaces/default/pipelines/bench/configs/1")
        for _ in range(args.runs):
            api(base, "POST", "/api/namespaces/default/pipelines/bench/runs", {"variables": {}})
        while api(base, "GET", f"/api/namespaces/default/pipelines/bench/runs/{args.runs}")["run"]["state"] != "complete":
            time.sleep(0.2)
        print(f"gofer: {args.gofer}; wrk 2 threads x 4 connections, {args.seconds} s each, {args.runs} runs stored")
        print(f"{'GET':<58} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
        for path in ENDPOINTS:
            rate, latency = drive(base, path, args.seconds)
            print(f"{path:<58} {rate:>9.0f} {latency['50']:>8.3f} {latency['90']:>8.3f} {latency['99']:>8.3f}")

if __name__ == "__main__":
    main()
