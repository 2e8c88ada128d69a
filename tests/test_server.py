"""`aepipe server`: the team's MLflow tracking server on PostgreSQL (started and used for real in
`test_e2e.py`)."""

import pytest

from pipeline.ops import server


def test_as_root_postgres_runs_through_runuser_found_off_path(monkeypatch):
    monkeypatch.setattr(server.os, "geteuid", lambda: 0)
    searched = []

    def which(name, path=None):
        searched.append(path)
        return "/usr/sbin/runuser" if path == "/usr/sbin:/sbin" else None

    monkeypatch.setattr(server.shutil, "which", which)
    assert server._as_postgres(["pg_ctl", "status"]) == [
        "/usr/sbin/runuser",
        "-u",
        "postgres",
        "--",
        "pg_ctl",
        "status",
    ]
    assert searched == [None, "/usr/sbin:/sbin"]
    monkeypatch.setattr(server.shutil, "which", lambda name, path=None: None)
    with pytest.raises(server.PipelineError, match="needs `runuser`"):
        server._as_postgres(["pg_ctl", "status"])
    monkeypatch.setattr(server.os, "geteuid", lambda: 1000)
    assert server._as_postgres(["pg_ctl", "status"]) == ["pg_ctl", "status"]
