"""The stage host: a stage handed to it runs as a cold one would (its streams, directory,
environment, code and exit status), signals and deaths travel both ways, and a host that could
run a stage differently is not used. These run a small test stage against a host that preloads
NumPy only; the real stages through a real host are in test_e2e_host.py."""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO_ROOT, pipeline_env, processes_running

PROBE_STAGE = '''
"""A stage for the host's tests: says where it runs, then does what its arguments say."""
import json, os, resource, sys, time
import pipeline
from pipeline.core import processes

MARK = "original"
print(json.dumps({
    "pid": os.getpid(), "ppid": os.getppid(), "code": pipeline.__file__, "cwd": os.getcwd(),
    "argv": sys.argv[1:], "probe": os.environ.get("PROBE"), "mark": MARK,
    "pipeline_process": processes.pipeline_process().pid,
    "files": resource.getrlimit(resource.RLIMIT_NOFILE),
}), flush=True)
action = sys.argv[1]
if action == "exit":
    sys.exit(int(sys.argv[2]))
if action == "read":
    print(sys.stdin.read().upper(), flush=True)
if action == "sleep":
    try:
        time.sleep(300)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
'''


def code_copy(destination: Path) -> Path:
    """A directory holding a copy of the pipeline package and the test stage."""
    shutil.copytree(
        REPO_ROOT / "pipeline",
        destination / "pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (destination / "pipeline/stages/probe_host.py").write_text(PROBE_STAGE)
    return destination


@pytest.fixture
def host_env(tmp_path) -> dict[str, str]:
    return pipeline_env(
        {
            "AEPIPE_HOST": "on",
            "AEPIPE_HOST_DIR": str(tmp_path / "hosts"),
            "AEPIPE_HOST_PRELOAD": "numpy",
        }
    )


def aepipe_host(action: str, where: Path, env: dict[str, str], *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "host", action, *extra],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def host(tmp_path, host_env):
    """(code copy, its host's process); the host is stopped after the test."""
    code = code_copy(tmp_path / "code")
    aepipe_host("start", code, host_env)
    record = json.loads(next((tmp_path / "hosts").glob("*.json")).read_text())
    process = psutil.Process(record["pid"])
    yield code, process
    aepipe_host("stop", code, host_env)
    psutil.wait_procs([process], timeout=60)


def stage(code: Path, env: dict[str, str], *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.stages.probe_host", *args],
        cwd=code,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def sleeping_stage(code: Path, env: dict[str, str]) -> tuple[subprocess.Popen, psutil.Process]:
    """A stage that sleeps in the host, and the child running it."""
    process = stage(code, env, "sleep")
    return process, psutil.Process(report(process)["pid"])


def report(process: subprocess.Popen) -> dict:
    return json.loads(process.stdout.readline())


def test_a_stage_in_the_host_runs_as_a_cold_one_would(host, host_env):
    code, host_process = host
    process = stage(
        code,
        {**host_env, "PROBE": "seen"},
        "read",
        stdin=subprocess.PIPE,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (77, 77)),  # `ulimit -n`
    )
    out, err = process.communicate("from the stage's stdin", timeout=60)
    said = json.loads(out.splitlines()[0])
    assert said["ppid"] == host_process.pid  # forked from the host
    assert said["pid"] != process.pid
    assert Path(said["code"]).resolve() == (code / "pipeline/__init__.py").resolve()
    assert said["cwd"] == str(code)
    assert said["argv"] == ["read"]
    assert said["probe"] == "seen"
    assert said["pipeline_process"] == process.pid  # it looks from the process DVC would start
    assert said["files"] == [77, 77]
    assert out.splitlines()[1] == "FROM THE STAGE'S STDIN"
    assert process.returncode == 0, err
    assert f"pipeline.stages.probe_host read in {code}" in host_log(host_env)

    failing = stage(code, host_env, "exit", "3")
    failing.communicate(timeout=60)
    assert failing.returncode == 3


def host_log(env: dict[str, str]) -> str:
    return next(Path(env["AEPIPE_HOST_DIR"]).glob("*.log")).read_text()


def test_an_edited_stage_module_runs_warm_with_the_edit(host, host_env):
    code, host_process = host
    probe = code / "pipeline/stages/probe_host.py"
    probe.write_text(probe.read_text().replace('MARK = "original"', 'MARK = "edited"'))
    said = report(stage(code, host_env, "exit", "0"))
    assert said["ppid"] == host_process.pid
    assert said["mark"] == "edited"


def test_a_stage_whose_copy_of_the_hosts_code_differs_starts_cold_saying_why(host, host_env):
    code, _ = host
    host_module = code / "pipeline/ops/host.py"
    host_module.write_text(host_module.read_text() + "\n# edited\n")
    process = stage(code, host_env, "exit", "0")
    out, err = process.communicate(timeout=60)
    assert json.loads(out.splitlines()[0])["pid"] == process.pid  # ran here, cold
    assert "starting cold, not in the stage host: pipeline/ops/host.py here differs" in err
    assert "restarts it" in aepipe_host("status", code, host_env)


def test_another_import_time_environment_starts_cold_naming_the_variable(host, host_env):
    code, _ = host
    process = stage(code, {**host_env, "TF_ENABLE_ONEDNN_OPTS": "0"}, "exit", "0")
    out, err = process.communicate(timeout=60)
    assert json.loads(out.splitlines()[0])["pid"] == process.pid
    assert "TF_ENABLE_ONEDNN_OPTS is '0' here, None where the host started" in err


def test_two_repositories_on_one_host_each_run_their_own_code(host, host_env, tmp_path):
    code, host_process = host
    other = code_copy(tmp_path / "other")
    probe = other / "pipeline/stages/probe_host.py"
    probe.write_text(probe.read_text().replace('MARK = "original"', 'MARK = "other"'))
    first, second = stage(code, host_env, "sleep"), stage(other, host_env, "sleep")
    said = {"first": report(first), "second": report(second)}
    for name, where in (("first", code), ("second", other)):
        assert said[name]["ppid"] == host_process.pid
        assert Path(said[name]["code"]).parent.parent == where
    assert (said["first"]["mark"], said["second"]["mark"]) == ("original", "other")
    for process in (first, second):
        process.send_signal(signal.SIGINT)
        assert process.communicate(timeout=60)[0].strip() == "interrupted"
        assert process.returncode == 130


def test_sigterm_reaches_the_stage_and_sigkill_takes_it_along(host, host_env):
    code, _ = host
    process, child = sleeping_stage(code, host_env)
    process.terminate()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM  # it ended by the signal, as a cold stage does
    assert not child.is_running()

    process, child = sleeping_stage(code, host_env)
    process.kill()
    process.wait(timeout=60)
    _, alive = psutil.wait_procs([child], timeout=60)
    assert alive == []


def test_a_host_killed_mid_stage_fails_it_in_one_line_and_takes_it_along(host, host_env):
    code, host_process = host
    process, child = sleeping_stage(code, host_env)
    host_process.kill()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.strip().splitlines() == [
        "aepipe probe_host: error: the stage host ended while it ran this stage; nothing of "
        "this run counts (`aepipe host status`)"
    ]
    _, alive = psutil.wait_procs([child], timeout=60)
    assert alive == []
    # Its socket stays behind: the next stage starts cold, silently.
    process = stage(code, host_env, "exit", "0")
    out, err = process.communicate(timeout=60)
    assert json.loads(out.splitlines()[0])["pid"] == process.pid
    assert process.returncode == 0 and err == ""
    assert "no stage host is up" in aepipe_host("status", code, host_env)
    assert list(Path(host_env["AEPIPE_HOST_DIR"]).glob("*.sock")) == []  # gone with it
    assert list(Path(host_env["AEPIPE_HOST_DIR"]).glob("*.json")) == []


def test_stop_lets_running_stages_end_and_new_ones_start_cold(host, host_env):
    code, host_process = host
    running = stage(code, host_env, "sleep")
    child = report(running)["pid"]
    said = aepipe_host("stop", code, host_env)
    assert f"stage host (pid {host_process.pid}) stopped taking stages" in said
    assert host_process.is_running()
    process = stage(code, host_env, "exit", "0")
    assert report(process)["pid"] == process.pid  # cold
    process.wait(timeout=60)
    running.send_signal(signal.SIGINT)
    assert running.communicate(timeout=60)[0].strip() == "interrupted"
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    _, alive = psutil.wait_procs([host_process], timeout=60)
    assert alive == []


def test_a_host_ends_after_its_idle_time_and_stop_never_signals_a_stranger(tmp_path, host_env):
    code = code_copy(tmp_path / "code")
    said = aepipe_host("start", code, host_env, "--idle", "0.05")
    assert "ends after 0.05 idle minutes" in said
    record_file = next((tmp_path / "hosts").glob("*.json"))
    host_process = psutil.Process(json.loads(record_file.read_text())["pid"])
    _, alive = psutil.wait_procs([host_process], timeout=60)
    assert alive == []
    assert list((tmp_path / "hosts").glob("*.sock")) == []

    # A record naming a process that is not a host (this test's own) is never acted on.
    record_file.write_text(json.dumps({"pid": psutil.Process().pid, "identity": "x:1:2"}))
    assert aepipe_host("stop", code, host_env) == "no stage host is up for this environment"
    assert processes_running("pipeline.ops.host", psutil.Process().children()) == []


def test_a_stage_process_gone_before_the_host_took_it_never_runs_there(host, host_env):
    """A host that was stopped (or busy) while the stage process gave up: no ghost run, and the
    host goes on serving."""
    code, host_process = host
    host_process.suspend()
    try:
        process = stage(code, host_env, "exit", "0")
        psutil.wait_procs([psutil.Process(process.pid)], timeout=2)  # it sends its request
        process.kill()
        process.wait(timeout=60)
    finally:
        host_process.resume()
    later = stage(code, host_env, "exit", "0")
    assert report(later)["ppid"] == host_process.pid
    later.wait(timeout=60)
    log = host_log(host_env)
    assert log.count("pipeline.stages.probe_host exit 0") == 1, log
    assert "refused a request: the stage process went away" in log


def test_stop_with_a_stage_waiting_to_be_taken_starts_it_cold(host, host_env):
    code, host_process = host
    host_process.suspend()
    try:
        process = stage(code, host_env, "exit", "0")
        host_process.terminate()  # held while it is stopped, handled first when it resumes
    finally:
        host_process.resume()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert json.loads(out.splitlines()[0])["pid"] == process.pid  # cold, with no word about it
    assert err == ""
    _, alive = psutil.wait_procs([host_process], timeout=60)
    assert alive == []


def test_ctrl_z_stops_the_stage_and_fg_resumes_it(host, host_env):
    code, _ = host
    process, child = sleeping_stage(code, host_env)
    process.send_signal(signal.SIGTSTP)
    assert wait_for_status(child, psutil.STATUS_STOPPED)
    process.send_signal(signal.SIGCONT)
    assert wait_for_status(child, psutil.STATUS_SLEEPING)
    process.send_signal(signal.SIGINT)
    assert process.communicate(timeout=60)[0].strip() == "interrupted"


def wait_for_status(process: psutil.Process, status: str) -> bool:
    for _ in range(600):
        if process.status() == status:
            return True
        threading.Event().wait(0.1)
    return False


def test_something_else_answering_on_the_socket_starts_the_stage_cold(tmp_path, host_env):
    """A record a host left and a socket where another program answers nonsense."""
    code = code_copy(tmp_path / "code")
    aepipe_host("start", code, host_env)
    hosts = Path(host_env["AEPIPE_HOST_DIR"])
    record = next(hosts.glob("*.json"))
    kept = record.read_text()
    host_process = psutil.Process(json.loads(kept)["pid"])
    aepipe_host("stop", code, host_env)
    psutil.wait_procs([host_process], timeout=60)
    record.write_text(kept)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(record.with_suffix(".sock")))
    listener.listen(1)

    def answer_nonsense() -> None:
        connection, _ = listener.accept()
        with contextlib.suppress(OSError):  # the stage may hang up first: not the host it knows
            connection.recv(1 << 20)
            connection.sendall(b"\xff not a host\n")
        connection.close()

    threading.Thread(target=answer_nonsense, daemon=True).start()
    process = stage(code, host_env, "exit", "0")
    out, err = process.communicate(timeout=60)
    listener.close()
    assert process.returncode == 0, err
    assert json.loads(out.splitlines()[0])["pid"] == process.pid
    assert "Traceback" not in err


def test_a_child_killed_outright_ends_its_stage_process_by_the_same_signal(host, host_env):
    """As a cold stage killed outright (the out-of-memory killer, say) ends: by SIGKILL."""
    code, _ = host
    process = stage(code, host_env, "sleep")
    psutil.Process(report(process)["pid"]).kill()
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, err


def test_ctrl_c_while_the_host_has_not_taken_the_stage_ends_it_at_once(host, host_env):
    code, host_process = host
    host_process.suspend()
    try:
        process = stage(code, host_env, "exit", "0")
        psutil.wait_procs([psutil.Process(process.pid)], timeout=2)  # it sends its request
        process.send_signal(signal.SIGINT)
        # Not the 30 s it waits for a silent host. (Its pipes stay open until the host resumes:
        # the streams it sent are in flight to the host.)
        assert process.wait(timeout=20) == 130
    finally:
        host_process.resume()
    assert process.stderr.read().strip() == "aepipe probe_host: interrupted"
    later = stage(code, host_env, "exit", "0")
    later.communicate(timeout=60)
    assert host_log(host_env).count("pipeline.stages.probe_host exit 0") == 1  # never ran
