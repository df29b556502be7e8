"""The default workspace's background explain/score job: the `explain-default` command on a tiny workspace,
its status file, its lock, and that the app's launcher never starts two jobs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from core import store
from core.autointerp import default as default_stages
from core.autointerp import default_job
from core.autointerp.engine import RunSpec, SamplingParams
from core.cli import main
from tests.app_workspace import copy_workspace
from tests.autointerp_helpers import tiny_workspace

SMALL = RunSpec(
    sampling=SamplingParams(n_train=10, n_test_per_decile=1, n_random_negatives=4, n_hard_negatives=4, window=16),
    random_latents=2,
)
# A stand-in job for the launcher tests: records its pid, takes the job lock like the real one, runs a while.
STUB = """
import os, sys, time
from pathlib import Path
from core.autointerp import default_job as j
ws = Path(sys.argv[1])
with open(sys.argv[2], "a") as f:
    f.write(f"{os.getpid()}\\n")
with j._try_lock(ws, wait=60) as free:
    if free:
        j._write_status(ws, j.JobStatus(state="running", pid=os.getpid(), started=time.time()))
        time.sleep(float(sys.argv[3]))
"""


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    return tiny_workspace(tmp_path_factory)


def _wait(predicate, seconds: float = 120.0) -> None:
    """Poll until `predicate()` holds (a generous bound against a hung test, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.1)


def test_explain_default_command_runs_records_status_and_resumes(tiny_ws, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(default_stages, "DEFAULT_SPEC", SMALL)
    ws = copy_workspace(tiny_ws[0], tmp_path)
    assert default_job.job_status(ws).state == "not started"

    assert main(["explain-default", "--workspace", str(ws), "--stages", "fast"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["state"] == "finished" and set(out["seconds"]) == {"fast"}
    status = default_job.job_status(ws)
    assert (status.state, status.fraction, status.stages, status.error) == ("finished", 1.0, ["fast"], None)
    frame = store.scores_frame(ws, status=None)
    assert set(frame["scorer"]) == {"detection", "fuzzing", "simulation", "embedding"}
    assert set(frame["baseline"].dropna()) == {"random-explanation", "random-latent"}
    assert default_stages.default_explanations_ready(ws, ("fast",), SMALL)

    assert main(["explain-default", "--workspace", str(ws), "--stages", "fast"]) == 0  # finished: a no-op
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["seconds"] == {}
    assert len(store.scores_frame(ws, status=None)) == len(frame)


def test_explain_default_refuses_bad_input_and_a_second_job(tiny_ws, tmp_path, capsys):
    assert main(["explain-default", "--workspace", str(tmp_path / "none.duckdb")]) == 2
    assert "does not exist" in capsys.readouterr().err
    ws = copy_workspace(tiny_ws[0], tmp_path)
    assert main(["explain-default", "--workspace", str(ws), "--stages", "fast,medium"]) == 2
    assert "--stages takes" in capsys.readouterr().err
    with default_job._try_lock(ws) as free:  # another job holds the lock
        assert free
        assert main(["explain-default", "--workspace", str(ws)]) == 2
        assert "already running" in capsys.readouterr().err
    assert default_job.job_status(ws).state == "not started"  # the refused job wrote nothing


def test_a_failing_job_is_recorded_and_not_restarted_without_retry(tiny_ws, tmp_path, monkeypatch):
    ws = copy_workspace(tiny_ws[0], tmp_path)

    def boom(*args, **kwargs):
        raise RuntimeError("boom in stage")

    monkeypatch.setattr(default_job, "ensure_default_explanations", boom)
    with pytest.raises(RuntimeError):
        default_job.run_default_job(ws, ("fast",), base=SMALL)
    status = default_job.job_status(ws)
    assert status.state == "failed" and "RuntimeError: boom in stage" in status.error

    launched = []
    monkeypatch.setattr(default_job.subprocess, "Popen", lambda *a, **k: launched.append(a))
    assert default_job.start_default_job(ws, base=SMALL).state == "failed" and not launched
    assert "explain-default --workspace" in default_job.rerun_command(ws)


def test_the_launcher_never_starts_two_jobs(tiny_ws, tmp_path):
    ws = copy_workspace(tiny_ws[0], tmp_path)
    pids = tmp_path / "pids.txt"
    stub = [sys.executable, "-c", STUB, str(ws), str(pids), "3"]

    first = default_job.start_default_job(ws, argv=stub, base=SMALL)
    assert first.state == "starting" and first.pid
    second = default_job.start_default_job(ws, argv=stub, base=SMALL)  # a second session, at once
    assert second.state in ("starting", "running") and second.pid == first.pid
    _wait(lambda: default_job.job_status(ws).state == "running")
    third = default_job.start_default_job(ws, argv=stub, base=SMALL)  # while it holds the lock
    assert third.state == "running" and third.pid == first.pid

    _wait(lambda: not default_job._pid_alive(first.pid))  # it exits (a zombie counts as dead)
    stopped = default_job.job_status(ws)  # it said 'running' and never finished
    assert stopped.state == "stopped" and "stopped before finishing" in stopped.error
    assert default_job.start_default_job(ws, argv=stub, base=SMALL).state == "stopped"  # no restart loop
    assert pids.read_text().split() == [str(first.pid)]

    again = default_job.start_default_job(ws, argv=[*stub[:-1], "0"], retry=True, base=SMALL)  # the restart button
    assert again.state == "starting" and again.pid != first.pid
    _wait(lambda: not default_job._pid_alive(again.pid))
    assert pids.read_text().split() == [str(first.pid), str(again.pid)]


def test_a_finished_workspace_needs_no_job(tiny_ws, tmp_path, monkeypatch):
    ws = copy_workspace(tiny_ws[0], tmp_path)
    monkeypatch.setattr(default_job, "default_explanations_ready", lambda *a, **k: True)
    launched = []
    monkeypatch.setattr(default_job.subprocess, "Popen", lambda *a, **k: launched.append(a))
    status = default_job.start_default_job(ws)
    assert status.state == "finished" and not launched
    assert default_job.job_status(Path(ws)).state == "finished"
