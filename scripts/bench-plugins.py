#!/usr/bin/env python3
"""Benchmark the plugin hosts (WebAssembly and gRPC processes) through a real server (release build).

  - start to healthy with a cold plugin cache (the built-ins and two fixtures compiled) and a warm
    one (loaded), with the two example Go plugins (go-ticker, go-echo) launched and handshaken too
  - a shared task's start -> complete inside a run: wasm against gofer:plugin@0.2.0 (debug) and
    @0.1.0 (the misbehave fixture, mode ok) vs gRPC (go-echo) vs a container
  - a 1-task run end to end (`gofer run start --follow`) for each
  - per-call overhead of a trigger call: creating subscriptions to `forger` (wasm, 0.2.0) and
    `legacy-tick` (wasm, 0.1.0), both keeping the subscription in memory only, `go-ticker` (gRPC),
    and `interval` (wasm, 0.2.0, which also writes its schedule to its objects); the API and
    SQLite cost is the same for all
  - 10,000 `interval` subscriptions (every 1h): memory per subscription, idle CPU

Usage: scripts/bench-plugins.py [--gofer PATH] [--rounds N] [--subscriptions N]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from benchlib import free_port, api

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE = "gofer-busybox:local"


class Server:
    def __init__(self, gofer, data, cache, plugins):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOFER_")}
        env.update({"GOFER_LOG__LEVEL": "warn", "GOFER_PLUGINS__CACHE_DIR": cache, "GOFER_PLUGINS__DIR": plugins})
        start = time.perf_counter()
        self.process = subprocess.Popen([gofer, "service", "start", "--bind", f"127.0.0.1:{self.port}", "--data-dir", data],
                                        env=env, stderr=subprocess.DEVNULL)
        while True:
            try:
                api(self.base, "GET", "/api/system/metadata")
                break
            except OSError:
                time.sleep(0.005)
        self.ready_ms = (time.perf_counter() - start) * 1000

    def rss_kib(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

    def cpu_seconds(self):
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.process.terminate()
        self.process.wait()


def deploy(base, pipeline, task):
    config = {"id": pipeline, "name": pipeline, "tasks": [task]}
    version = api(base, "POST", f"/api/namespaces/default/pipelines/{pipeline}/configs", {"config": config})["pipeline"]["config"]["version"]
    api(base, "POST", f"/api/namespaces/default/pipelines/{pipeline}/configs/{version}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    args = parser.parse_args()
    gofer = args.gofer or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/gofer-target")), "release", "gofer")
    subprocess.run(["bash", os.path.join(HERE, "build-busybox-image.sh")], check=True)
    work = tempfile.mkdtemp(prefix="gofer-bench-plugins-")
    cache = os.path.join(work, "cache")
    plugins = os.path.join(work, "plugins")
    subprocess.run(["bash", os.path.join(HERE, "go-plugins.sh"), "build", plugins], check=True, stdout=subprocess.DEVNULL)
    # Fixtures built against gofer:plugin@0.1.0, from the release build's plugin workspace.
    built = os.path.join(os.path.dirname(os.path.dirname(gofer)), "plugins", "wasm32-wasip2", "release")
    for fixture in ("misbehave", "legacy-tick", "forger"):
        shutil.copy(os.path.join(built, f"gofer_plugin_{fixture.replace('-', '_')}.wasm"), os.path.join(plugins, f"{fixture}.wasm"))
    try:
        cold = Server(gofer, os.path.join(work, "cold"), cache, plugins)
        cold.stop()
        server = Server(gofer, os.path.join(work, "data"), cache, plugins)
        print(f"start to healthy (6 wasm built-ins + 3 wasm fixtures + 2 Go plugin processes): cold plugin cache {cold.ready_ms:.0f} ms, warm {server.ready_ms:.0f} ms")
        base = server.base
        deploy(base, "wasm-one", {"id": "only", "plugin": "debug", "depends_on": {}, "variables": {}})
        deploy(base, "wasm01-one", {"id": "only", "plugin": "misbehave", "settings": {"mode": "ok"}, "depends_on": {}, "variables": {}})
        deploy(base, "grpc-one", {"id": "only", "plugin": "go-echo", "depends_on": {}, "variables": {}})
        deploy(base, "box-one", {"id": "only", "image": IMAGE, "depends_on": {}, "variables": {}, "command": ["true"]})
        cli = [gofer, "--api-base-url", base]
        inside = {"wasm-one": [], "wasm01-one": [], "grpc-one": [], "box-one": []}
        wall = {name: [] for name in inside}
        for _ in range(args.rounds):
            for pipeline in inside:
                start = time.perf_counter()
                subprocess.run(cli + ["run", "start", pipeline, "--follow"], check=True, stdout=subprocess.DEVNULL)
                wall[pipeline].append((time.perf_counter() - start) * 1000)
                runs = api(base, "GET", f"/api/namespaces/default/pipelines/{pipeline}/runs?reverse=true&limit=1")["runs"]
                task = api(base, "GET", f"/api/namespaces/default/pipelines/{pipeline}/runs/{runs[0]['run_id']}/tasks/only")["task_execution"]
                inside[pipeline].append(task["ended"] - task["started"])
        m = {name: statistics.median(values) for name, values in inside.items()}
        w = {name: statistics.median(values) for name, values in wall.items()}
        print(f"task start -> complete inside a run (median of {args.rounds}): wasm shared task 0.2.0 {m['wasm-one']:.0f} ms, "
              f"0.1.0 {m['wasm01-one']:.0f} ms, gRPC shared task {m['grpc-one']:.0f} ms, container {m['box-one']:.0f} ms")
        print(f"1-task run, CLI wall time: wasm 0.2.0 {w['wasm-one']:.0f} ms, 0.1.0 {w['wasm01-one']:.0f} ms, "
              f"gRPC {w['grpc-one']:.0f} ms, container {w['box-one']:.0f} ms "
              f"(wasm/container {w['wasm-one'] / w['box-one']:.2f}, gRPC/container {w['grpc-one'] / w['box-one']:.2f})")

        deploy(base, "calls", {"id": "only", "plugin": "debug", "depends_on": {}, "variables": {}})
        per_call = {}
        settings = {"interval": {"every": "1h"}, "forger": {}, "legacy-tick": {"every_ms": "3600000"}, "go-ticker": {"every": "1h"}}
        for plugin, label in (("forger", "wasm"), ("legacy-tick", "wasm01"), ("go-ticker", "gRPC"), ("interval", "interval")):
            times = []
            for index in range(300):
                start = time.perf_counter()
                api(base, "POST", "/api/namespaces/default/pipelines/calls/subscriptions",
                    {"extension_id": plugin, "subscription_id": f"{plugin}-{index}", "settings": settings[plugin]})
                times.append((time.perf_counter() - start) * 1000)
            per_call[label] = statistics.median(times)
        print(f"create a subscription (API + SQLite + one trigger call), median of 300: wasm 0.2.0 {per_call['wasm']:.2f} ms, "
              f"0.1.0 {per_call['wasm01']:.2f} ms, gRPC {per_call['gRPC']:.2f} ms "
              f"(0.2.0 vs 0.1.0 {per_call['wasm'] - per_call['wasm01']:+.2f} ms, gRPC vs wasm 0.2.0 {per_call['gRPC'] - per_call['wasm']:+.2f} ms); "
              f"interval (0.2.0, writes an object) {per_call['interval']:.2f} ms")

        deploy(base, "many", {"id": "only", "plugin": "debug", "depends_on": {}, "variables": {}})
        before = server.rss_kib()
        start = time.perf_counter()
        for index in range(args.subscriptions):
            api(base, "POST", "/api/namespaces/default/pipelines/many/subscriptions",
                {"extension_id": "interval", "subscription_id": f"sub-{index}", "settings": {"every": "1h"}})
        took = time.perf_counter() - start
        time.sleep(1)
        after = server.rss_kib()
        cpu_before = server.cpu_seconds()
        time.sleep(10)
        idle = (server.cpu_seconds() - cpu_before) / 10 * 100
        print(f"{args.subscriptions} interval subscriptions: created in {took:.1f} s "
              f"({took / args.subscriptions * 1000:.2f} ms each), "
              f"+{(after - before) / args.subscriptions:.2f} KiB RSS each, idle CPU {idle:.1f} % of one core")
        server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
