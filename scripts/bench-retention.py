#!/usr/bin/env python3
"""Does the data directory stay bounded under a steady workload with retention on?

Starts a server (release build by default) with retention.runs_per_pipeline = 100, pruning
every second, and runs RUNS one-task runs of a shared task (the `debug` plugin, so that the
workload is Gofer's own bookkeeping, not Docker's) in bursts of 100 across two pipelines,
printing the database (with its WAL) and the logs folder's sizes every 500 runs. Events are kept
for --events-max-age-secs (default 10 s, so that the run shows their limit too; the shipped
default is 30 days, until which they are what grows: about 1.1 KiB per run).

Usage: scripts/bench-retention.py [--gofer PATH] [--runs N] [--events-max-age-secs S]
"""
import argparse
import os
import subprocess
import tempfile
import time

from benchlib import free_port, api

HERE = os.path.dirname(os.path.abspath(__file__))


def size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def main():
    parser = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
    parser.add_argument("--gofer", default=os.path.join(target, "release", "gofer"))
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--events-max-age-secs", type=int, default=10)
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="gofer-bench-retention-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOFER_")}
    env.update({"GOFER_LOG__LEVEL": "warn", "GOFER_RETENTION__RUNS_PER_PIPELINE": "100",
                "GOFER_RETENTION__INTERVAL_SECS": "1", "GOFER_RUNS__DEFAULT_PARALLELISM": "50",
                "GOFER_RETENTION__EVENTS_MAX_AGE_SECS": str(args.events_max_age_secs)})
    server = subprocess.Popen([args.gofer, "service", "start", "--bind", f"127.0.0.1:{port}", "--data-dir", data],
                              env=env, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                api(base, "GET", "/api/system/metadata")
                break
            except OSError:
                time.sleep(0.02)
        pipelines = ["steady-a", "steady-b"]
        for pipeline in pipelines:
            config = {"id": pipeline, "name": pipeline, "tasks": [
                {"id": "work", "plugin": "debug", "settings": {"exit_code": "0"}, "depends_on": {}, "variables": {}}]}
            api(base, "POST", f"/api/namespaces/default/pipelines/{pipeline}/configs", {"config": config})
            api(base, "POST", f"/api/namespaces/default/pipelines/{pipeline}/configs/1")
        print(f"{'runs':>6} {'database (with WAL)':>20} {'logs folder':>12} {'runs kept':>10} {'s':>6}")
        started = time.perf_counter()
        done = 0
        while done < args.runs:
            ids = []
            for index in range(100):
                pipeline = pipelines[index % 2]
                run = api(base, "POST", f"/api/namespaces/default/pipelines/{pipeline}/runs", {"variables": {}})["run"]
                ids.append((pipeline, run["run_id"]))
            for pipeline, run_id in ids:
                while api(base, "GET", f"/api/namespaces/default/pipelines/{pipeline}/runs/{run_id}")["run"]["state"] != "complete":
                    time.sleep(0.01)
            done += len(ids)
            if done % 500 == 0:
                time.sleep(1.2)  # one pruning pass
                database = size(os.path.join(data, "gofer.db")) + size(os.path.join(data, "gofer.db-wal"))
                kept = sum(len(api(base, "GET", f"/api/namespaces/default/pipelines/{p}/runs?limit=1000")["runs"]) for p in pipelines)
                print(f"{done:>6} {database / 1024:>17.0f} KiB {size(os.path.join(data, 'logs')) / 1024:>8.0f} KiB "
                      f"{kept:>10} {time.perf_counter() - started:>6.1f}", flush=True)
    finally:
        server.terminate()
        server.wait()
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
