"""A real Spark standalone cluster on 127.0.0.1, started from the installed pyspark.

One master and N workers, each its own JVM (`bin/spark-class ...deploy.master.Master` /
`...deploy.worker.Worker`), as on a real cluster; spark-submit talks to the master over
loopback. Only processes started here are ever stopped, by pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"standalone cluster: {what} not ready after {timeout:.0f} s")


def children(pid: int) -> list[int]:
    """Direct child pids of `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class StandaloneCluster:
    work: Path
    workers: int = 2
    cores: int = 1
    memory: str = "2g"
    master_port: int = 0
    ui_port: int = 0
    pids: list[int] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_LOG_DIR": str(self.work / "logs"), "SPARK_NO_DAEMONIZE": "1"}

    def _start(self, *args: str, log: str) -> int:
        self.work.mkdir(parents=True, exist_ok=True)
        out = (self.work / log).open("wb")
        proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args],
                                stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                cwd=self.work, start_new_session=True)
        self.pids.append(proc.pid)
        return proc.pid

    def master_state(self) -> dict | None:
        """The master UI's JSON, or None while that UI is not up (or not the master's)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/",
                                        timeout=2) as r:
                return json.load(r)
        except (OSError, ValueError):
            return None

    def alive_workers(self) -> int:
        state = self.master_state() or {}
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def start(self) -> StandaloneCluster:
        self.master_port, self.ui_port = free_port(), free_port()
        self._start("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.master_port), "--webui-port", str(self.ui_port),
                    log="master.log")
        # Its UI answering, not only its RPC port: a worker started earlier could take the
        # UI's port before the master binds it.
        _wait(lambda: self.master_state() is not None and _listening(self.master_port),
              "master", 90)
        for i in range(self.workers):
            ui = free_port()
            while ui in (self.master_port, self.ui_port):
                ui = free_port()
            pid = self._start("org.apache.spark.deploy.worker.Worker", self.url,
                              "--host", "127.0.0.1", "--cores", str(self.cores),
                              "--memory", self.memory, "--webui-port", str(ui),
                              "--work-dir", str(self.work / f"worker-{i}"),
                              log=f"worker-{i}.log")
            self.worker_pids.append(pid)
        _wait(lambda: self.alive_workers() == self.workers, "workers", 120)
        return self

    def executor_pids(self) -> list[int]:
        """Executor JVMs our workers launched (CoarseGrainedExecutorBackend children)."""
        return [c for w in self.worker_pids for c in children(w)
                if "CoarseGrainedExecutorBackend" in cmdline(c)]

    def stop(self) -> None:
        """Stop what this object started, by pid: executors, workers, then the master."""
        for pid in self.executor_pids() + list(reversed(self.pids)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 20
        for pid in self.pids:
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG) != (0, 0):
                        break
                except ChildProcessError:
                    break
                time.sleep(0.2)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass

    def __enter__(self) -> StandaloneCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
