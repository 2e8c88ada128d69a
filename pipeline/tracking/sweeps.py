"""The MLflow side of `aepipe sweep`: one parent run per sweep, the cells' pipeline runs nested
under it (their stages learn its id from `AEPIPE_SWEEP_RUN`), the comparison logged to it.

A sweep is known by its name. Its parent run records what it runs (the commit and the cells, as
a digest): running the same sweep again resumes that run; another sweep under the same name is
refused, as is a second driver of a sweep that runs now.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from pipeline.core import processes
from pipeline.core.errors import PipelineError
from pipeline.tracking.runs import TAG_ENDED_BY, project_experiment_id
from pipeline.tracking.store import (
    configured_uri,
    ensure_reachable,
    open_client,
    store_errors,
    store_lock,
)
from pipeline.tracking.tags import TAG_PROCESS, TAG_ROLE, TAG_ROLE_SWEEP, TAG_SWEEP

TAG_SWEEP_NAME = "aepipe.sweep_name"
TAG_SWEEP_SPEC = "aepipe.sweep_spec"  # digest of the commit and the cells
TAG_FAILED_CELLS = "aepipe.failed_cells"
TAG_RESTORED = "aepipe.restored"
CUT_OFF = "aepipe sweep: an attempt of this cell cut off with its worker; the cell ran again"
MAX_TAG_LENGTH = 5000


class SweepRun:
    """The parent run of one sweep in the configured tracking store."""

    def __init__(self, client: Any, experiment_id: str, run_id: str, uri: str):
        self.client, self.experiment_id, self.run_id, self.uri = client, experiment_id, run_id, uri

    @staticmethod
    def refuse_conflicts(name: str, spec: str) -> None:
        """Refuse early, before a sweep starts anything, what `open` would refuse."""
        with _sweeps_named(name) as (_, _, _, found):
            if found:
                _refuse_another(found[0], name, spec)

    @classmethod
    def open(cls, name: str, spec: str, commit: str, cells: int) -> tuple[SweepRun, bool]:
        """The sweep's run, started or resumed; True if resumed. Refuses another sweep of this
        name, and a sweep whose driver still runs."""
        with _sweeps_named(name) as (uri, client, experiment_id, found):
            me = processes.process_identity(psutil.Process())
            if found:
                run = found[0]
                _refuse_another(run, name, spec)
                client.update_run(run.info.run_id, status="RUNNING")
                client.set_tag(run.info.run_id, TAG_PROCESS, me)
                return cls(client, experiment_id, run.info.run_id, uri), True
            tags = {
                TAG_ROLE: TAG_ROLE_SWEEP,
                TAG_SWEEP_NAME: name,
                TAG_SWEEP_SPEC: spec,
                TAG_PROCESS: me,
                "git.commit": commit,
                "aepipe.cells": str(cells),
            }
            run = client.create_run(experiment_id, run_name=name, tags=tags)
        return cls(client, experiment_id, run.info.run_id, uri), False

    def link(self) -> str:
        from pipeline.tracking.finder import RunFinder

        return RunFinder(self.client, self.experiment_id, self.uri).link(self.run_id)

    def end_cell_runs(self, reason: str) -> int:
        """Mark KILLED the runs of this sweep's cells still RUNNING (their cell has ended: was
        cancelled, or its worker died); return how many."""
        query = f"tags.`{TAG_SWEEP}` = '{self.run_id}' and attributes.status = 'RUNNING'"
        with store_errors(self.uri):
            running = self.client.search_runs(
                [self.experiment_id], filter_string=query, max_results=5000
            )
            for run in running:
                self.client.set_tag(run.info.run_id, TAG_ENDED_BY, reason)
                self.client.set_terminated(run.info.run_id, "KILLED")
        return len(running)

    def settle_cells(self, metrics: dict[str, dict[str, Any]]) -> None:
        """One FINISHED pipeline run per finished cell (`metrics`: cell -> its metrics.json).
        A cell whose every stage DVC restored from its run cache ran nothing, so it gets a run
        of its own holding its metrics; an attempt that a lost worker cut off between two stages
        (its pipeline run FINISHED by its last stage) is marked KILLED beside the attempt that
        did finish."""
        query = f"tags.`mlflow.parentRunId` = '{self.run_id}' and tags.`{TAG_ROLE}` = 'pipeline'"
        with store_errors(self.uri):
            children = self.client.search_runs(
                [self.experiment_id], filter_string=query, max_results=5000
            )
            for cell, values in metrics.items():
                finished = sorted(
                    (
                        c
                        for c in children
                        if c.data.tags.get("dvc.exp_name") == cell and c.info.status == "FINISHED"
                    ),
                    key=lambda c: c.info.start_time,
                )
                for attempt in finished[:-1]:
                    self.client.set_tag(attempt.info.run_id, TAG_ENDED_BY, CUT_OFF)
                    self.client.set_terminated(attempt.info.run_id, "KILLED")
                if not finished:
                    self._restored_cell(cell, values)

    def _restored_cell(self, cell: str, values: dict[str, Any]) -> None:
        tags = {
            "mlflow.parentRunId": self.run_id,
            TAG_SWEEP: self.run_id,
            TAG_ROLE: "pipeline",
            TAG_RESTORED: "every stage restored from DVC's run cache: no stage ran",
            "dvc.exp_name": cell,
        }
        run = self.client.create_run(self.experiment_id, run_name=cell, tags=tags)
        for group, scores in values.items():
            for metric, value in scores.items() if isinstance(scores, dict) else []:
                if isinstance(value, int | float) and math.isfinite(value):
                    self.client.log_metric(run.info.run_id, f"{group}.{metric}", value)
        self.client.set_terminated(run.info.run_id, "FINISHED")

    def end(self, status: str, files: list[Path], failed: list[str]) -> None:
        """Log `files` under `comparison/`, name the failed cells, end the run with `status`."""
        with store_errors(self.uri):
            for path in files:
                self.client.log_artifact(self.run_id, str(path), "comparison")
            self.client.set_tag(self.run_id, TAG_FAILED_CELLS, " ".join(failed)[:MAX_TAG_LENGTH])
            self.client.set_terminated(self.run_id, status, end_time=int(time.time() * 1000))


@contextlib.contextmanager
def _sweeps_named(name: str) -> Iterator[tuple[str, Any, str, list[Any]]]:
    """(store URI, client, the project's experiment, the sweep runs named `name`), the store
    locked for the block (a SQLite store: see `store_lock`)."""
    uri, artifact_dir = configured_uri()
    ensure_reachable(uri)
    named = f"tags.`{TAG_ROLE}` = '{TAG_ROLE_SWEEP}' and tags.`{TAG_SWEEP_NAME}` = '{name}'"
    with store_errors(uri):
        client = open_client(uri)
        with store_lock():
            experiment_id = project_experiment_id(client, artifact_dir)
            found = client.search_runs([experiment_id], filter_string=named, max_results=1)
            yield uri, client, experiment_id, found


def _refuse_another(run: Any, name: str, spec: str) -> None:
    tags = run.data.tags
    if tags.get(TAG_SWEEP_SPEC) != spec:
        raise PipelineError(
            f"a sweep named {name} with other settings or another commit exists (MLflow run "
            f"{run.info.run_id}); choose another --name"
        )
    driver = tags.get(TAG_PROCESS, "")
    if run.info.status == "RUNNING" and driver and not processes.process_gone(driver):
        host, _, rest = driver.partition(":")
        raise PipelineError(
            f"sweep {name} is running (its driver, pid {rest.partition(':')[0]} on {host}); "
            "wait for it to end, or stop it with Ctrl-C there"
        )
