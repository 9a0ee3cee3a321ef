#!/usr/bin/env python3
"""Benchmark: Gofer runs vs raw `docker run --rm`, side by side in one run, on the same local image.

  (a) a 1-task run            vs one `docker run --rm`
  (b) a 10-task chain         vs ten `docker run --rm` one after another
  (c) a 10-task fan-out       vs ten `docker run --rm` at once
  (d) 50 runs of 1 task       vs fifty `docker run --rm`, all started at once

Gofer is timed end to end as a user sees it: `gofer run start PIPELINE --follow` (the CLI starts the
run, follows it over the event stream and exits when it completes), except (d), which starts runs
through the API and waits for the last to complete. Prints medians and ratios (Gofer / docker).

Usage: scripts/bench-runs.py [--gofer PATH] [--rounds N]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, api

IMAGE = "gofer-busybox:local"
HERE = os.path.dirname(os.path.abspath(__file__))


def task(task_id, depends_on=None):
    return {"id": task_id, "image": IMAGE, "depends_on": depends_on or {}, "variables": {}, "command": ["true"]}


def timed(command):
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def docker_parallel(count):
    start = time.perf_counter()
    processes = [subprocess.Popen(["docker", "run", "--rm", IMAGE, "true"], stdout=subprocess.DEVNULL) for _ in range(count)]
    for process in processes:
        if process.wait() != 0:
            raise SystemExit("docker run failed")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer", default=None)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    gofer = args.gofer or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/gofer-target")), "release", "gofer")
    if not os.path.exists(gofer):
        raise SystemExit(f"{gofer} not found: build it with `cargo build --release -p gofer` or pass --gofer")
    subprocess.run(["bash", os.path.join(HERE, "build-busybox-image.sh")], check=True)

    data = tempfile.mkdtemp(prefix="gofer-bench-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOFER_")}
    server = subprocess.Popen([gofer, "service", "start", "--bind", f"127.0.0.1:{port}", "--data-dir", data],
                              env={**env, "GOFER_LOG__LEVEL": "warn"}, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                api(base, "GET", "/api/system/metadata")
                break
            except OSError:
                time.sleep(0.05)
        pipelines = {
            "bench-one": [task("only")],
            "bench-chain": [task(f"step-{i}", {f"step-{i-1}": "Success"} if i else {}) for i in range(10)],
            "bench-fan": [task(f"leaf-{i}") for i in range(10)],
        }
        for pipeline, tasks in pipelines.items():
            config = {"id": pipeline, "name": pipeline, "parallelism": 0, "tasks": tasks}
            version = api(base, "POST", f"/api/namespaces/default/pipelines/{pipeline}/configs", {"config": config})["pipeline"]["config"]["version"]
            api(base, "POST", f"/api/namespaces/default/pipelines/{pipeline}/configs/{version}")
        cli = [gofer, "--api-base-url", base]
        cases = {
            "(a) 1-task run": (lambda: timed(cli + ["run", "start", "bench-one", "--follow"]),
                               lambda: timed(["docker", "run", "--rm", IMAGE, "true"])),
            "(b) 10-task chain": (lambda: timed(cli + ["run", "start", "bench-chain", "--follow"]),
                                  lambda: sum(timed(["docker", "run", "--rm", IMAGE, "true"]) for _ in range(10))),
            "(c) 10-task fan-out": (lambda: timed(cli + ["run", "start", "bench-fan", "--follow"]),
                                    lambda: docker_parallel(10)),
        }
        # Warm up both paths once.
        timed(cli + ["run", "start", "bench-one", "--follow"])
        timed(["docker", "run", "--rm", IMAGE, "true"])
        print(f"{'case':<22}{'gofer (median)':>16}{'docker (median)':>17}{'ratio':>8}")
        for name, (gofer_case, docker_case) in cases.items():
            gofer_times, docker_times = [], []
            for _ in range(args.rounds):
                gofer_times.append(gofer_case())
                docker_times.append(docker_case())
            g, d = statistics.median(gofer_times), statistics.median(docker_times)
            print(f"{name:<22}{g * 1000:>13.0f} ms{d * 1000:>14.0f} ms{g / d:>8.2f}")

        # (d) throughput: 50 runs at once.
        rounds = max(1, args.rounds // 3)
        gofer_times, docker_times = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            ids = [api(base, "POST", "/api/namespaces/default/pipelines/bench-one/runs", {"variables": {}})["run"]["run_id"] for _ in range(50)]
            pending = set(ids)
            while pending:
                runs = api(base, "GET", "/api/namespaces/default/pipelines/bench-one/runs?reverse=true&limit=60")["runs"]
                pending -= {run["run_id"] for run in runs if run["state"] == "complete"}
                time.sleep(0.02)
            gofer_times.append(time.perf_counter() - start)
            docker_times.append(docker_parallel(50))
        g, d = statistics.median(gofer_times), statistics.median(docker_times)
        print(f"{'(d) 50 runs at once':<22}{g * 1000:>13.0f} ms{d * 1000:>14.0f} ms{g / d:>8.2f}")
        print(f"    throughput: gofer {50 / g:.1f} runs/s, docker {50 / d:.1f} containers/s")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
