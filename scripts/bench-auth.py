#!/usr/bin/env python3
"""What authentication costs per request: the same GET (a namespace's pipelines) on a development
server and on one with authentication on (bearer token: SHA-256 lookup + role check), side by
side, with keep-alive connections; and what filtering a list by a restricted token's roles costs:
`GET /api/namespaces` over 300 namespaces as an administrator (a page straight from SQL) and as a
token that may read 30 of them (every namespace read and checked). Release build.

Usage: scripts/bench-auth.py [--gofer PATH] [--requests N]
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from benchlib import free_port


def start(gofer, data, env_extra):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOFER_")}
    env.update({"GOFER_LOG__LEVEL": "warn", **env_extra})
    process = subprocess.Popen([gofer, "service", "start", "--bind", f"127.0.0.1:{port}", "--data-dir", data],
                               env=env, stderr=subprocess.DEVNULL)
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port)
            connection.request("GET", "/api/system/metadata", headers={"gofer-api-version": "v0"})
            connection.getresponse().read()
            return process, port
        except OSError:
            time.sleep(0.01)


def timed(port, headers, requests, path="/api/namespaces/default/pipelines"):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def call(port, method, path, headers, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request(method, path, body=json.dumps(body) if body is not None else None,
                       headers={**headers, "content-type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    assert response.status < 300, (response.status, data)
    return json.loads(data) if data else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gofer")
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    gofer = args.gofer or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/gofer-target")), "release", "gofer")
    work = tempfile.mkdtemp(prefix="gofer-bench-auth-")
    try:
        dev, dev_port = start(gofer, os.path.join(work, "dev"), {})
        secured, secured_port = start(gofer, os.path.join(work, "secured"), {
            "GOFER_DEVELOPMENT__BYPASS_AUTH": "false",
            "GOFER_SECRETS__ENCRYPTION_KEY": "0123456789abcdef0123456789abcdef",
        })
        connection = http.client.HTTPConnection("127.0.0.1", secured_port)
        connection.request("POST", "/api/tokens/bootstrap", headers={"gofer-api-version": "v0"})
        secret = json.loads(connection.getresponse().read())["secret"]
        headers = {"gofer-api-version": "v0"}
        open_us = timed(dev_port, headers, args.requests)
        auth_us = timed(secured_port, {**headers, "Authorization": f"Bearer {secret}"}, args.requests)
        print(f"GET a namespace's pipelines, median of {args.requests}: development mode {open_us:.0f} us, "
              f"with a token {auth_us:.0f} us (ratio {auth_us / open_us:.2f}, +{auth_us - open_us:.0f} us)")

        admin = {**headers, "Authorization": f"Bearer {secret}"}
        for n in range(300):
            call(secured_port, "POST", "/api/namespaces", admin,
                 {"id": f"team-{n:03d}", "name": f"team {n}", "description": ""})
        call(secured_port, "POST", "/api/roles", admin, {
            "id": "few", "description": "30 of 300 namespaces",
            "permissions": [{"resources": ["namespaces:team-0[0-2][0-9]"], "actions": ["read"]}]})
        few = call(secured_port, "POST", "/api/tokens", admin, {"user": "few", "roles": ["few"], "expires": 0})
        restricted = {**headers, "Authorization": f"Bearer {few['secret']}"}
        listed = call(secured_port, "GET", "/api/namespaces?limit=100", restricted)["namespaces"]
        assert len(listed) == 30, len(listed)
        requests = max(args.requests // 3, 100)
        admin_us = timed(secured_port, admin, requests, "/api/namespaces?limit=100")
        filtered_us = timed(secured_port, restricted, requests, "/api/namespaces?limit=100")
        print(f"GET /api/namespaces?limit=100 of 301, median of {requests}: administrator (100 listed) {admin_us:.0f} us, "
              f"restricted token (30 of 301 readable) {filtered_us:.0f} us (ratio {filtered_us / admin_us:.2f})")
        for process in (dev, secured):
            process.terminate()
            process.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
