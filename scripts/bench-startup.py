#!/usr/bin/env python3
"""Benchmark: how fast a server starts, and what it holds in memory when idle.

  (a) exec → first 200 from GET /api/health, on a fresh data directory
  (b) the same on an existing data directory holding --runs ended runs (filled once, by runs of
      the built-in `debug` shared task, so no container is needed)
  (c) exec → GET /api/ready answering 200 (every built-in plugin loaded) on a fresh data directory
  (d) idle RSS two seconds after ready, every built-in plugin loaded, fresh data directory (the
      built-ins were just compiled); (e) the same on the existing one (compiled code cached)

/api/health is polled every millisecond from the moment the process is started. Prints the
median and the worst of --rounds starts of each.

Usage: scripts/bench-startup.py [--gofer PATH] [--rounds N] [--runs N]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from benchlib import api, default_binary, free_port

HERE = os.path.dirname(os.path.abspath(__file__))



def status(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


class Server:
    def __init__(self, binary, data_dir):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, GOFER_SERVER__BIND=f"127.0.0.1:{self.port}",
                   GOFER_SERVER__DATA_DIR=data_dir, GOFER_LOG__LEVEL="warn")
        self.started = time.perf_counter()
        self.process = subprocess.Popen([binary, "service", "start"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def until(self, path, want=200, limit=30.0):
        """Seconds from exec until `path` answers `want`."""
        url = self.base + path
        while True:
            if status(url) == want:
                return time.perf_counter() - self.started
            if time.perf_counter() - self.started > limit:
                raise SystemExit(f"{path} did not answer {want} within {limit} s")
            time.sleep(0.001)

    def rss_kib(self):
        """VmRSS, RssAnon (the process's own memory) and RssFile (mapped file pages: mostly the
        executable's, shared with the page cache), in KiB."""
        sizes = {}
        with open(f"/proc/{self.process.pid}/status") as status_file:
            for line in status_file:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    sizes[key] = int(value.split()[0])
        return sizes

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def fill(binary, data_dir, runs):
    server = Server(binary, data_dir)
    server.until("/api/ready")
    pipeline = {"id": "filler", "name": "Filler",
                "tasks": [{"id": "noop", "plugin": "debug", "settings": {}}]}
    api(server.base, "POST", "/api/namespaces/default/pipelines/filler/configs", {"config": pipeline})
    api(server.base, "POST", "/api/namespaces/default/pipelines/filler/configs/1")
    for _ in range(runs):
        api(server.base, "POST", "/api/namespaces/default/pipelines/filler/runs", {"variables": {}})
    last = f"/api/namespaces/default/pipelines/filler/runs/{runs}"
    while api(server.base, "GET", last)["run"]["state"] != "complete":
        time.sleep(0.5)
    server.stop()


def summary(label, seconds):
    ms = sorted(s * 1000 for s in seconds)
    print(f"{label:<58} median {statistics.median(ms):7.1f} ms   worst {ms[-1]:7.1f} ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer", default=default_binary())
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="gofer-bench-startup-")
    try:
        fresh_health, fresh_ready, rss = [], [], []
        for round_number in range(args.rounds):
            data_dir = os.path.join(scratch, f"fresh-{round_number}")
            server = Server(args.gofer, data_dir)
            fresh_health.append(server.until("/api/health"))
            fresh_ready.append(server.until("/api/ready"))
            if round_number == 0:
                time.sleep(2)
                rss.append(server.rss_kib())
            server.stop()
        existing = os.path.join(scratch, "existing")
        fill(args.gofer, existing, args.runs)
        existing_health = []
        for round_number in range(args.rounds):
            server = Server(args.gofer, existing)
            existing_health.append(server.until("/api/health"))
            server.until("/api/ready")
            if round_number == 0:
                time.sleep(2)
                rss.append(server.rss_kib())
            server.stop()
        print(f"gofer: {args.gofer}; {args.rounds} starts each")
        summary("(a) exec → /api/health 200, fresh data dir", fresh_health)
        summary(f"(b) exec → /api/health 200, data dir with {args.runs} runs", existing_health)
        summary("(c) exec → /api/ready 200 (built-ins loaded), fresh data dir", fresh_ready)
        sizes = rss[0]
        print(f"{'(d) idle RSS, every built-in loaded (fresh data dir)':<58} {sizes['VmRSS'] / 1024:7.1f} MiB"
              f"   = own (anon) {sizes['RssAnon'] / 1024:.1f} MiB + mapped files {sizes['RssFile'] / 1024:.1f} MiB")
        sizes = rss[1]
        print(f"{'(e) idle RSS, existing data dir (compiled plugins cached)':<58} {sizes['VmRSS'] / 1024:7.1f} MiB"
              f"   = own (anon) {sizes['RssAnon'] / 1024:.1f} MiB + mapped files {sizes['RssFile'] / 1024:.1f} MiB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
