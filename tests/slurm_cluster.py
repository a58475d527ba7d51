"""A real single-node Slurm on loopback for the tests: Debian's ``slurm-wlm`` and ``munge``.

:class:`LoopbackSlurm` writes a munge key and a ``slurm.conf`` into a fresh folder, starts
``munged``, ``slurmctld`` and ``slurmd`` (bound to 127.0.0.1, free ports, the current user as
SlurmUser), waits until the node is idle, and on :meth:`stop` cancels every job and stops the
daemons it started, by the pids they wrote.

The config also goes to Slurm's default path, ``/etc/slurm/slurm.conf`` (removed on stop), as on
a real site: the executor's job-step plugin (snakemake-executor-plugin-slurm-jobstep 0.6) drops
``SLURM_CONF`` from the environment of the ``srun`` it starts inside each job. The fixture refuses
to run where that file exists already and is not its own.

No accounting database: the SLURM executor plugin is told to poll ``squeue`` (its
``status_command``), which sees finished jobs for ``MinJobAge`` (an hour here). A job's id, state
and exit code stay visible to ``squeue --states=all`` / ``scontrol show job`` for that long, which
is how the tests check that every job ran on Slurm.

``.ci/run`` installs the packages when they are missing; without them :func:`require_slurm`
fails with the command that installs them (never a silent skip).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
OWN = "# written by segdiff's tests/slurm_cluster.py\n"
INSTALL = "apt-get install -y --no-install-recommends slurm-wlm munge"


def require_slurm() -> None:
    """Fail (not skip) when Slurm or munge is not installed."""
    missing = [p for p in DAEMONS.values() if not Path(p).is_file()] + [c for c in CLIENTS if not shutil.which(c)]
    if missing:
        raise RuntimeError(f"Slurm test needs {', '.join(missing)}: install them with `{INSTALL}` (.ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LoopbackSlurm:
    """One node (this machine's cores, 80 % of its memory) and one default partition ``debug``."""

    partition = "debug"

    def __init__(self):
        require_slurm()
        # short path: munge's socket name must fit a sockaddr_un (108 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.started: list[str] = []
        self.setup_s = float("nan")
        self.installed_conf = False

    def _write_config(self) -> None:
        r, user = self.root, getpass.getuser()
        for sub in ("state", "spool", "log"):
            (r / sub).mkdir()
        (r / "munge.key").write_bytes(os.urandom(1024))
        (r / "munge.key").chmod(0o600)
        self.conf.write_text(OWN + f"""\
ClusterName=segdiff-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge.sock
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge=3600
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
KillWait=5
InactiveLimit=0
NodeName=localnode NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs={os.cpu_count()} RealMemory={int(_mem_total_mb() * 0.8)} State=UNKNOWN
PartitionName={self.partition} Nodes=localnode Default=YES MaxTime=INFINITE State=UP
""")

    def _install_default_conf(self) -> None:
        if DEFAULT_CONF.exists() and not DEFAULT_CONF.read_text(errors="replace").startswith(OWN):
            raise RuntimeError(f"{DEFAULT_CONF} exists and is not a test config: run the Slurm tests on a machine "
                               "without a Slurm of its own (CI does)")
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.conf, DEFAULT_CONF)
        self.installed_conf = True

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}\n{self.logs()}")

    def start(self, timeout: float = 60.0) -> LoopbackSlurm:
        tick = time.monotonic()
        self._write_config()
        self._install_default_conf()
        r = self.root
        force = ["--force"] if os.geteuid() == 0 else []  # munged refuses root without it
        self._run(DAEMONS["munged"], *force, f"--key-file={r}/munge.key", f"--socket={r}/munge.sock",
                  f"--pid-file={r}/munged.pid", f"--log-file={r}/log/munged.log", f"--seed-file={r}/munged.seed")
        self.started.append("munged")
        self._run(DAEMONS["slurmctld"], "-f", str(self.conf), "-i")
        self.started.append("slurmctld")
        self._run(DAEMONS["slurmd"], "-f", str(self.conf), "-N", "localnode")
        self.started.append("slurmd")
        while time.monotonic() - tick < timeout:
            proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if proc.stdout.strip() == "idle":
                self.setup_s = time.monotonic() - tick
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the loopback Slurm node did not become idle in {timeout:.0f} s\n{self.logs()}")

    def jobs(self) -> list[dict]:
        """Every job slurmctld still knows (MinJobAge): id, name, state, exit code, comment."""
        fields = ["JobID", "Name", "State", "ExitCode", "Comment"]
        proc = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%j|%T|%Y|%k"], env=self.env,
                              capture_output=True, text=True, check=True)
        rows = [dict(zip(fields, line.split("|", 4))) for line in proc.stdout.splitlines() if line.strip()]
        for row in rows:  # squeue has no exit code column: ask scontrol
            show = subprocess.run(["scontrol", "show", "job", row["JobID"]], env=self.env, capture_output=True, text=True).stdout
            row["ExitCode"] = next((w.split("=", 1)[1] for w in show.split() if w.startswith("ExitCode=")), "")
        return rows

    def logs(self) -> str:
        out = []
        for log in sorted((self.root / "log").glob("*.log")):
            out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started (by pid), newest first."""
        if "slurmctld" in self.started:
            subprocess.run(["scancel", "--user", getpass.getuser()], env=self.env, capture_output=True)
        for name in reversed(self.started):
            pidfile = self.root / f"{name}.pid"
            if not pidfile.is_file():
                continue
            pid = int(pidfile.read_text().split()[0])
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        self.started.clear()
        if self.installed_conf and DEFAULT_CONF.read_text(errors="replace").startswith(OWN):
            DEFAULT_CONF.unlink()
            self.installed_conf = False

    def __enter__(self) -> LoopbackSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
