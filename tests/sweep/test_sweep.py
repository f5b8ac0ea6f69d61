"""`ssl-train -m hparams_search=...`: real Optuna studies in SQLite, real Hydra multiruns, real digits trials.

Fast: two trials in parallel processes (submitit_local) sharing one study; a pruned trial; failing trials.
Slow: an 8-trial TPE sweep, and the same sweep killed during its fifth trial and run again; bad input.
Each command starts Python, torch and Lightning (~8 s of CPU on this machine), hence few commands.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ROOT = Path(__file__).resolve().parents[2]
# One trial: an MLP on digits, 20 steps validated at 10 and 20, without the reference profile, the pool check and
# the test passes (a sweep chooses by validation accuracy). About a second of training.
TINY = ["model=mlp", "model.hidden=[64]", "data.batch_size=16", "data.mu=2", "trainer.accelerator=cpu",
        "trainer.max_steps=20", "trainer.val_check_interval=10", "trainer.enable_progress_bar=false",
        "~callbacks.reference_profile", "~callbacks.pool_check", "test=false"]


def sweep_env() -> dict[str, str]:
    """The plugin lives at the top of the checkout (hydra_plugins/): an editable install made before it existed does
    not list it, so the checkout goes on the path (harmless once the install lists it). One thread per process."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def ssl_train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssl_train.train", "-m", *args]


