#!/usr/bin/env python3
"""Benchmark: object uploads and downloads on the two object stores, side by side in one run.

Three ways for the same bytes, each --repeat times per size:
  files   a server with objects.engine = "filesystem" (POST / GET a pipeline object);
  s3      a server with objects.engine = "s3", its bucket on moto's S3 server (scripts/moto.sh);
  direct  the same PUT / GET straight to that bucket with boto3 (from moto's virtualenv), no
          Gofer: the floor for `s3`.
Reports medians and the ratio s3 / direct: what Gofer adds on top of the bucket (moto is a
Python server, so absolute S3 figures say more about moto than about S3).

Usage: scripts/bench-objects.py [--gofer PATH] [--repeat N]
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import time

from benchlib import api, default_binary, free_port, ready_server

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = [("64 KiB", 64 << 10), ("1 MiB", 1 << 20), ("32 MiB", 32 << 20)]
OBJECT = "/api/namespaces/default/pipelines/keeper/objects/bench"


def timed(host, port, method, path, body=None, headers=None):
    """One request; its seconds, after the whole answer was read."""
    connection = http.client.HTTPConnection(host, port, timeout=120)
    started = time.perf_counter()
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    answer = response.read()
    taken = time.perf_counter() - started
    connection.close()
    if response.status >= 300:
        raise SystemExit(f"{method} {path}: {response.status} {answer[:200]!r}")
    if method == "GET" and body is None and len(answer) == 0:
        raise SystemExit(f"GET {path}: empty")
    return taken


def through_gofer(base, body, repeat):
    host, port = base.removeprefix("http://").split(":")
    headers = {"gofer-api-version": "v0"}
    puts = [timed(host, int(port), "POST", f"{OBJECT}?force=true", body, headers) for _ in range(repeat)]
    gets = [timed(host, int(port), "GET", OBJECT, None, headers) for _ in range(repeat)]
    return puts, gets


DIRECT = """
import json, os, sys, time
import boto3
port, bucket, size, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench")
body = os.urandom(size)
def timed(call):
    started = time.perf_counter(); call(); return time.perf_counter() - started
puts = [timed(lambda: s3.put_object(Bucket=bucket, Key="direct", Body=body)) for _ in range(repeat)]
gets = [timed(lambda: s3.get_object(Bucket=bucket, Key="direct")["Body"].read()) for _ in range(repeat)]
print(json.dumps([puts, gets]))
"""


def straight_to(python, port, bucket, size, repeat):
    output = subprocess.run([python, "-c", DIRECT, str(port), bucket, str(size), str(repeat)],
                            capture_output=True, text=True, check=True).stdout
    return json.loads(output)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer", default=default_binary())
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    moto = subprocess.run(["bash", os.path.join(HERE, "moto.sh"), "--path"],
                          capture_output=True, text=True, check=True).stdout.strip()
    moto_port = free_port()
    server = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", moto, "-H", "127.0.0.1",
                               "-p", str(moto_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                timed("127.0.0.1", moto_port, "PUT", "/gofer-bench")
                break
            except (OSError, SystemExit):
                if time.time() > deadline:
                    raise SystemExit("moto did not start")
                time.sleep(0.1)
        s3 = dict(GOFER_OBJECTS__ENGINE="s3", GOFER_OBJECTS__S3__BUCKET="gofer-bench",
                  GOFER_OBJECTS__S3__ENDPOINT=f"http://127.0.0.1:{moto_port}",
                  GOFER_OBJECTS__S3__PATH_STYLE="true", GOFER_OBJECTS__S3__ACCESS_KEY_ID="bench",
                  GOFER_OBJECTS__S3__SECRET_ACCESS_KEY="bench")
        config = {"id": "keeper", "name": "keeper",
                  "tasks": [{"id": "t", "image": "gofer-busybox:local", "command": ["true"]}]}
        results = {}
        for name, settings in [("files", {}), ("s3", s3)]:
            with ready_server(args.gofer, f"gofer-bench-objects-{name}-", **settings) as (base, _):
                api(base, "POST", "/api/namespaces/default/pipelines/keeper/configs", {"config": config})
                for label, size in SIZES:
                    results[(name, label)] = through_gofer(base, os.urandom(size), args.repeat)
        for label, size in SIZES:
            results[("direct", label)] = straight_to(os.path.join(os.path.dirname(moto), "python"),
                                                     moto_port, "gofer-bench", size, args.repeat)
    finally:
        server.kill()
    print(f"gofer: {args.gofer}; {args.repeat} uploads then {args.repeat} downloads per size, medians")
    print(f"    {'size':<7} {'':>4} {'files':>9} {'s3':>9} {'direct':>9}   s3 / direct")
    for label, _ in SIZES:
        for index, verb in enumerate(["put", "get"]):
            medians = {name: statistics.median(results[(name, label)][index]) * 1000
                       for name in ["files", "s3", "direct"]}
            print(f"    {label:<7} {verb:>4} {medians['files']:7.1f}ms {medians['s3']:7.1f}ms "
                  f"{medians['direct']:7.1f}ms   {medians['s3'] / medians['direct']:.2f}x")


if __name__ == "__main__":
    main()
