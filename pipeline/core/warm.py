"""A stage's warm start: hand `python -m pipeline.stages.<name>` to the stage host.

The stage host (`aepipe host start`, `pipeline.ops.host`) has imported TensorFlow, Keras, MLflow
and the rest of the stages' third-party modules once. A stage process that finds it up sends it
its command, working directory, environment, `sys.path` and standard streams; a child forked from
the host runs the stage (the pipeline's own modules are imported afresh there, from this
process's `sys.path`), and this process relays Ctrl-C / SIGTERM / SIGHUP to that child and ends
as it ended. Without a host, or with a host that could run the stage differently from a cold
start (other copies of the modules it imported, another virtual environment, other import-time
environment variables), the stage starts cold, as it always did.

Imported by every stage process before anything else: the standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import socket
import struct
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import TypeGuard

from pipeline.core.files import file_digest

HOST_DIR_ENV = "AEPIPE_HOST_DIR"  # where hosts keep their socket and record (default below)
SWITCH_ENV = "AEPIPE_HOST"  # "off": every stage starts cold
SYSTEM_TMPDIR = "AEPIPE_SYSTEM_TMPDIR"  # the temporary directory a stage's own replaced
STAGE_PREFIX = "pipeline.stages."
HEADER = struct.Struct("!Q")  # the request's length, sent with the standard streams
PEER = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid of the process that listens
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SUSPENSION = (signal.SIGTSTP, signal.SIGCONT)  # Ctrl-Z and fg/bg: relayed, and acted on here
START_TIMEOUT_S = 30  # a host forks a stage's child within milliseconds

# Read by Python, TensorFlow, Keras (~/.keras), Matplotlib or the numeric libraries at start-up
# or import, so a host started under other values would run a stage differently from a cold
# start. TF_CONFIG is read when a stage builds its strategy, in the child; the child takes
# PYTHONPATH (as `sys.path`), PYTHONUNBUFFERED and PYTHONDONTWRITEBYTECODE from the stage.
IMPORT_TIME_PREFIXES = (
    "TF_", "XLA_", "KERAS_", "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "LD_", "MPL", "PYTHON", "HOME",
)  # fmt: skip
NOT_AT_IMPORT = {"TF_CONFIG", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
# What a stage process sets before it imports TensorFlow (`core.entry.run_command`).
IMPORT_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def host_dir() -> Path:
    if configured := os.environ.get(HOST_DIR_ENV):
        return Path(configured)
    system_tmp = os.environ.get(SYSTEM_TMPDIR) or tempfile.gettempdir()
    return Path(system_tmp) / f"aepipe-host-{os.getuid()}"


def host_key() -> str:
    """One host per user and Python environment (the interpreter and its site-packages)."""
    where = f"{os.path.realpath(sys.executable)}\n{os.path.realpath(sys.prefix)}"
    return hashlib.sha1(where.encode()).hexdigest()[:12]


def socket_path() -> Path:
    return host_dir() / f"{host_key()}.sock"


def record_path() -> Path:
    return host_dir() / f"{host_key()}.json"


def import_environment(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """The variables of `environ` that count at import, as a stage sees them when it imports."""
    return {
        name: value
        for name, value in {**IMPORT_DEFAULTS, **environ}.items()
        if name.startswith(IMPORT_TIME_PREFIXES) and name not in NOT_AT_IMPORT
    }


def site_stamp() -> float:
    """Changes when a package is installed, upgraded or removed in this environment."""
    stamps = []
    for key in ("purelib", "platlib"):
        with contextlib.suppress(OSError):
            stamps.append(os.stat(sysconfig.get_paths()[key]).st_mtime)
    return max(stamps, default=0.0)


def package_root() -> Path:
    """The directory that holds this copy's `pipeline` package."""
    return Path(__file__).resolve().parents[2]


def workspace_code() -> Path:
    """The directory holding the `pipeline` package that stages started here run: the working
    directory's (DVC runs `python -m` there), else this copy's."""
    here = Path.cwd().resolve()
    return here if (here / "pipeline" / "__init__.py").is_file() else package_root()


RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "pid": int, "identity": str, "started": (int, float), "idle_minutes": (int, float),
    "code": dict, "import_environment": dict, "site_stamp": (int, float), "root": str,
    "limits": dict,
}  # fmt: skip


def well_typed(message: object, fields: dict[str, type | tuple[type, ...]]) -> TypeGuard[dict]:
    """A dict with each of `fields` of its type (a record or a request read from a file or a
    socket)."""
    return isinstance(message, dict) and all(
        isinstance(message.get(key), kind) for key, kind in fields.items()
    )


def read_record() -> dict | None:
    """The host's record in this user's host directory; None if there is none, or it is not
    one a host wrote."""
    try:
        record = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None
    if not well_typed(record, RECORD_FIELDS):
        return None
    values = [*record["code"].items(), *record["import_environment"].items()]
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in values):
        return None
    if not all(
        isinstance(pair, list) and len(pair) == 2 and all(type(n) is int for n in pair)
        for pair in record["limits"].values()
    ):
        return None
    return record


# The limits a stage inherits (`ulimit`): the child takes the stage process's, which it can
# only if the host's hard limits are at least as high.
LIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


def limits() -> dict[str, list[int]]:
    return {name: list(resource.getrlimit(number)) for name, number in LIMITS.items()}


def _above(ours: int, theirs: int) -> bool:
    infinite = resource.RLIM_INFINITY
    return theirs != infinite and (ours == infinite or ours > theirs)


def why_cold(record: dict, root: Path | None = None) -> str | None:
    """Why the host of `record` must not run a stage of the code under `root` (default: this
    copy's) in this process's environment, or None."""
    if record.get("site_stamp") != site_stamp():
        return "packages were installed or removed in this environment since the host started"
    ours, theirs = import_environment(os.environ), record["import_environment"]
    for name in sorted(set(ours) | set(theirs)):
        if ours.get(name) != theirs.get(name):
            return f"{name} is {ours.get(name)!r} here, {theirs.get(name)!r} where the host started"
    for name, (_, hard) in limits().items():
        if name in record["limits"] and _above(hard, record["limits"][name][1]):
            return f"the limit {name} is higher here than where the host started (`ulimit`)"
    root = root or package_root()
    for relative, md5 in record["code"].items():
        try:
            same = file_digest(root / relative) == md5
        except OSError:
            same = False
        if not same:
            return f"{relative} here differs from the copy the host runs"
    return None


def stage_module() -> str | None:
    """`pipeline.stages.<name>` when this process is `python -m pipeline.stages.<name> ...`, as
    DVC runs it (with no interpreter options, which the host would not have)."""
    argv = getattr(sys, "orig_argv", [])
    if len(argv) > 2 and argv[1] == "-m" and argv[2].startswith(STAGE_PREFIX):
        return argv[2]
    return None


def trusted(directory: Path) -> bool:
    """Only this user may have made or changed what `directory` holds: a socket there receives
    the stage's environment and streams."""
    try:
        status = directory.lstat()
    except OSError:
        return False
    return status.st_uid == os.getuid() and not status.st_mode & 0o022 and directory.is_dir()


def run_in_host() -> None:
    """If this process is a stage and a host can run it: run it there and end as it ended (never
    returns). Otherwise return, and the stage starts cold here."""
    module = stage_module()
    if module is None or os.environ.get(SWITCH_ENV) == "off":
        return
    if any(arg.startswith(("/proc/self/fd/", "/dev/fd/")) for arg in sys.argv):
        return  # a descriptor of this process (a multi-worker stage's params): only here
    record = read_record() if trusted(host_dir()) else None
    if record is None:
        return
    stage = module.removeprefix(STAGE_PREFIX)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(10)
        connection.connect(str(socket_path()))
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER.size)
        peer_pid, peer_uid, _ = PEER.unpack(credentials)
    except OSError:
        connection.close()
        return  # no host answers there (it ended, or was killed): a cold start
    if (peer_pid, peer_uid) != (record["pid"], os.getuid()):
        connection.close()
        return  # another program listens there, not the host the record names
    problem = why_cold(record)
    if problem is not None:
        connection.close()
        print(
            f"aepipe {stage}: starting cold, not in the stage host: {problem} "
            "(`aepipe host start` restarts it)",
            file=sys.stderr,
        )
        return
    previous = {signum: signal.getsignal(signum) for signum in (*RELAYED, *SUSPENSION)}
    try:
        _send_request(connection, module)
    except OSError:
        connection.close()
        return
    kind, value = _relay(connection)
    if kind == "cold":  # the host ended before it started anything: nothing ran
        connection.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        return
    _end_as(stage, kind, value)


