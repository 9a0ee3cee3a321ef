#!/usr/bin/env python3
"""Benchmark: the Swarm scheduler against the Docker one, side by side in one run.

Two servers from the same binary, one with `scheduler.engine = docker` and one with `swarm` (this
engine must be a Swarm manager: `make setup` makes it a single-node Swarm). On each, --runs
one-task runs of the same local image, one at a time: start → complete (from the run's own
start and end times), median and p90, and the ratio Swarm / Docker: the per-task overhead of a
service in `replicated-job` mode over a plain container.

Usage: scripts/bench-swarm.py [--gofer PATH] [--runs N]
"""
import argparse
import os
import statistics
import subprocess
import time

from benchlib import api, default_binary, ready_server

IMAGE = "gofer-busybox:local"
HERE = os.path.dirname(os.path.abspath(__file__))
PIPELINE = "/api/namespaces/default/pipelines/onetask"


def durations(base, runs):
    """Runs the one-task pipeline `runs` times, one after another; each run's milliseconds."""
    config = {"id": "onetask", "name": "onetask",
              "tasks": [{"id": "work", "image": IMAGE, "command": ["true"]}]}
    api(base, "POST", f"{PIPELINE}/configs", {"config": config})
    api(base, "POST", f"{PIPELINE}/configs/1")
    taken = []
    for run_id in range(1, runs + 1):
        api(base, "POST", f"{PIPELINE}/runs", {"variables": {}})
        while True:
            run = api(base, "GET", f"{PIPELINE}/runs/{run_id}")["run"]
            if run["state"] == "complete":
                break
            time.sleep(0.005)
        if run["status"] != "successful":
            raise SystemExit(f"run {run_id} did not succeed: {run}")
        taken.append(run["ended"] - run["started"])
    return taken


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer", default=default_binary())
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    state = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                           capture_output=True, text=True).stdout.strip()
    if state != "active":
        raise SystemExit("this engine is not in a Swarm: run `make setup` (docker swarm init)")
    subprocess.run(["bash", os.path.join(HERE, "build-busybox-image.sh")], check=True,
                   stdout=subprocess.DEVNULL)
    results = {}
    for engine in ["docker", "swarm"]:
        with ready_server(args.gofer, f"gofer-bench-{engine}-", GOFER_SCHEDULER__ENGINE=engine) as (base, _):
            results[engine] = durations(base, args.runs)
    print(f"gofer: {args.gofer}; {args.runs} one-task runs one at a time, run start → complete")
    for engine, taken in results.items():
        ordered = sorted(taken)
        print(f"    {engine:<6}  median {statistics.median(taken):6.0f} ms   p90 {ordered[int(len(ordered) * 0.9) - 1]:6.0f} ms")
    ratio = statistics.median(results["swarm"]) / statistics.median(results["docker"])
    print(f"    swarm / docker (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
