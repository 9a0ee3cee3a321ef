#!/usr/bin/env python3
"""Benchmark: many live log followers on one fast task.

A container task prints --rate lines a second (in bursts of a tenth of that every 100 ms) for
--seconds seconds; --followers clients follow its log live (`gofer task logs --follow`, each its
own process and websocket) from before it starts. Every follower must get every line, in order;
prints the server's CPU over the task's life (a share of one core) and its RSS, beside the same
task with no follower.

Usage: scripts/bench-followers.py [--gofer PATH] [--followers N] [--rate N] [--seconds N]
"""
import argparse
import os
import subprocess
import time

from benchlib import api, cpu_seconds, default_binary, ready_server, rss_mib

IMAGE = "gofer-busybox:local"
HERE = os.path.dirname(os.path.abspath(__file__))
PIPELINE = "/api/namespaces/default/pipelines/chatty"





def one_run(args, base, server, run_id, followers):
    """Starts run `run_id` of the chatty pipeline with `followers` following it; returns the
    server's CPU share over the run, its RSS at the end, and how many followers got every line."""
    before = cpu_seconds(server.pid)
    started = time.perf_counter()
    api(base, "POST", f"{PIPELINE}/runs", {"variables": {}})
    env = dict(os.environ, GOFER_API_BASE_URL=base)
    clients = [subprocess.Popen([args.gofer, "task", "logs", "chatty", str(run_id), "talk", "--follow"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(followers)]
    results = [client.communicate(timeout=args.seconds + 120) for client in clients]
    outputs = [out for out, _ in results]
    errors = sorted({err.strip() for _, err in results if err.strip()})
    if errors:
        print(f"    followers said: {errors[:3]}")
    while api(base, "GET", f"{PIPELINE}/runs/{run_id}")["run"]["state"] != "complete":
        time.sleep(0.05)
    share = (cpu_seconds(server.pid) - before) / (time.perf_counter() - started)
    expected = [f"line {n}" for n in range(1, args.rate * args.seconds + 1)]
    got = [[l for l in output.splitlines() if l.startswith("line ")] for output in outputs]
    complete = sum(1 for lines in got if lines == expected)
    if got and complete < len(got):
        worst = min(got, key=len)
        first_wrong = next((i for i, (a, b) in enumerate(zip(worst, expected)) if a != b), len(worst))
        print(f"    a follower got {len(worst)} of {len(expected)} lines; first difference at line {first_wrong + 1}:"
              f" {worst[first_wrong:first_wrong + 2]!r} vs {expected[first_wrong:first_wrong + 2]!r}")
    return share, rss_mib(server.pid), complete


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer", default=default_binary())
    parser.add_argument("--followers", type=int, default=200)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    subprocess.run(["bash", os.path.join(HERE, "build-busybox-image.sh")], check=True, stdout=subprocess.DEVNULL)
    with ready_server(args.gofer, "gofer-bench-followers-") as (base, server):
        burst = args.rate // 10
        script = (f"n=0; while [ $n -lt {args.seconds * 10} ]; do "
                  f"seq $((n * {burst} + 1)) $(((n + 1) * {burst})) | sed 's/^/line /'; "
                  f"usleep 100000; n=$((n + 1)); done")
        config = {"id": "chatty", "name": "Chatty",
                  "tasks": [{"id": "talk", "image": IMAGE, "command": ["sh", "-c", script]}]}
        api(base, "POST", f"{PIPELINE}/configs", {"config": config})
        api(base, "POST", f"{PIPELINE}/configs/1")
        alone = one_run(args, base, server, 1, 0)
        followed = one_run(args, base, server, 2, args.followers)
        print(f"gofer: {args.gofer}; a task printing {args.rate} lines/s for {args.seconds} s")
        print(f"    no follower:    server CPU {alone[0] * 100:.1f} % of a core, RSS {alone[1]:.1f} MiB")
        print(f"    {args.followers} followers: server CPU {followed[0] * 100:.1f} % of a core, RSS {followed[1]:.1f} MiB;"
              f" {followed[2]} of {args.followers} got every line in order")

if __name__ == "__main__":
    main()
