"""The end of a sweep: summary.json (every number), summary.md and trials.png in the sweep directory, and a few
lines on stdout. Rewritten after each batch, so an interrupted sweep leaves a summary of what it finished."""

from __future__ import annotations

from pathlib import Path

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from ssl_train.io import write_atomic, write_json_atomic, write_text_atomic
from ssl_train.run.figures import BLUE, GREY, ORANGE, RED, png
from ssl_train.sweep.pruning import PRUNED_AT
from ssl_train.sweep.space import command

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def trial_record(trial: FrozenTrial, sweep_dir: Path, interrupted: set[int]) -> dict:
    error = trial.user_attrs.get("error") or ("interrupted (the sweep was stopped)" if trial.number in interrupted
                                              else None)
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            "duration_s": trial.duration.total_seconds() if trial.duration else None,
            "pruned_at_step": trial.user_attrs.get(PRUNED_AT), "retry_of": trial.user_attrs.get("retry_of"),
            "error": error, "job_dir": str(sweep_dir / str(trial.number))}


def summarize(study: optuna.Study, sweep_dir: Path, fixed: list[str], metric: str, storage: str) -> dict:
    """Write the summary files; returns what summary.json holds."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    counts = {state.name.lower(): sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    summary = {
        "study": study.study_name, "storage": storage, "direction": study.direction.name.lower(), "metric": metric,
        "finished": counts["complete"] + counts["pruned"], "counts": counts,
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params,
                                           "command": command(fixed, best.params)},
        "trials": [trial_record(t, sweep_dir, set(study.user_attrs.get("interrupted", []))) for t in trials],
    }
    write_atomic(sweep_dir / "trials.png", lambda path: path.write_bytes(plot(trials, study, metric)))
    write_text_atomic(sweep_dir / "summary.md", markdown(summary))
    write_json_atomic(sweep_dir / "summary.json", summary)
    return summary


def lines(summary: dict, sweep_dir: Path) -> list[str]:
    counts, best = summary["counts"], summary["best"]
    head = (f"study {summary['study']}: {summary['finished']} finished trials ({counts['complete']} complete, "
            f"{counts['pruned']} pruned), {counts['fail']} failed")
    if best is None:
        return [f"{head}; no trial completed", f"summary: {sweep_dir / 'summary.md'}"]
    return [f"{head}; best trial {best['number']}: {summary['metric']} {best['value']:.4f}",
            f"best: {best['command']}", f"summary: {sweep_dir / 'summary.md'} (trials.png, summary.json)"]


def _value(value) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(summary: dict) -> str:
    best, counts = summary["best"], summary["counts"]
    names = sorted({k for t in summary["trials"] for k in t["params"]})
    out = [f"# Sweep {summary['study']}", "",
           f"{summary['direction']} `{summary['metric']}`; storage `{summary['storage']}`; "
           f"{summary['finished']} finished trials ({counts['complete']} complete, {counts['pruned']} pruned), "
           f"{counts['fail']} failed, {counts['running']} running.", ""]
    if best is not None:
        out += [f"Best: trial {best['number']}, {summary['metric']} = {best['value']:.4f}. Rerun it with:", "",
                "```bash", best["command"], "```", ""]
    out += ["| trial | state | value | time (s) | " + " | ".join(f"`{n}`" for n in names) + " | note |",
            "|---:|---|---:|---:|" + "---:|" * len(names) + "---|"]
    for t in summary["trials"]:
        state = t["state"] + (f" at step {t['pruned_at_step']}" if t["pruned_at_step"] is not None else "")
        duration = "" if t["duration_s"] is None else f"{t['duration_s']:.1f}"
        note = t["error"] or (f"retry of trial {t['retry_of']}" if t["retry_of"] is not None else "")
        out.append(f"| {t['number']} | {state} | {_value(t['value'])} | {duration} | "
                   + " | ".join(_value(t["params"].get(n)) for n in names) + f" | {note.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def plot(trials: list[FrozenTrial], study: optuna.Study, metric: str) -> bytes:
    """Left: each trial's value and the best so far; right: the validation curves the trials reported."""
    fig = Figure(figsize=(11, 3.8))
    left, right = fig.subplots(1, 2)
    better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    colors = {TrialState.COMPLETE: BLUE, TrialState.PRUNED: ORANGE}
    for state, color in colors.items():
        shown = [t for t in trials if t.state == state and t.value is not None]
        if shown:
            left.scatter([t.number for t in shown], [t.value for t in shown], color=color, label=state.name.lower())
    for i, t in enumerate(t for t in trials if t.state == TrialState.FAIL):
        left.axvline(t.number, color=RED, linestyle=":", label="failed" if i == 0 else None)
    steps, best = [], None
    for t in trials:
        if t.state == TrialState.COMPLETE:
            best = t.value if best is None else better(best, t.value)
        steps.append(best)
    left.step([t.number for t in trials], steps, where="post", color=GREY, label="best so far")
    left.set(title=f"{study.study_name}: trials", xlabel="trial", ylabel=metric)
    left.xaxis.get_major_locator().set_params(integer=True)
    left.legend(fontsize=8)
    for t in trials:
        if t.intermediate_values:
            xs = sorted(t.intermediate_values)
            right.plot(xs, [t.intermediate_values[x] for x in xs], marker=".",
                       color=colors.get(t.state, GREY), alpha=0.8)
    right.set(title="validation curves reported to the pruner (orange: pruned)", xlabel="step",
              ylabel="reported value")
    fig.tight_layout()
    return png(fig)
