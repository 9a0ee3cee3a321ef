#!/usr/bin/env python3
"""Benchmark: triggers.

  (a) fire → container started: a webhook delivery (POST /api/external/webhook) to a pipeline of
      one container task, one at a time, --fires times: from just before the POST to the task's
      recorded start (the container is running), p50 and p99; beside it, raw `docker run -d` of
      the same image (the floor: creating and starting a container).
  (b) --subscriptions `interval` subscriptions at every=60s on one pipeline: the server's CPU
      while nothing is due, over --idle seconds (a share of one core), and its RSS.
  (c) the same subscriptions' first fires (each due 60 s after it was made, so a minute's worth
      of creation comes due within the same span): lateness = when the server received the
      fire minus the due time the plugin put in the fire's idempotency key, p50/p99/max.

Usage: scripts/bench-triggers.py [--gofer PATH] [--fires N] [--subscriptions N] [--idle SECONDS]
"""
import argparse
import os
import sqlite3
import statistics
import subprocess
import time

from benchlib import api, cpu_seconds, default_binary, ready_server, rss_mib

IMAGE = "gofer-busybox:local"
HERE = os.path.dirname(os.path.abspath(__file__))



def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]




def register(base, pipeline, tasks):
    config = {"id": pipeline, "name": pipeline, "tasks": tasks}
    api(base, "POST", f"/api/namespaces/default/pipelines/{pipeline}/configs", {"config": config})
    api(base, "POST", f"/api/namespaces/default/pipelines/{pipeline}/configs/1")


def fires(base, count):
    register(base, "fired", [{"id": "work", "image": IMAGE, "command": ["true"]}])
    api(base, "POST", "/api/namespaces/default/pipelines/fired/subscriptions",
        {"extension_id": "webhook", "subscription_id": "hook", "settings": {"path": "/fired"}})
    latencies = []
    for number in range(1, count + 1):
        before = time.time() * 1000
        api(base, "POST", "/api/external/webhook/fired", {"n": number})
        task = f"/api/namespaces/default/pipelines/fired/runs/{number}/tasks/work"
        while True:
            try:
                started = api(base, "GET", task)["task_execution"]["started"]
            except Exception:
                started = 0
            if started:
                latencies.append(started - before)
                break
            time.sleep(0.002)
        run = f"/api/namespaces/default/pipelines/fired/runs/{number}"
        while api(base, "GET", run)["run"]["state"] != "complete":
            time.sleep(0.01)
    floor = []
    for _ in range(count):
        before = time.time()
        container = subprocess.run(["docker", "run", "-d", IMAGE, "true"], check=True,
                                   capture_output=True, text=True).stdout.strip()
        floor.append((time.time() - before) * 1000)
        subprocess.run(["docker", "rm", "-f", container], check=True, capture_output=True)
    print(f"(a) webhook fire → container started, {count} fires one at a time")
    print(f"    gofer: p50 {statistics.median(latencies):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms"
          f"   (`docker run -d`: p50 {statistics.median(floor):.0f} ms, p99 {percentile(floor, 0.99):.0f} ms)")


def idle_subscriptions(base, pid, count, idle):
    register(base, "ticking", [{"id": "noop", "plugin": "debug", "settings": {}}])
    started = time.perf_counter()
    for number in range(count):
        api(base, "POST", "/api/namespaces/default/pipelines/ticking/subscriptions",
            {"extension_id": "interval", "subscription_id": f"every-{number}", "settings": {"every": "60s"}})
    made = time.perf_counter() - started
    # Measured away from the minute's fires: they come 60 s after each subscription was made.
    time.sleep(2)
    before = cpu_seconds(pid)
    time.sleep(idle)
    share = (cpu_seconds(pid) - before) / idle
    print(f"(b) {count} interval subscriptions (every=60s) made in {made:.1f} s"
          f" ({made * 1000 / count:.2f} ms each)")
    print(f"    idle CPU between fires: {share * 100:.2f} % of a core over {idle} s; RSS {rss_mib(pid):.1f} MiB")
    return started + made


def fire_lateness(data_dir, count, last_made):
    """Waits for the first fire of each of `count` interval subscriptions; prints how late the
    server received them."""
    time.sleep(max(0.0, last_made + 60 + 5 - time.perf_counter()))
    database = sqlite3.connect(f"file:{os.path.join(data_dir, 'gofer.db')}?mode=ro", uri=True)
    deadline = time.time() + 60
    while True:
        rows = database.execute(
            "SELECT idempotency_key, received FROM fires WHERE plugin_id = 'interval'").fetchall()
        if len(rows) >= count or time.time() > deadline:
            break
        time.sleep(1)
    late = [received - int(key.rsplit("@", 1)[1]) for key, received in rows]
    print(f"(c) first fires of the {count} subscriptions: {len(rows)} received;"
          f" lateness p50 {statistics.median(late):.0f} ms, p99 {percentile(late, 0.99):.0f} ms,"
          f" max {max(late):.0f} ms")
    runs = database.execute(
        "SELECT fires.idempotency_key, runs.started FROM fires JOIN runs"
        " ON runs.namespace_id = fires.run_namespace AND runs.pipeline_id = fires.run_pipeline"
        " AND runs.run_id = fires.run_id WHERE fires.plugin_id = 'interval'").fetchall()
    lag = [started - int(key.rsplit("@", 1)[1]) for key, started in runs]
    if lag:
        print(f"    their runs: {len(runs)} made; due → run made p50 {statistics.median(lag):.0f} ms,"
              f" p99 {percentile(lag, 0.99):.0f} ms, max {max(lag):.0f} ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer", default=default_binary())
    parser.add_argument("--fires", type=int, default=50)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--idle", type=int, default=20)
    args = parser.parse_args()
    subprocess.run(["bash", os.path.join(HERE, "build-busybox-image.sh")], check=True,
                   stdout=subprocess.DEVNULL)
    with ready_server(args.gofer, "gofer-bench-triggers-") as (base, server):
        print(f"gofer: {args.gofer}")
        fires(base, args.fires)
        last_made = idle_subscriptions(base, server.pid, args.subscriptions, args.idle)
        fire_lateness(server.data_dir, args.subscriptions, last_made)

if __name__ == "__main__":
    main()
