"""Several "hosts" on one machine: Linux network namespaces, each with a filesystem view of its own.

The multi-host tests need machines that share no disk: a Celery worker must not find a model that
another worker wrote to *its* disk, the way it could on one machine. Containers would do, but
there is no container engine here; namespaces are what containers are made of, and `ip netns`,
`unshare` and `nsenter` are enough (root needed, as in CI).

Design:

- `Network` makes a Linux bridge on a private /24 (10.231.N.0/24: the first N no address of this
  machine uses, so concurrent runs do not clash), with this machine's end at `.1`: the test
  process ("the real machine") reaches every host directly, the way a laptop reaches a cluster.
  Names carry a run id (`smh-<run>-<host>` for namespaces, `smh<run>br` / `smh<run>v<i>` for
  links: 15 characters at most). A run holds a lock file under /run/savedmodel-multihost for
  its lifetime; at start a Network removes what earlier runs whose lock is free left behind (a
  killed pytest), and never touches a live concurrent run.
- `Host` is one network namespace (its own address on the bridge through a veth pair, `lo` up,
  no route beyond the subnet) plus one MOUNT and one UTS namespace held by an anchor process
  (`sleep infinity`). In that mount namespace, private (no propagation either way), fresh tmpfs
  cover the project's `build/` and `data/`, `/tmp` and `/dev/shm`; `/etc/hosts` is a file of
  the run that names every host, and the hostname is the host's name (so Airflow's task
  instances say which host ran them and the api-server finds a worker's log server by name).
  Every command on a host is `nsenter -t <anchor> -m -n -u`: all processes of a host share one
  view. `/run/netns` is unmounted inside a host, so a host does not keep other namespaces alive.
- What a host sees: the real machine's files (the checkout, the venv: code is shared, like an
  image every node runs), except build/, data/, /tmp and /dev/shm, which are its own and start
  empty. What it writes there nobody else sees, and it does not see theirs or the real ones.
  Shared on purpose: `Network.shared_dir` (test-artifacts/multihost/<run>, git-ignored, not
  covered), for what every node reads, like pipeline files.
- Logs: the harness opens each log file in the root namespace and hands the child its file
  descriptor, so a log under the real /tmp (pytest's tmp dir) works although /tmp is private
  inside hosts.
- `Host.link_down()` sets the host's end of its veth down: its connected route is gone, so its
  connects fail at once (ENETUNREACH), and nothing reaches it; `link_up()` restores it.
- Cleanup, even on error: processes killed (their process groups, then anything else in the
  namespace), namespaces deleted, links removed, the run's dirs removed. `leftovers(run)` says
  what is left; processes are found by the `MULTIHOST_RUN` variable every host process gets.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from include.config import PROJECT_ROOT

PREFIX = "smh"
#: Lock files and hosts files of live runs (the real /run: visible on hosts too, not covered).
STATE_DIR = Path("/run/savedmodel-multihost")
#: Shared, readable by every host: git-ignored and not under a host's tmpfs.
SHARED_ROOT = PROJECT_ROOT / "test-artifacts" / "multihost"
SUBNET_BASE = "10.231"
#: Every process started on a host carries these (how `leftovers` and stale cleanup find them).
RUN_VAR, HOST_VAR = "MULTIHOST_RUN", "MULTIHOST_HOST"
#: Covered by a fresh tmpfs on every host: (path, mode).
#: /tmp first: a checkout under /tmp (a CI clone) is bound back over the host's fresh /tmp before
#: its build/ and data/ are covered.
PRIVATE_DIRS = (
    (Path("/tmp"), "1777"),
    (Path("/dev/shm"), "1777"),
    (PROJECT_ROOT / "build", "0755"),
    (PROJECT_ROOT / "data", "0755"),
)
_NETNS_NAME = re.compile(rf"^{PREFIX}-([0-9a-f]{{4}})-(.+)$")
_LINK_NAME = re.compile(rf"^{PREFIX}([0-9a-f]{{4}})(br|v\d+)$")
_HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

# The anchor: a host's mount and UTS namespaces live as long as this `sleep` does.
_ANCHOR_SCRIPT = r"""
hostname "$1"; hosts=$2; project=$3; shift 3
# Not keeping the bind mounts of other namespaces (other hosts, other runs) alive in this view.
if mountpoint -q /run/netns; then umount -l /run/netns; fi
mount --bind "$hosts" /etc/hosts
keep=""
case "$project" in /tmp/*)  # the checkout lies under /tmp: keep it through the fresh /tmp
    keep=$(mktemp -d /run/smh-project.XXXXXX); mount --bind "$project" "$keep";;
esac
for spec in "$@"; do
    mount -t tmpfs -o "mode=${spec%%:*}" smh-private "${spec#*:}"
    if [ "${spec#*:}" = /tmp ] && [ -n "$keep" ]; then
        mkdir -p "$project"; mount --bind "$keep" "$project"; umount "$keep"; rmdir "$keep"
    fi
done
echo ready
exec sleep infinity
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _netns_names() -> list[str]:
    """Returns the names of the network namespaces `ip netns` knows."""
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def _link_names() -> list[str]:
    return sorted(os.listdir("/sys/class/net"))


def netns_pids(netns: str) -> set[int]:
    """Returns the pids of the live processes in a named network namespace."""
    try:
        inode = os.stat(f"/run/netns/{netns}").st_ino
    except FileNotFoundError:
        return set()
    wanted, found = f"net:[{inode}]", set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/net") == wanted:
                    found.add(int(entry))
    return found


def processes_of_run(run: str) -> dict[int, str]:
    """Returns {pid: command line} of every live process started on a host of run `run`."""
    needle = f"{RUN_VAR}={run}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                found[int(entry)] = command.decode(errors="replace").strip()
    return found


def _kill_and_wait(pids_of, timeout: float = 10) -> None:
    """SIGKILLs what `pids_of()` returns until it returns nothing (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while (pids := pids_of()) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _run_is_live(run: str) -> bool:
    """Whether a live process holds run `run`'s lock (its Network has not exited)."""
    try:
        fd = os.open(STATE_DIR / f"{run}.lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # also releases the lock if we got it
    return False


def _remove_run(run: str) -> None:
    """Removes everything of run `run`: processes, namespaces, links, its state and shared dirs."""
    _kill_and_wait(lambda: set(processes_of_run(run)))
    for netns in _netns_names():
        match = _NETNS_NAME.match(netns)
        if match and match[1] == run:
            _kill_and_wait(lambda netns=netns: netns_pids(netns))
            _ip("netns", "del", netns, check=False)
    for link in _link_names():
        match = _LINK_NAME.match(link)
        if match and match[1] == run:
            _ip("link", "del", link, check=False)
    shutil.rmtree(STATE_DIR / run, ignore_errors=True)
    shutil.rmtree(SHARED_ROOT / run, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (STATE_DIR / f"{run}.lock").unlink()


def _runs_present() -> set[str]:
    """Returns the ids of every run with something on this machine (live or left behind)."""
    runs = {m[1] for m in map(_NETNS_NAME.match, _netns_names()) if m}
    runs |= {m[1] for m in map(_LINK_NAME.match, _link_names()) if m}
    if STATE_DIR.is_dir():
        runs |= {p.stem for p in STATE_DIR.glob("*.lock")}
        runs |= {p.name for p in STATE_DIR.iterdir() if p.is_dir()}
    if SHARED_ROOT.is_dir():
        runs |= {p.name for p in SHARED_ROOT.iterdir() if p.is_dir()}
    return {run for run in runs if re.fullmatch(r"[0-9a-f]{4}", run)}


def remove_stale_runs() -> list[str]:
    """Removes what runs whose Network is gone (a killed pytest) left behind; returns their ids."""
    stale = sorted(run for run in _runs_present() if not _run_is_live(run))
    for run in stale:
        _remove_run(run)
    return stale


def leftovers(run: str) -> dict[str, list]:
    """Returns what of run `run` is still on this machine (all lists empty: nothing)."""
    return {
        "netns": [n for n in _netns_names() if (m := _NETNS_NAME.match(n)) and m[1] == run],
        "links": [n for n in _link_names() if (m := _LINK_NAME.match(n)) and m[1] == run],
        "processes": sorted(processes_of_run(run).items()),
        "dirs": [str(p) for p in (STATE_DIR / run, SHARED_ROOT / run) if p.exists()],
    }


class Host:
    """One host: a network namespace on the run's bridge and a private filesystem view (see module doc).

    Made by `Network.add_host`; closed by the Network.
    """

    def __init__(self, network: Network, name: str, index: int, address: str) -> None:
        self.network, self.name, self.index, self.address = network, name, index, address
        self.netns = f"{PREFIX}-{network.run}-{name}"
        #: This machine's end of the host's veth pair (the host's end is `eth0`).
        self.veth = f"{PREFIX}{network.run}v{index}"
        self.anchor: subprocess.Popen | None = None
        self.processes: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"

    def _create(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _ip("link", "set", self.veth, "master", self.network.bridge, "up")
        prefix = self.network.subnet.prefixlen
        _ip("-n", self.netns, "addr", "add", f"{self.address}/{prefix}", "dev", "eth0")
        _ip("-n", self.netns, "link", "set", "eth0", "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")
        for path, _ in PRIVATE_DIRS:
            path.mkdir(parents=True, exist_ok=True)  # mount points must exist
        specs = [f"{mode}:{path}" for path, mode in PRIVATE_DIRS]
        command = ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "--propagation=private"]
        command += ["sh", "-eu", "-c", _ANCHOR_SCRIPT, "anchor", self.name, str(self.network.hosts_file)]
        command += [str(PROJECT_ROOT)]
        with open(self.log_path("anchor"), "ab") as log:
            self.anchor = subprocess.Popen(
                [*command, *specs],
                env=self._env(None),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self.anchor.stdout is not None
        with self.anchor.stdout:
            ready, _, _ = select.select([self.anchor.stdout], [], [], 30)
            line = self.anchor.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            raise RuntimeError(
                f"host {self.name}: the anchor did not start: {self.log_path('anchor').read_text()[-2000:]}"
            )

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        env = dict(os.environ if env is None else env)
        # /tmp is the host's own: a TMPDIR of the real machine (pytest's, say) does not exist here.
        env.pop("TMPDIR", None)
        env.update({RUN_VAR: self.network.run, HOST_VAR: self.name})
        return env

    def command(self, argv: Sequence[str], cwd: str | os.PathLike[str] = PROJECT_ROOT) -> list[str]:
        """Returns `argv` wrapped to run on this host (its namespaces, working dir `cwd`).

        `env -C` changes dir after entering the mount namespace; nsenter's own --wd would resolve
        the path in the caller's view and so see the real build/ and data/.
        """
        assert self.anchor is not None, f"host {self.name} is closed"
        return [
            *("nsenter", "-t", str(self.anchor.pid), "-m", "-n", "-u", "--"),
            *("env", "-C", str(cwd), *map(str, argv)),
        ]

    def log_path(self, name: str | os.PathLike[str]) -> Path:
        """Returns the log file for `name`: a path as given, a bare name in the network's logs dir."""
        if isinstance(name, os.PathLike) or "/" in name:
            return Path(name)
        return self.network.logs_dir / f"{self.name}.{name}.log"

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] = PROJECT_ROOT,
    ) -> subprocess.Popen:
        """Starts `argv` on this host in a process group of its own; returns its Popen.

        stdout and stderr go to `log` (a path, or a name: `<logs dir>/<host>.<name>.log`; default
        the program's name), opened here in the real view. `env` defaults to this process's.
        """
        path = self.log_path(log if log is not None else Path(argv[0]).name)
        with open(path, "ab") as out:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                self.command(argv, cwd),
                env=self._env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process.log_path = path  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
        check: bool = True,
        cwd: str | os.PathLike[str] = PROJECT_ROOT,
    ) -> subprocess.CompletedProcess:
        """Runs `argv` on this host and returns its result (text output captured)."""
        done = subprocess.run(
            self.command(argv, cwd),
            env=self._env(env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"on {self.name}: {' '.join(map(str, argv))} exited {done.returncode}:\n"
                f"{(done.stdout + done.stderr)[-4000:]}"
            )
        return done

    def link_down(self) -> None:
        """Cuts the host off the network: its end of the veth goes down (connects fail at once)."""
        _ip("-n", self.netns, "link", "set", "eth0", "down")

    def link_up(self) -> None:
        """Puts the host back on the network (its address and route come back with the link)."""
        _ip("-n", self.netns, "link", "set", "eth0", "up")

    def pids(self) -> set[int]:
        """Returns the pids of every live process on this host but the anchor (reaping ours first)."""
        for process in self.processes:
            process.poll()
        anchor = {self.anchor.pid} if self.anchor is not None else set()
        return netns_pids(self.netns) - anchor

    def kill_all(self, grace: float = 5.0) -> None:
        """Stops every process on the host (SIGTERM to each, SIGKILL after `grace` s); keeps the host."""
        if grace > 0:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        _kill_and_wait(self.pids)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        self.processes = [p for p in self.processes if p.poll() is None]
        if self.pids():
            raise RuntimeError(f"host {self.name}: processes survive SIGKILL: {sorted(self.pids())}")

    def close(self, grace: float = 5.0) -> None:
        """Kills every process on the host, its anchor last, and deletes its namespace and links."""
        try:
            if self.anchor is not None:
                self.kill_all(grace)
        finally:
            if self.anchor is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.anchor.pid, signal.SIGKILL)
                self.anchor.wait()
                self.anchor = None
            _kill_and_wait(lambda: netns_pids(self.netns))
            _ip("link", "del", self.veth, check=False)  # the pair: the host's eth0 goes with it
            _ip("netns", "del", self.netns, check=False)


class Network:
    """A private subnet on a bridge with hosts on it; a context manager that removes it all at exit.

    `logs_dir`: where the hosts' logs go (anywhere on the real machine, pytest's tmp dir included).
    """

    def __init__(self, logs_dir: str | os.PathLike[str]) -> None:
        self.logs_dir = Path(logs_dir)
        self.run = ""
        self.hosts: dict[str, Host] = {}
        self._lock_fd: int | None = None

    # Set by start():
    subnet: ipaddress.IPv4Network
    gateway: str  # this machine's address on the bridge
    bridge: str
    hosts_file: Path
    shared_dir: Path

    def start(self) -> Network:
        """Removes stale runs, then makes this run's bridge on a free /24."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with open(STATE_DIR / ".setup.lock", "w") as setup:  # one run sets up at a time
            fcntl.flock(setup, fcntl.LOCK_EX)
            self.stale_removed = remove_stale_runs()
            present = _runs_present()
            self.run = next(r for r in iter(lambda: secrets.token_hex(2), None) if r not in present)
            self._lock_fd = os.open(STATE_DIR / f"{self.run}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self.subnet = _free_subnet()
            self.gateway = str(self.subnet.network_address + 1)
            self.bridge = f"{PREFIX}{self.run}br"
            _ip("link", "add", self.bridge, "type", "bridge")
            # Bridged frames skip iptables (br_netfilter): a host firewall's FORWARD policy does not apply.
            no_filter = ("nf_call_iptables", "0", "nf_call_ip6tables", "0")
            _ip("link", "set", self.bridge, "type", "bridge", *no_filter)
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        (STATE_DIR / self.run).mkdir()
        self.hosts_file = STATE_DIR / self.run / "hosts"
        self.hosts_file.write_text(f"127.0.0.1\tlocalhost\n{self.gateway}\treal-machine\n")
        self.shared_dir = SHARED_ROOT / self.run
        self.shared_dir.mkdir(parents=True)
        return self

    def add_host(self, name: str) -> Host:
        """Makes a host called `name` (its hostname too) at the next address of the subnet."""
        if not _HOST_NAME.match(name) or name in self.hosts or name == "real-machine":
            raise ValueError(f"bad or duplicate host name {name!r}")
        index = len(self.hosts)
        host = Host(self, name, index, str(self.subnet.network_address + 2 + index))
        self.hosts[name] = host
        with open(self.hosts_file, "a") as hosts:  # appended in place: hosts bind-mount this inode
            hosts.write(f"{host.address}\t{name}\n")
        host._create()
        return host

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        """Closes every host, deletes the bridge and the run's dirs, and releases the run."""
        errors = []
        for host in reversed(list(self.hosts.values())):
            try:
                host.close()
            except Exception as err:  # close the others anyway
                errors.append(err)
        if self.run:
            _remove_run(self.run)  # whatever the hosts' close missed, the bridge and the dirs
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if errors:
            raise errors[0]

    def __enter__(self) -> Network:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self.close()


def _free_subnet() -> ipaddress.IPv4Network:
    """Returns the first 10.231.N.0/24 that no address or route of this machine touches."""
    used = []
    for line in _ip("-4", "-o", "addr", "show").stdout.splitlines():
        used.append(ipaddress.ip_interface(line.split()[3]).network)
    for line in _ip("-4", "route", "show").stdout.splitlines():
        dest = line.split()[0]
        if dest != "default":
            used.append(ipaddress.ip_network(dest, strict=False))
    for n in range(256):
        candidate = ipaddress.ip_network(f"{SUBNET_BASE}.{n}.0/24")
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError(f"no free /24 in {SUBNET_BASE}.0.0/16")
