"""`aepipe host start|stop|status`: the stage host, which pays the stages' imports once.

The host is a process that has imported TensorFlow, Keras, MLflow and the other third-party
modules the stages use, and nothing of the pipeline but itself. A stage process that finds it
(`core.warm`) sends it its command; the host forks a child that takes the stage process's
standard streams, working directory, environment and `sys.path`, imports the pipeline's modules
afresh from there and runs the stage. So the code that runs is the workspace's, whatever
repository or queued experiment the stage belongs to; only the host's own modules are fixed when
it starts, and a stage whose copy of them (or whose packages, or import-time environment)
differs starts cold instead, saying why.

The child dies with the host (a killed host fails its running stages, which say so in one line);
a stage process killed outright takes its child with it. The host serves one user's stages of
one Python environment, through a socket only that user can open; it ends after `--idle`
minutes without a stage, or at `aepipe host stop` once its running stages have ended.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import io
import json
import math
import os
import resource
import runpy
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

import psutil

from pipeline.core import processes, warm
from pipeline.core.errors import PipelineError
from pipeline.core.files import file_digest, write_json_atomic

# What the stages import that costs time: TensorFlow and Keras (training, evaluation), MLflow
# (registry), scikit-learn, SciPy, scikit-image and pandas (baselines, probes, comparisons).
PRELOADED = (
    "numpy",
    "yaml",
    "pydantic",
    "tensorflow",
    "keras",
    "mlflow",
    "mlflow.tracking",
    "sklearn.decomposition",
    "sklearn.linear_model",
    "scipy.ndimage",
    "skimage.restoration",
    "pandas",
    "matplotlib.pyplot",
)
READY_TIMEOUT_S = 120
MIN_IDLE_MINUTES = 0.05
MAX_IDLE_MINUTES = 7 * 24 * 60
POLL_S = 0.2
REQUEST_TIMEOUT_S = 2  # a stage process sends its request as soon as it connects


@dataclass
class Job:
    """A stage to run in this (forked) process."""

    request: dict
    streams: list[int]
    go: int  # the host writes a byte here once the stage process knows the child started

    def run(self) -> NoReturn:
        """Become the stage process the request describes, run the stage as `python -m` would,
        and end with its exit status."""
        request = self.request
        if os.read(self.go, 1) != b"1":  # the stage process is gone: never run for nobody
            os._exit(1)
        os.close(self.go)
        os.setsid()  # not in the host's process group: only the stage process signals it
        for target, descriptor in enumerate(self.streams):
            os.dup2(descriptor, target)
            os.close(descriptor)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        with contextlib.suppress(OSError):  # a stage's own lower priority, and its cores
            os.setpriority(os.PRIO_PROCESS, 0, request["nice"])
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, request["cpus"])
        for name, (soft, hard) in request["limits"].items():
            if name in warm.LIMITS:
                with contextlib.suppress(OSError, ValueError):
                    resource.setrlimit(warm.LIMITS[name], (soft, hard))
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[processes.STAGE_PID_ENV] = str(request["stage_pid"])
        tempfile.tempdir = None
        for signum in (*warm.RELAYED, *warm.SUSPENSION, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for name in [name for name in sys.modules if name.split(".")[0] == "pipeline"]:
            del sys.modules[name]
        sys.path[:] = request["path"]
        sys.dont_write_bytecode = bool(request["env"].get("PYTHONDONTWRITEBYTECODE"))
        stage_file = Path(request["cwd"], *request["module"].split(".")).with_suffix(".py")
        sys.argv[:] = [str(stage_file), *request["args"]]  # runpy sets the file it finds
        unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))
        sys.stdin = _text_stream(0, "r", unbuffered)
        sys.stdout = _text_stream(1, "w", unbuffered)
        sys.stderr = _text_stream(2, "w", True)
        try:
            # Signals held since the fork arrive now, with the stage's own handling in place.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as exc:
            status = _exit_status(exc.code)
        except KeyboardInterrupt:  # before the stage's own handling: as `core.entry` ends
            print(f"aepipe {stage_file.stem}: interrupted", file=sys.stderr)
            status = 130
        except BaseException:
            sys.excepthook(*sys.exc_info())
            status = 1
        _end(status)


HELD = {*warm.RELAYED, *warm.SUSPENSION}  # blocked from the fork until the stage runs


def _exit_status(code: object) -> int:
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _end(status: int) -> NoReturn:
    """End as the interpreter ends a script (non-daemon threads joined, atexit handlers run,
    streams flushed), without tearing down the thousands of modules the host imported: that
    alone would cost a light stage about a second."""
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except Exception as exc:  # as Python does when stdout cannot take the last writes
        with contextlib.suppress(Exception):
            print(f"Exception ignored flushing sys.stdout: {exc!r}", file=sys.stderr)
        status = status or 120
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(status)


def _text_stream(descriptor: int, mode: str, unbuffered: bool) -> io.TextIOWrapper:
    raw = io.FileIO(descriptor, mode, closefd=False)
    tty = raw.isatty()
    binary = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    return io.TextIOWrapper(
        binary,
        encoding=sys.getdefaultencoding() if tty else None,
        errors="backslashreplace" if descriptor == 2 else None,
        line_buffering=tty,
        write_through=unbuffered and mode == "w",
    )


PRELOAD_ENV = "AEPIPE_HOST_PRELOAD"  # comma-separated modules instead of PRELOADED (tests)


def preload() -> None:
    for name, value in warm.IMPORT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    chosen = os.environ.get(PRELOAD_ENV)
    for module in chosen.split(",") if chosen is not None else PRELOADED:
        if module:
            importlib.import_module(module)


def code_manifest() -> dict[str, str]:
    """The pipeline's files this host has imported, by path under the package root, and their
    md5: a stage whose copies differ does not run here."""
    root = warm.package_root()
    manifest = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if (name == "__main__" or name.split(".")[0] == "pipeline") and file:
            path = Path(file).resolve()
            manifest[str(path.relative_to(root))] = file_digest(path)
    return manifest


MAX_REQUEST_BYTES = 16 * 2**20
REQUEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "module": str, "args": list, "cwd": str, "env": dict, "path": list, "umask": int,
    "nice": int, "cpus": list, "stage_pid": int, "limits": dict,
}  # fmt: skip


def _hung_up(connection: socket.socket) -> bool:
    """Whether the stage process closed its end (it ended, or gave up waiting)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:  # reset
        return True


