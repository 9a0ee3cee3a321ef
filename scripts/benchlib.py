"""What the benchmark scripts share: a free loopback port, a JSON call to Gofer's API (with the
v0 version header), the binary to measure, a ready server, and a process's CPU time and memory."""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("gofer-api-version", "v0")
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return json.loads(text) if text else None


def default_binary():
    """The release binary `make bench` builds."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/gofer-target"))
    return os.path.join(target, "release", "gofer")


def cpu_seconds(pid):
    """User and system CPU time a process has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    """A process's resident memory (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def ready_server(binary, prefix, **settings):
    """A server on a fresh data directory and a free loopback port, ready (plugins loaded), with
    extra environment `settings`; yields (base URL, process); stopped and removed afterwards."""
    data_dir = tempfile.mkdtemp(prefix=prefix)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, GOFER_SERVER__BIND=f"127.0.0.1:{port}", GOFER_SERVER__DATA_DIR=data_dir,
               GOFER_LOG__LEVEL="warn", **settings)
    # GOFER_BENCH_SERVER_LOG=FILE keeps the server's log (warnings and errors) for a look afterwards.
    log_path = os.environ.get("GOFER_BENCH_SERVER_LOG")
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    server = subprocess.Popen([binary, "service", "start"], env=env,
                              stdout=subprocess.DEVNULL, stderr=log)
    server.data_dir = data_dir
    try:
        deadline = time.time() + 60
        while True:
            try:
                if api(base, "GET", "/api/ready")["ready"]:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                raise SystemExit("the server did not become ready")
            time.sleep(0.05)
        yield base, server
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)
