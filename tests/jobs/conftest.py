"""Real clusters on this machine for the job tests: a single-node SLURM (munged, slurmctld,
slurmd with a slurm.conf written for this host) and a Ray head with its dashboard (the Job
Submission API), both on loopback, all files under the test's temporary folders, stopped by pid.

SLURM needs Debian's `slurm-wlm` and `munge` packages and root (SlurmUser=root); without them
the SLURM tests are skipped with that reason. Ray needs `ray[default]` (the dashboard).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from decodiff.harness.allocator import FORWARDED as ALLOCATOR_VARIABLES
from decodiff.harness.mlflow_server import free_port

BIN = Path(sys.executable).parent
DECODIFF = str(BIN / "decodiff")
SLURM_TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo", "squeue")


def _wait_for(pred, timeout: float, what: str, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    tail = log.read_text()[-2000:] if log is not None and log.is_file() else ""
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s\n{tail}")


def _stop_pid(pid: int, grace: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class LocalSlurm:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.conf = base / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)


def _slurm_missing() -> str | None:
    missing = [t for t in SLURM_TOOLS if shutil.which(t) is None]
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the local SLURM runs its daemons as root (SlurmUser=root); not root here"
    return None


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory):
    why = _slurm_missing()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("slurm")
    # munged wants every folder above its socket searchable by all, which pytest's 0700 base
    # folder is not: the socket gets its own folder directly in /tmp (removed afterwards)
    munge = Path(tempfile.mkdtemp(prefix="decodiff-munge-"))
    os.chmod(munge, 0o711)
    for d in ("state", "spool"):
        (base / d).mkdir()
    subprocess.run(["mungekey", "--create", f"--keyfile={munge / 'munge.key'}"], check=True, capture_output=True)
    os.chmod(munge / "munge.key", 0o600)
    subprocess.run(
        [
            "munged",
            f"--socket={munge / 'munge.socket'}",
            f"--key-file={munge / 'munge.key'}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
        ],
        check=True,
        capture_output=True,
    )
    cluster = LocalSlurm(base)
    started: list[Path] = [munge / "munged.pid"]
    try:
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        fields = dict(kv.split("=", 1) for kv in node.split())
        host = fields.pop("NodeName")
        fields["RealMemory"] = str(max(500, int(int(fields["RealMemory"]) * 0.9)))
        (base / "plugstack.conf").write_text("")
        cluster.conf.write_text(
            "\n".join(
                [
                    "ClusterName=decodiff-test",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    "SlurmUser=root",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={munge / 'munge.socket'}",
                    f"StateSaveLocation={base / 'state'}",
                    f"SlurmdSpoolDir={base / 'spool'}",
                    f"SlurmctldPidFile={base / 'slurmctld.pid'}",
                    f"SlurmdPidFile={base / 'slurmd.pid'}",
                    f"SlurmctldLogFile={base / 'slurmctld.log'}",
                    f"SlurmdLogFile={base / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "MpiDefault=none",
                    "MailProg=/bin/true",
                    f"PlugStackConfig={base / 'plugstack.conf'}",
                    "ReturnToService=2",
                    "KillWait=5",
                    "MinJobAge=600",
                    "SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000",
                    f"NodeName={host} NodeAddr=127.0.0.1 "
                    + " ".join(f"{k}={v}" for k, v in fields.items() if k != "UpTime")
                    + " State=UNKNOWN",
                    f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )
        cluster.run("slurmctld", "-c", "-f", str(cluster.conf))
        started.append(base / "slurmctld.pid")
        cluster.run("slurmd", "-f", str(cluster.conf))
        started.append(base / "slurmd.pid")
        _wait_for(
            lambda: cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle",
            30,
            "the local SLURM node",
            base / "slurmd.log",
        )
        yield cluster
    finally:
        # cancel jobs and let the queue drain first: killing slurmd leaves job processes behind
        if (base / "slurmctld.pid").is_file():
            cluster.run("scancel", "--user", "root", check=False)
            end = time.monotonic() + 20
            while time.monotonic() < end and cluster.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.3)
        for pid_file in reversed(started):
            pid = _read_pid(pid_file)
            if pid:
                _stop_pid(pid)
        shutil.rmtree(munge, ignore_errors=True)


class RayHead:
    def __init__(self, proc: subprocess.Popen, address: str, gcs: str, temp_dir: Path, env: dict[str, str]) -> None:
        self.proc, self.address, self.gcs, self.temp_dir, self.env = proc, address, gcs, temp_dir, env


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """`ray start --head --block` on loopback with the dashboard (Job Submission API); its
    session files and HOME in the test's folder; stopped by its process group."""
    import importlib.util

    missing = [m for m in ("ray.dashboard", "aiohttp_cors") if importlib.util.find_spec(m) is None]
    if missing:  # aiohttp_cors: one of ray[default]'s, which the dashboard's server needs
        pytest.skip(f"Ray's dashboard is not installed ({', '.join(missing)} missing): pip install 'ray[default]'")
    base = tmp_path_factory.mktemp("ray")
    # Ray's unix sockets live under the temp dir and must stay short (108 bytes)
    temp_dir = base / "t"  # Ray's unix sockets live under it: keep the path short
    home = base / "home"
    home.mkdir()
    port, dash, client, agent = free_port(), free_port(), free_port(), free_port()
    env = dict(
        {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES},  # what a sweep forwards, it brings
        HOME=str(home),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    log = open(base / "ray-start.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            "--include-dashboard=true",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=base,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        import urllib.request

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"ray start exited {proc.returncode}: {(base / 'ray-start.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        _wait_for(up, 120, "the Ray head's dashboard", base / "ray-start.log")
        yield RayHead(proc, address, f"127.0.0.1:{port}", temp_dir, env)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in its process group
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def shared_work(tmp_path_factory):
    """One working folder for the cluster tests: their runs share the data, VAE and model cache
    (the first tiny bench trains; later ones reuse), and the job index lives there too."""
    work = tmp_path_factory.mktemp("work")
    env = dict(
        os.environ,
        DECODIFF_STATE_DIR=str(work / "state"),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
    )
    return work, env


@pytest.fixture(scope="session")
def decodiff():
    """The console script as a subprocess: decodiff(*args, cwd=, env=, timeout=)."""

    def run(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([DECODIFF, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

    return run
