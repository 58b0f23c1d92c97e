"""What the Python scripts share: running a service binary on a free loopback port until it
is ready, and a cached virtualenv holding pinned tools."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A service binary on 127.0.0.1:<free port>, started with only `env` (plus PATH), ready
    (`/readyz` 200) when the constructor returns; `ready_after` is how long that took. A
    restarted service is given its old `port`, so its clients need not be told."""

    def __init__(self, binary, env, log=subprocess.DEVNULL, port=None, ready_timeout=30):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Metrics on any free port: several services (and a `make run`) may share the machine.
        env = {"PATH": os.environ["PATH"], "LISTEN_ADDR": f"127.0.0.1:{self.port}",
               "METRICS_ADDR": "127.0.0.1:0", "LOG_FORMAT": "json", "RUST_LOG": "warn", **env}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([binary], env=env, stdout=log, stderr=log)
        try:
            self.ready_after = self.wait_ready(ready_timeout)
        except RuntimeError:
            self.proc.kill()  # not left behind, listening or holding database locks
            raise

    def wait_ready(self, timeout=30):
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.002)
        raise RuntimeError(f"{self.url} did not become ready")

    def memory_kib(self):
        """(current, peak) resident set size in KiB."""
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()[0] if value.split() else "0"
        return int(fields.get("VmRSS", 0)), int(fields.get("VmHWM", 0))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def venv(name, *requirements):
    """The python of ~/.cache/invoice-platform/<name> holding `requirements`, created or
    updated only when the pinned requirements changed."""
    path = os.path.expanduser(f"~/.cache/invoice-platform/{name}")
    python = os.path.join(path, "bin", "python")
    stamp = os.path.join(path, ".stamp")
    wanted = " ".join(requirements)
    if not (os.path.exists(stamp) and open(stamp).read() == wanted):
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *requirements], check=True)
        with open(stamp, "w") as f:
            f.write(wanted)
    return python
