#!/usr/bin/env python3
"""Benchmark: how costs grow with the work.

  (a) a queue: --queued runs of a one-task pipeline (the built-in `debug` shared task, so the
      engine is out of the picture) at parallelism 2, all queued at once: time per run through
      the queue, and the server's RSS when queued, half-way and at the end (it should stay flat).
  (b) a big database: --runs runs (each with its task execution) and --events events, made by
      copying real rows the server wrote: exec → /api/health, then wrk -t2 -c4 on the first and
      the last page of the runs and of the events (default page size, 100).

Usage: scripts/bench-scale.py [--gofer PATH] [--queued N] [--runs N] [--events N] [--seconds N]
"""
import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time

from benchlib import api, default_binary, free_port

PIPELINE = "/api/namespaces/default/pipelines/scale"



class Server:
    def __init__(self, binary, data_dir):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, GOFER_SERVER__BIND=f"127.0.0.1:{port}", GOFER_SERVER__DATA_DIR=data_dir,
                   GOFER_LOG__LEVEL="warn", GOFER_API__MAX_PAGE_LIMIT="1000")
        self.started = time.perf_counter()
        self.process = subprocess.Popen([binary, "service", "start"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def until(self, path, limit=120.0):
        while True:
            try:
                api(self.base, "GET", path)
                return time.perf_counter() - self.started
            except Exception:
                if time.perf_counter() - self.started > limit:
                    raise SystemExit(f"{path} did not answer within {limit} s")
                time.sleep(0.001)

    def ready(self):
        while True:
            try:
                if api(self.base, "GET", "/api/ready")["ready"]:
                    return
            except Exception:
                pass
            time.sleep(0.02)

    def rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def deploy(server, parallelism):
    config = {"id": "scale", "name": "Scale", "parallelism": parallelism,
              "tasks": [{"id": "noop", "plugin": "debug", "settings": {}}]}
    api(server.base, "POST", f"{PIPELINE}/configs", {"config": config})
    api(server.base, "POST", f"{PIPELINE}/configs/1")


def wait_complete(server, run_id):
    while api(server.base, "GET", f"{PIPELINE}/runs/{run_id}")["run"]["state"] != "complete":
        time.sleep(0.05)


def first_incomplete(server, low, high):
    """The lowest run id in [low, high] not yet complete (runs end in order at this parallelism)."""
    while low < high:
        middle = (low + high) // 2
        if api(server.base, "GET", f"{PIPELINE}/runs/{middle}")["run"]["state"] == "complete":
            low = middle + 1
        else:
            high = middle
    return low


def queue(binary, scratch, count):
    server = Server(binary, os.path.join(scratch, "queue"))
    try:
        server.ready()
        deploy(server, 2)
        api(server.base, "POST", f"{PIPELINE}/runs", {"variables": {}})
        wait_complete(server, 1)
        rss = [server.rss_mib()]
        started = time.perf_counter()
        for _ in range(count):
            api(server.base, "POST", f"{PIPELINE}/runs", {"variables": {}})
        queued = time.perf_counter() - started
        rss.append(server.rss_mib())
        # Drain: the queue's own pace once nothing else is asked of the server.
        last = count + 1
        left_from = first_incomplete(server, 2, last)
        middle = (left_from + last) // 2
        drain_started = time.perf_counter()
        wait_complete(server, middle)
        first_half = time.perf_counter() - drain_started
        rss.append(server.rss_mib())
        wait_complete(server, last)
        second_half = time.perf_counter() - drain_started - first_half
        rss.append(server.rss_mib())
        halves = (max(middle - left_from, 1), max(last - middle, 1))
        print(f"(a) {count} runs queued at once, parallelism 2 (debug shared task)")
        print(f"    queueing: {queued * 1000 / count:.2f} ms per run (runs executing meanwhile)")
        print(f"    draining the {last - left_from + 1} left: {first_half * 1000 / halves[0]:.2f} ms per run"
              f" in the first half, {second_half * 1000 / halves[1]:.2f} ms in the second")
        print("    RSS MiB: before {:.1f}, all queued {:.1f}, half drained {:.1f}, all done {:.1f}".format(*rss))
    finally:
        server.stop()


def clone_rows(db_path, runs, events):
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA foreign_keys = OFF")

    def columns(table):
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]

    run_columns = columns("runs")
    select = ", ".join("n.i" if c == "run_id" else ("NULL" if c == "queued_at" else f"r.{c}") for c in run_columns)
    db.execute(f"""WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                   INSERT INTO runs ({', '.join(run_columns)}) SELECT {select} FROM n, runs r
                   WHERE r.pipeline_id = 'scale' AND r.run_id = 1""", (runs,))
    task_columns = columns("task_executions")
    select = ", ".join("n.i" if c == "run_id" else f"t.{c}" for c in task_columns)
    db.execute(f"""WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                   INSERT INTO task_executions ({', '.join(task_columns)}) SELECT {select}
                   FROM n, task_executions t WHERE t.pipeline_id = 'scale' AND t.run_id = 1""", (runs,))
    have = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    # Unique, UUID-shaped ids (the server's own are UUIDv7s).
    db.execute("""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?),
                        template AS (SELECT kind, emitted FROM events ORDER BY seq DESC LIMIT 1)
                   INSERT INTO events (id, kind, emitted)
                   SELECT printf('ffffffff-0000-7000-8000-%012x', n.i), template.kind,
                          template.emitted + n.i FROM n, template""", (events - have,))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def drive(base, path, seconds):
    output = subprocess.run(
        ["wrk", "-t2", "-c4", f"-d{seconds}s", "--latency", "-H", "gofer-api-version: v0", base + path],
        check=True, capture_output=True, text=True).stdout
    p99 = re.search(r"^\s+99%\s+(\S+)$", output, re.MULTILINE).group(1)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    if "Non-2xx" in output:
        raise SystemExit(f"{path}: error responses\n{output}")
    return rate, p99


def big_database(binary, scratch, runs, events, seconds):
    data_dir = os.path.join(scratch, "big")
    server = Server(binary, data_dir)
    server.ready()
    deploy(server, 0)
    api(server.base, "POST", f"{PIPELINE}/runs", {"variables": {}})
    wait_complete(server, 1)
    server.stop()
    filling = time.perf_counter()
    clone_rows(os.path.join(data_dir, "gofer.db"), runs, events)
    size = os.path.getsize(os.path.join(data_dir, "gofer.db")) / (1 << 20)
    print(f"(b) {runs} runs and {events} events ({size:.0f} MiB database, filled in "
          f"{time.perf_counter() - filling:.0f} s)")
    server = Server(binary, data_dir)
    try:
        print(f"    exec → /api/health 200: {server.until('/api/health') * 1000:.1f} ms")
        server.ready()
        for label, path in [
            ("runs, first page", f"{PIPELINE}/runs"),
            ("runs, last page", f"{PIPELINE}/runs?offset={runs - 100}"),
            ("runs, newest first", f"{PIPELINE}/runs?reverse=true"),
            ("events, first page", "/api/events"),
            ("events, last page", f"/api/events?offset={events - 100}"),
            ("events, newest first", "/api/events?reverse=true"),
        ]:
            rate, p99 = drive(server.base, path, seconds)
            print(f"    GET {label:<22} {rate:>8.0f} req/s   p99 {p99}")
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer", default=default_binary())
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    scratch = tempfile.mkdtemp(prefix="gofer-bench-scale-")
    try:
        print(f"gofer: {args.gofer}")
        queue(args.gofer, scratch, args.queued)
        big_database(args.gofer, scratch, args.runs, args.events, args.seconds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