def _send_request(connection: socket.socket, module: str) -> None:
    request = json.dumps(
        {
            "module": module,
            "args": sys.argv[1:],
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "path": sys.path,
            "umask": _umask(),
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "cpus": sorted(os.sched_getaffinity(0)),
            "stage_pid": os.getpid(),
            "limits": limits(),
        }
    ).encode()
    socket.send_fds(connection, [HEADER.pack(len(request))], [0, 1, 2])
    connection.sendall(request)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _GaveUp(Exception):
    """Ctrl-C, SIGTERM or SIGHUP before the host started the stage's child."""


def _relay(connection: socket.socket) -> tuple[str, int]:
    """Relay signals to the stage's child until the host says how it ended: ("exit", status) or
    ("signal", number); ("lost", 0) if the host ended while the child ran, ("cold", 0) if it
    ended before it started one (or something else answered), ("interrupted", signal) if a
    signal came before the child started."""
    started = False

    def forward(signum: int, frame: object) -> None:
        if not started and signum in RELAYED:
            raise _GaveUp(signum)  # a cold stage would end here and now
        with contextlib.suppress(OSError):
            connection.sendall(f"signal {signum}\n".encode())

    def suspend(signum: int, frame: object) -> None:  # Ctrl-Z: the child stops, then this
        forward(signum, frame)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)

    def resume(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTSTP, suspend)
        forward(signum, frame)

    for signum in RELAYED:
        signal.signal(signum, forward)
    signal.signal(signal.SIGTSTP, suspend)
    signal.signal(signal.SIGCONT, resume)
    buffered = b""
    connection.settimeout(START_TIMEOUT_S)  # a host that is stopped or not one: never hang
    try:
        while True:
            try:
                chunk = connection.recv(4096)
            except TimeoutError:
                return ("silent", 0) if not started else ("lost", 0)
            except OSError:  # reset: the host closed without taking it, or ended
                chunk = b""
            if not chunk:
                break
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                kind, _, value = line.decode(errors="replace").partition(" ")
                if kind == "started" and not started and value.isdigit():
                    started = True
                    connection.settimeout(None)
                elif started and _ending(kind, value):
                    return kind, int(value)
                else:
                    return ("lost", 0) if started else ("cold", 0)  # not a stage host speaking
    except _GaveUp as gave_up:
        connection.close()  # the host never starts a stage whose process hung up
        return "interrupted", gave_up.args[0]
    return ("lost", 0) if started else ("cold", 0)


def _ending(kind: str, value: str) -> bool:
    """A well-formed "exit <status>" or "signal <number>" from the host."""
    if not value.isdigit():
        return False
    return (kind == "exit" and int(value) < 256) or (kind == "signal" and 0 < int(value) < 65)


def _end_as(stage: str, kind: str, value: int) -> None:
    if kind == "silent":
        print(
            f"aepipe {stage}: error: the stage host at {socket_path()} took no stage in "
            f"{START_TIMEOUT_S} s (stopped? `aepipe host stop`, or {SWITCH_ENV}=off to start "
            "stages cold)",
            file=sys.stderr,
        )
        sys.exit(2)
    if kind == "lost":
        print(
            f"aepipe {stage}: error: the stage host ended while it ran this stage; nothing of "
            "this run counts (`aepipe host status`)",
            file=sys.stderr,
        )
        sys.exit(2)
    if kind == "interrupted":
        print(f"aepipe {stage}: interrupted", file=sys.stderr)
        sys.exit(130)
    if kind == "signal":  # end by the same signal, as the stage did
        with contextlib.suppress(OSError, ValueError):  # SIGKILL, SIGSTOP: no handler to reset
            signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
        sys.exit(128 + value)  # a signal that did not end this process
    sys.exit(value)