def _well_formed(request: object) -> bool:
    return warm.well_typed(request, REQUEST_FIELDS) and request["module"].startswith(
        warm.STAGE_PREFIX
    )


def _command(request: dict) -> str:
    return f"{' '.join([request['module'], *request['args']])} in {request['cwd']}"


class Host:
    """The serving loop: one forked child per stage, its exit status back to its stage process."""

    def __init__(self, listener: socket.socket, idle_s: float, lock: IO, leave: Callable[[], None]):
        self.listener = listener
        self.lock = lock  # held while this host takes stages: no second host meanwhile
        self.leave = leave  # removes the socket and the record
        self.idle_s = idle_s
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.children: dict[int, socket.socket] = {}  # child pid -> its stage process
        self.draining = False
        self.last_busy = time.monotonic()

    def serve(self) -> Job | None:
        """Serve until idle or asked to stop (None); in a forked child, the Job it is to run."""
        while not self._done():
            if self.draining and self.listener.fileno() != -1:
                self.selector.unregister(self.listener)
                self.listener.close()  # stages that knock now start cold
                self.leave()
                self.lock.close()  # a new host may start while this one waits for its stages
            for key, _ in self.selector.select(POLL_S):
                if key.fileobj is self.listener:
                    if self.draining:  # asked to stop meanwhile: waiting stages start cold
                        continue
                    job = self._accept()
                    if job is not None:
                        return job
                else:
                    self._from_stage(key.fileobj, key.data)  # type: ignore[arg-type]
            self._reap()
        return None

    def drain(self, signum: int, frame: object) -> None:
        self.draining = True

    def _done(self) -> bool:
        if self.children:
            self.last_busy = time.monotonic()
            return False
        return self.draining or time.monotonic() - self.last_busy > self.idle_s

    def _accept(self) -> Job | None:
        connection, _ = self.listener.accept()
        streams: list[int] = []
        try:
            connection.settimeout(REQUEST_TIMEOUT_S)
            header, streams, _, _ = socket.recv_fds(connection, warm.HEADER.size, 3)
            if not header:  # it looked, and starts cold (another host's code, say)
                connection.close()
                return None
            (length,) = warm.HEADER.unpack(header)
            body = b""
            while len(body) < min(length, MAX_REQUEST_BYTES):
                chunk = connection.recv(length - len(body))
                if not chunk:
                    raise OSError("the stage process went away")
                body += chunk
            request = json.loads(body)
            if len(streams) != 3 or not _well_formed(request):
                raise ValueError("not a stage request")
            if _hung_up(connection):
                raise OSError("the stage process went away (it gave up waiting)")
            wait, go = os.pipe()
            host = os.getpid()
            signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
            try:
                pid = os.fork()
            finally:
                if os.getpid() == host:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
        except (OSError, ValueError, struct.error) as exc:  # nothing started: it starts cold
            print(f"{time.strftime('%H:%M:%S')} refused a request: {exc}", flush=True)
            for descriptor in streams:
                os.close(descriptor)
            connection.close()
            return None
        if pid == 0:
            processes.die_with_parent(host)
            os.close(go)
            self.selector.close()
            self.listener.close()
            self.lock.close()
            for other in [connection, *self.children.values()]:
                other.close()
            return Job(request, streams, wait)
        os.close(wait)
        for descriptor in streams:
            os.close(descriptor)
        print(f"{time.strftime('%H:%M:%S')} pid {pid}: {_command(request)}", flush=True)
        self.children[pid] = connection
        try:
            connection.sendall(f"started {pid}\n".encode())
            os.write(go, b"1")
        except OSError:  # the stage process is gone: its child never runs
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.close(go)
        self.selector.register(connection, selectors.EVENT_READ, pid)
        return None

    def _from_stage(self, connection: socket.socket, child: int) -> None:
        try:
            data = connection.recv(4096)
        except OSError:
            data = b""
        if not data:  # the stage process is gone: so is its stage, as if it had been killed
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
            self.selector.unregister(connection)
            return
        for line in data.decode(errors="replace").splitlines():
            kind, _, value = line.partition(" ")
            if kind == "signal" and value.isdigit() and int(value) in HELD:
                # The child leads a session of its own: a stop signal would not stop it.
                signum = signal.SIGSTOP if int(value) == signal.SIGTSTP else int(value)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signum)

    def _reap(self) -> None:
        for pid in list(self.children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
            connection = self.children.pop(pid)
            if os.WIFSIGNALED(status):
                outcome = f"signal {os.WTERMSIG(status)}"
            else:
                outcome = f"exit {os.WEXITSTATUS(status)}"
            with contextlib.suppress(OSError):
                connection.sendall(f"{outcome}\n".encode())
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(connection)
            connection.close()


def serve(idle_s: float) -> Job | None:
    """The host process: preload, listen, record itself, serve; in a child, the stage to run."""
    environment = warm.import_environment(os.environ)
    directory = private_directory()
    lock = open(directory / f"{warm.host_key()}.lock", "a")  # noqa: SIM115 (held while serving)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise PipelineError("another stage host is up for this environment") from None
    preload()
    path = warm.socket_path()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # `start` made sure no host answers there
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    inode = path.stat().st_ino
    identity = processes.process_identity(psutil.Process())
    host = Host(listener, idle_s, lock, lambda: _remove_if_ours(path, inode, identity))
    signal.signal(signal.SIGTERM, host.drain)
    signal.signal(signal.SIGINT, host.drain)
    record = {
        "pid": os.getpid(),
        "identity": identity,
        "started": time.time(),
        "idle_minutes": idle_s / 60,
        "code": code_manifest(),
        "import_environment": environment,
        "site_stamp": warm.site_stamp(),
        "root": str(warm.package_root()),
        "limits": warm.limits(),
    }
    write_json_atomic(warm.record_path(), record)
    try:
        job = host.serve()
    finally:
        if os.getpid() == record["pid"]:
            host.leave()
    return job


def private_directory() -> Path:
    """The directory of this user's hosts, made if needed, refused if others could write it."""
    directory = warm.host_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not warm.trusted(directory):
        raise PipelineError(
            f"{directory}: not a directory that only this user can write; remove it, or set "
            f"{warm.HOST_DIR_ENV} to one that is"
        )
    return directory


def _remove_if_ours(path: Path, inode: int, identity: str) -> None:
    """Remove the socket and record, unless a newer host has replaced them."""
    with contextlib.suppress(OSError):
        if path.stat().st_ino == inode:
            path.unlink()
    _remove_record_of(identity)


def _remove_record_of(identity: str) -> None:
    """Remove the record if it still names the host of `identity`."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads(warm.record_path().read_text()).get("identity") == identity:
            warm.record_path().unlink()


def running_host() -> tuple[dict, psutil.Process] | None:
    """The host this environment's record names, if that very process still runs. The record
    and socket of a host that is gone are removed (they would only mislead)."""
    record = warm.read_record() if warm.trusted(warm.host_dir()) else None
    if record is None:
        return None
    try:
        process = psutil.Process(record["pid"])
        same = processes.process_identity(process) == record["identity"]
        if same and "pipeline.ops.host" in " ".join(process.cmdline()):
            return record, process
    except (psutil.Error, ValueError, OverflowError):
        pass
    if processes.process_gone(record["identity"]):
        _remove_stale(record["identity"])
    return None


def _remove_stale(identity: str) -> None:
    _remove_record_of(identity)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(warm.socket_path()))
    except ConnectionRefusedError:  # nobody listens there any more
        with contextlib.suppress(OSError):
            warm.socket_path().unlink()
    except OSError:
        pass
    finally:
        probe.close()


def start(idle_minutes: float) -> str:
    """Start a host for this environment and this copy of the code (replacing one that serves
    other code); the line to print."""
    if not (math.isfinite(idle_minutes) and MIN_IDLE_MINUTES <= idle_minutes <= MAX_IDLE_MINUTES):
        raise PipelineError(
            f"--idle {idle_minutes:g}: give a number of minutes from {MIN_IDLE_MINUTES:g} "
            f"to {MAX_IDLE_MINUTES:g} (a week)"
        )
    directory = private_directory()
    with open(directory / f"{warm.host_key()}.start", "a") as starting:
        fcntl.flock(starting, fcntl.LOCK_EX)  # two starts at once: the second finds the first
        return _start(directory, idle_minutes)


def _start(directory: Path, idle_minutes: float) -> str:
    code = warm.workspace_code()
    running = running_host()
    replaced = ""
    if running is not None:
        record, process = running
        problem = warm.why_cold(record, code)
        if problem is None:
            return f"stage host already up (pid {process.pid}): {_serving(record)}"
        stages = _stop(process)
        replaced = (
            f"; it replaces the host (pid {process.pid}) that served {record['root']}, as "
            f"{problem}" + (f" (its {stages} running stage(s) finish there)" if stages else "")
        )
    log = directory / f"{warm.host_key()}.log"
    began = time.monotonic()
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.ops.host", "--idle", str(idle_minutes * 60)],
            cwd=code,  # so that it imports this workspace's copy of its own modules
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not ended by the terminal that started it
        )
    while time.monotonic() - began < READY_TIMEOUT_S:
        running = running_host()
        if running is not None and running[1].pid == process.pid:
            return (
                f"stage host up in {time.monotonic() - began:.1f} s (pid {process.pid}): "
                f"{_serving(running[0])}{replaced}"
            )
        if process.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
            own = [line for line in lines if line.startswith("aepipe host: ")] or lines
            raise PipelineError(f"the stage host did not start: {own[-1]} (log: {log})")
        time.sleep(0.1)
    process.kill()
    raise PipelineError(f"the stage host was not up after {READY_TIMEOUT_S} s (log: {log})")


def _serving(record: dict) -> str:
    return (
        f"stages of {sys.prefix} start warm; it ends after {record['idle_minutes']:g} idle "
        "minutes or at `aepipe host stop`"
    )


def _stop(process: psutil.Process) -> int:
    """Ask the host to end; wait a little for it. The number of stages it still runs."""
    stages = len(process.children())
    process.terminate()
    with contextlib.suppress(psutil.TimeoutExpired):
        process.wait(2 if stages else 30)
    return stages if process.is_running() else 0


def stop() -> str:
    running = running_host()
    if running is None:
        return "no stage host is up for this environment"
    _, process = running
    stages = _stop(process)
    if stages:
        return (
            f"stage host (pid {process.pid}) stopped taking stages; it ends when its {stages} "
            "running stage(s) end"
        )
    return f"stage host (pid {process.pid}) stopped"


def status() -> str:
    directory = warm.host_dir()
    if directory.exists() and not warm.trusted(directory):
        return (
            f"stages start cold: {directory} is not a directory that only this user can write "
            f"(remove it, or set {warm.HOST_DIR_ENV} to one that is)"
        )
    running = running_host()
    if running is None:
        return "no stage host is up for this environment: stages start cold"
    record, process = running
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started"]))
    except (ValueError, OverflowError, OSError):
        since = "?"
    running_stages = len(process.children())
    code = warm.workspace_code()
    problem = warm.why_cold(record, code)
    state = (
        f"stages from {code} start warm"
        if problem is None
        else f"stages from {code} start cold: {problem} (`aepipe host start` restarts it)"
    )
    return (
        f"stage host up since {since} (pid {process.pid}, {running_stages} stage(s) running, "
        f"ends after {record['idle_minutes']:g} idle minutes): {state}"
    )


def main(argv: list[str]) -> int:
    idle_s = float(argv[argv.index("--idle") + 1]) if "--idle" in argv else 60.0 * 60
    try:
        job = serve(idle_s)
    except PipelineError as exc:
        print(f"aepipe host: error: {exc}", flush=True)
        return 2
    if job is None:
        return 0
    job.run()  # never returns
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