def run_sweep(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(ssl_train_command(*args), cwd=cwd, env=sweep_env(), capture_output=True, text=True,
                          timeout=timeout)


def trials(sweep_dir: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{sweep_dir / 'optuna.db'}").get_trials()


@pytest.mark.slow  # several process starts (~8 s of imports each)
def test_two_trials_in_parallel_processes_share_the_study(tmp_path):
    out = tmp_path / "sweep"
    # Trials of 400 steps (~15 s each): far longer than the seconds by which the two processes' starts can differ,
    # so jobs run in parallel always overlap and jobs run one after the other never do.
    longer = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))]
    result = run_sweep("hparams_search=fixmatch", "cluster=local", "hydra.sweeper.n_trials=2",
                       "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={out}", *longer, "trainer.max_steps=400",
                       "trainer.val_check_interval=200", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    done = trials(out, "fixmatch")
    assert [t.state for t in done] == [TrialState.COMPLETE] * 2
    assert all(sorted(t.intermediate_values) == [200, 400] for t in done)  # each job's process reported to the study
    assert len(list((out / ".submitit").glob("*/*_result.pkl"))) == 2  # two submitit jobs
    # The jobs overlapped in time: each started (Hydra saves its config first) before the other finished.
    spans = [((out / str(t.number) / ".hydra" / "config.yaml").stat().st_mtime,
              (out / str(t.number) / "metrics.json").stat().st_mtime) for t in done]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
    for t in done:  # the value told is the job's optimized metric, the best validation accuracy
        assert t.value == pytest.approx(json.loads((out / str(t.number) / "metrics.json").read_text())["val/acc_best"])


def test_a_trial_below_the_median_is_stopped_and_recorded_pruned(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    # An earlier trial of the study that reached 100% validation accuracy at steps 10 and 20.
    study = optuna.create_study(study_name="fixmatch", storage=f"sqlite:///{out / 'optuna.db'}", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={10: 1.0, 20: 1.0}))
    result = run_sweep("hparams_search=fixmatch", "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner.n_startup_trials=1",
                       f"hydra.sweep.dir={out}", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    earlier, trial = trials(out, "fixmatch")
    assert trial.state == TrialState.PRUNED and trial.user_attrs["pruned_at_step"] == 10
    assert list(trial.intermediate_values) == [10] and trial.value == trial.intermediate_values[10]
    assert json.loads((out / "1" / "metrics.json").read_text())["train/steps"] == 10  # stopped there, not at 20
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] == 2 and summary["counts"]["pruned"] == 1 and summary["best"]["number"] == 0
    assert "2 finished trials (1 complete, 1 pruned), 0 failed" in result.stdout
    assert "PRUNED at step 10" in (out / "summary.md").read_text()


@pytest.mark.slow  # several process starts (~8 s of imports each)
def test_a_failing_trial_is_one_log_line_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "sweep"
    result = run_sweep("hparams_search=fixmatch", "optimizer.lr=1e30", "hydra.sweeper.n_trials=1",
                       "hydra.sweeper.max_failures=2", f"hydra.sweep.dir={out}", *TINY, cwd=tmp_path)
    assert result.returncode == 1
    failed = trials(out, "fixmatch")  # the job's error (one line, exit 1) failed its trial, not the sweep
    assert [t.state for t in failed] == [TrialState.FAIL] * 2
    assert all(t.user_attrs["error"].startswith("non-finite loss at step") for t in failed)
    logged = [line.split("[HYDRA] ", 1)[1] for line in result.stdout.splitlines() if "failed: non-finite" in line]
    assert [line.split(":")[0] for line in logged] == ["trial 0 failed", "trial 1 failed"], result.stdout[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: 2 trials failed (the last: non-finite loss at step"), result.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["counts"]["fail"] == 2


# Each is one more process start (~8 s of imports) for a message that test_space.py checks in-process.
@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("hydra.sweeper.direction=up", "error: hydra.sweeper.direction='up': expected maximize or minimize"),
    ("algorithm.treshold=interval(0.5,0.9)", "error: a trial's config does not compose from hydra.sweeper.params and "
                                             "the command line: Could not override 'algorithm.treshold'."),
])
def test_bad_sweep_input_is_one_line_before_anything_runs(tmp_path, override, message):
    result = run_sweep("hparams_search=fixmatch", override, f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY,
                       cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-3000:]
    assert not (tmp_path / "sweep").exists()  # no study, no job


# ---------------------------------------------------------------- slow: 8 trials, killed and resumed

TWO_PARAMETERS = ["hydra/sweeper=ssl_optuna", "hydra.sweeper.study_name=two", "hydra.sweeper.n_trials=8",
                  "hydra.sweeper.sampler.n_startup_trials=4",  # trials 4-7 are TPE's, not random
                  "algorithm.masking.threshold=interval(0.5,0.95)", "optimizer.lr=tag(log,interval(0.003,0.3))", *TINY]


def states(db) -> list[str]:
    """Trial states straight from the SQLite file, read-only (the sweep may be writing it)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return [s for (s,) in connection.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.OperationalError:  # not created yet
        return []


def outcome(trial) -> tuple:
    return trial.state, trial.params, trial.value, trial.intermediate_values


@pytest.mark.slow
def test_an_eight_trial_sweep_killed_during_its_fifth_trial_resumes_to_the_same_trials(tmp_path):
    whole = tmp_path / "whole"
    result = run_sweep(*TWO_PARAMETERS, f"hydra.sweep.dir={whole}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = trials(whole, "two")
    assert len(reference) == 8 and all(t.state in FINISHED for t in reference)
    assert len({tuple(t.params.items()) for t in reference}) == 8
    summary = json.loads((whole / "summary.json").read_text())
    best = max((t for t in reference if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert summary["best"]["number"] == best.number and summary["best"]["params"] == best.params
    assert f"best trial {best.number}: val/acc_best {best.value:.4f}" in result.stdout
    assert (whole / "trials.png").stat().st_size > 10_000

    # The same command, killed (SIGKILL, no clean-up) while trial 4, the fifth, runs.
    killed, command = tmp_path / "killed", [*TWO_PARAMETERS, f"hydra.sweep.dir={tmp_path / 'killed'}"]
    process = subprocess.Popen(ssl_train_command(*command), cwd=tmp_path, env=sweep_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (states(killed / "optuna.db") == ["COMPLETE"] * 4 + ["RUNNING"]
               and (killed / "4" / ".hydra" / "config.yaml").exists()):  # trial 4's job has started
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = trials(killed, "two")
    assert [t.state for t in before] == [TrialState.COMPLETE] * 4 + [TrialState.RUNNING]

    result = run_sweep(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    after = trials(killed, "two")
    finished = [t for t in after if t.state in FINISHED]
    assert len(finished) == 8 and len(after) == 9  # eight finished, plus the interrupted one
    assert [outcome(t) + (t.datetime_complete,) for t in after[:4]] == [
        outcome(t) + (t.datetime_complete,) for t in before[:4]]  # untouched
    assert after[4].state == TrialState.FAIL and after[5].user_attrs["retry_of"] == 4
    assert after[5].params == before[4].params  # asked again
    assert len({tuple(t.params.items()) for t in finished}) == 8  # no trial twice
    # Same seed, same numbers: the resumed sweep found what the uninterrupted one found.
    assert [outcome(t) for t in finished] == [outcome(t) for t in reference]
    assert "trial 4 was left running by an interrupted sweep" in result.stdout
