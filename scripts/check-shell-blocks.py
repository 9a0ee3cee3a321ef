#!/usr/bin/env python3
"""Runs every shell block of the README and the getting-started page, in order, the way a new
user would, so the first commands anyone types cannot rot.

- `make run` is started in the background as the page says (it keeps the server in the
  foreground), on a free port and a fresh data home; the checker waits until its first run has
  ended, then runs the blocks that follow against that server.
- `make test` is what CI is running when it runs this check, so that line is not run again.
- Every other line runs as written, each block in `bash -euo pipefail` from the repository root,
  with `gofer` on PATH (the build `make run` made), a fresh home folder whose
  `~/.local/share/gofer` is the server's data, and no CARGO_TARGET_DIR (a project the page makes
  builds in its own `target/`, as it would for a reader). A block that fails or takes over 5
  minutes fails the check, printed with its output.
- What a page says a block prints is checked too: each `<!-- expect: TEXT -->` comment right
  after a block (invisible on the page) names text its output must contain.

Usage: scripts/check-shell-blocks.py [FILE...]   (default: README.md docs/getting-started.md)
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["README.md", "docs/getting-started.md"]
BLOCK = re.compile(r"^```(?:sh|bash|shell)\n(.*?)^```\n((?:\s*<!--\s*expect:.*?-->)*)", re.M | re.S)
EXPECT = re.compile(r"<!--\s*expect:\s*(.*?)\s*-->", re.S)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(base, path):
    request = urllib.request.Request(base + path, headers={"gofer-api-version": "v0"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def wait_for_first_run(base, server, deadline):
    """Until `make run`'s run of hello has ended."""
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"`make run` exited with {server.returncode} before its run ended")
        try:
            if api(base, "/api/namespaces/default/pipelines/hello/runs/1")["run"]["state"] == "complete":
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit("`make run` did not finish its first run in time")


def main():
    files = sys.argv[1:] or FILES
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = tempfile.mkdtemp(prefix="gofer-shell-blocks-")
    real_home = os.path.expanduser("~")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(real_home, ".cache/gofer-target"))
    # `make run` keeps the real home (its caches), with the fresh data home.
    server_env = dict(os.environ, XDG_DATA_HOME=os.path.join(home, ".local/share"), CARGO_TARGET_DIR=target,
                      GOFER_SERVER__BIND=f"127.0.0.1:{port}", GOFER_API_BASE_URL=base,
                      PATH=os.path.join(target, "debug") + os.pathsep + os.environ["PATH"])
    server_env = {key: value for key, value in server_env.items()
                  if not key.startswith("GOFER_") or key in ("GOFER_SERVER__BIND", "GOFER_API_BASE_URL")}
    # The blocks run as a reader would, in the fresh home, with the real toolchains.
    env = dict(server_env, HOME=home,
               CARGO_HOME=os.environ.get("CARGO_HOME", os.path.join(real_home, ".cargo")),
               RUSTUP_HOME=os.environ.get("RUSTUP_HOME", os.path.join(real_home, ".rustup")))
    for key in ("CARGO_TARGET_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        env.pop(key, None)
    server = None
    checked = 0
    claims = 0
    try:
        for name in files:
            text = open(os.path.join(ROOT, name), encoding="utf-8").read()
            for block, comments in BLOCK.findall(text):
                expected = EXPECT.findall(comments)
                lines = []
                for line in block.splitlines():
                    command = line.split("#", 1)[0].strip()
                    if command == "make test":
                        continue
                    if command == "make run":
                        if server is None:
                            server = subprocess.Popen(["make", "run"], cwd=ROOT, env=server_env,
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                      start_new_session=True)
                            wait_for_first_run(base, server, time.time() + 600)
                        continue
                    lines.append(line)
                script = "\n".join(lines).strip()
                if not script:
                    continue
                try:
                    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env,
                                            capture_output=True, text=True, timeout=300)
                except subprocess.TimeoutExpired:
                    raise SystemExit(f"{name}: this block took over 5 minutes:\n{script}")
                output = result.stdout + result.stderr
                if result.returncode != 0:
                    raise SystemExit(f"{name}: this block failed ({result.returncode}):\n{script}\n"
                                     f"--- output ---\n{output}")
                for text_expected in expected:
                    if text_expected not in output:
                        raise SystemExit(f"{name}: the page says this block prints '{text_expected}', "
                                         f"but it did not:\n{script}\n--- output ---\n{output}")
                    claims += 1
                checked += 1
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
    print(f"shell blocks: {checked} blocks of {', '.join(files)} ran green against a fresh `make run`, "
          f"with the {claims} outputs the pages claim")


if __name__ == "__main__":
    main()
