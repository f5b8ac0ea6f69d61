"""What the accuracy benchmarks (benchmark_digits.py, benchmark_usps.py) share: a method name with variants →
an `ssl-train` run that is reused once finished, mean ± std over seeds, and the report page.

A row's method is a config of conf/algorithm/ followed by `+variant`s, each a list of extra overrides:
`fixmatch+noalign` is FixMatch with `algorithm.alignment=null`, `softmatch+sinkhorn` is SoftMatch with
FixMatch's Sinkhorn alignment. `--variant NAME="OVERRIDES"` defines more, e.g.
`--variant "tau9=algorithm.masking.threshold=0.9"` for `fixmatch+tau9`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ssl_train.export.measure import cpu_name
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.run.config import compose, config_dir
from ssl_train.run.training import train

ROOT = Path(__file__).resolve().parent.parent
Variant = Callable[[str], list[str]]  # algorithm config name -> its overrides


def fixed(overrides: list[str]) -> Variant:
    """A variant that is the same overrides for every method."""
    return lambda _: overrides


def alignment(group: str) -> Variant:
    """The method with the alignment part `group`, less the options its own config sets that `group` does not
    take (SoftMatch's `target` when it gets the Sinkhorn part)."""

    def overrides(algorithm: str) -> list[str]:
        chosen = compose("config", [f"algorithm={algorithm}", f"algorithm/alignment={group}"]).algorithm.alignment
        accepted = OmegaConf.load(config_dir() / "algorithm" / "alignment" / f"{group}.yaml").keys()
        return [f"algorithm/alignment={group}"] + [f"~algorithm.alignment.{k}" for k in chosen if k not in accepted]

    return overrides


VARIANTS: dict[str, Variant] = {"noalign": fixed(["algorithm.alignment=null"]), "sinkhorn": alignment("sinkhorn")}


def method_overrides(method: str, variants: dict[str, Variant]) -> list[str]:
    """`name+variant+...` → the Hydra overrides of that row."""
    algorithm, *tags = method.split("+")
    unknown = [t for t in tags if t not in variants]
    if unknown:
        raise SystemExit(f"error: {method}: unknown variant {unknown[0]!r} (known: {', '.join(sorted(variants))}; "
                         f"--variant NAME=OVERRIDES adds one)")
    return [f"algorithm={algorithm}"] + [o for t in tags for o in variants[t](algorithm)]


def check_methods(methods: list[str], variants: dict[str, Variant]) -> None:
    """Every row's variants are known, before hours of training find one that is not."""
    for method in methods:
        method_overrides(method, variants)


def run_method(method: str, run_dir: Path, overrides: list[str], fresh: bool = False, report_only: bool = False,
               variants: dict[str, Variant] = VARIANTS) -> dict | None:
    """The metrics of one run: read back when its metrics.json exists (unless `fresh`), else trained now (None
    with `report_only`)."""
    if (run_dir / "metrics.json").is_file() and not fresh:
        return json.loads((run_dir / "metrics.json").read_text())
    if report_only:
        return None
    cfg = compose("config", [*method_overrides(method, variants), f"paths.output_dir={run_dir}",
                             "trainer.enable_progress_bar=false", "guard=false", *overrides])  # a row of its own
    return train(cfg)


def summarize(results: dict[tuple[str, int], list[dict]], key: str) -> list[dict]:
    """One row per (method, `key` value): test accuracy over seeds and the other metrics' means, ordered by the
    value, then the method."""
    def mean(runs: list[dict], metric: str) -> float:
        return statistics.mean(r.get(metric, float("nan")) for r in runs)

    rows = []
    for (method, value), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        accs = [r["test/acc"] for r in runs]
        rows.append({"method": method, key: value, "acc_mean": statistics.mean(accs),
                     "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "accs": accs,
                     "alt_mean": mean(runs, "test_alt/acc"), "val_mean": mean(runs, "val/acc"),
                     "f1_mean": mean(runs, "test/f1_macro"), "ece_mean": mean(runs, "test/ece"),
                     "time_median": statistics.median(r["train/time_s"] for r in runs),
                     "seeds": [r["seed"] for r in runs]})
    return rows


def with_earlier(rows: list[dict], key: str, command_line: str, earlier: Path) -> list[dict]:
    """The rows measured now (each naming `command_line`), then the rows of the earlier report `earlier` (a
    <stem>.json) that none of them replaces: a table grows over several sessions' runs, and each row keeps the
    command that measured it."""
    now = [r | {"command": command_line} for r in rows]
    measured = {(r["method"], r[key]) for r in now}
    kept = json.loads(earlier.read_text()) if earlier.is_file() else []
    kept = [r for r in kept if (r["method"], r[key]) not in measured]
    return sorted(now + kept, key=lambda r: (r[key], r["method"]))


def commands(rows: list[dict]) -> list[str]:
    """The report's intro line naming the commands that measured its rows."""
    lines = sorted({r["command"] for r in rows if "command" in r})
    if len(lines) == 1:
        return [f"Command: `{lines[0]}`"]
    return ["Commands (each row of the .json names its own):", "", *(f"- `{line}`" for line in lines)]


def column(header: str, key: str, digits: int = 4) -> tuple[str, Callable[[dict], str]]:
    """A table column showing the row's number `key`."""
    return header, lambda r: f"{r[key]:.{digits}f}" if r[key] == r[key] else "–"  # NaN: not measured here


def per_seed(row: dict) -> str:
    return ", ".join(f"s{seed}: {a:.4f}" for seed, a in zip(row["seeds"], row["accs"]))


def mean_std(row: dict) -> str:
    return f"{row['acc_mean']:.4f} ± {row['acc_std']:.4f}"


def table(rows: list[dict], columns: list[tuple[str, Callable[[dict], str]]]) -> list[str]:
    """A markdown table: one (header, cell of a row) per column."""
    return ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]


def machine() -> str:
    return (f"Machine: {cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}.")


def above_baseline(rows: list[dict], key: str, unit: str) -> list[tuple[str, bool]]:
    """Every method above the supervised baseline of the same `key` value."""
    mean = {(r["method"], r[key]): r["acc_mean"] for r in rows}
    return [(f"{method} above supervised at {value} {unit} ({acc:.4f} vs {mean['supervised', value]:.4f})",
             acc > mean["supervised", value])
            for (method, value), acc in sorted(mean.items(), key=lambda kv: (kv[0][1], kv[0][0]))
            if method not in ("supervised", "label_spreading") and ("supervised", value) in mean]


def variants_table(rows: list[dict], key: str) -> list[str]:
    """Each method that has `+variant` rows beside its plain one, its test accuracy per variant and `key`."""
    by = {(r["method"], r[key]): r for r in rows}
    tags = sorted({t for r in rows for t in r["method"].split("+")[1:]})
    bases = sorted({r["method"].split("+")[0] for r in rows if "+" in r["method"]})
    cells = [(base, value) for base in bases for value in sorted({r[key] for r in rows})
             if any((f"{base}+{t}", value) in by for t in tags)]
    if not cells:
        return []
    cell = lambda name, value: mean_std(by[name, value]) if (name, value) in by else "–"  # noqa: E731
    return table(cells, [("method", lambda c: c[0]), (key, lambda c: str(c[1])),
                         ("as configured", lambda c: cell(c[0], c[1]))]
                 + [(f"+{t}", lambda c, t=t: cell(f"{c[0]}+{t}", c[1])) for t in tags])


def write_report(out: Path, stem: str, title: str, intro: list[str], rows: list[dict], body: list[str],
                 checks: list[tuple[str, bool]], note: str = "") -> Path:
    """docs/results/<stem>.md (title, intro paragraphs, body, the targets as a checklist, the note), then
    <stem>.json with the rows."""
    lines = [f"# {title}", "", *intro, "", *body, "", "## Targets", ""]
    lines += [f"- [{'x' if ok else ' '}] {text}" for text, ok in checks]
    if note:
        lines += ["", "## Notes", "", note]
    write_text_atomic(out / f"{stem}.md", "\n".join(lines) + "\n")
    write_json_atomic(out / f"{stem}.json", rows)
    return out / f"{stem}.md"


def parser(doc: str, methods: list[str], runs: Path) -> argparse.ArgumentParser:
    """The options every accuracy benchmark takes; a script adds its own axis (labels, budgets)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=methods,
                   help="algorithm configs, each optionally with +variants (fixmatch+noalign, softmatch+sinkhorn)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=runs)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    p.add_argument("--fresh", action="store_true", help="retrain runs that already have metrics.json")
    p.add_argument("--note", default="", help="a paragraph appended to the report")
    p.add_argument("--report-only", action="store_true", help="tabulate finished runs, train nothing")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                   help="define +NAME as these space-separated overrides, e.g. 'tau9=algorithm.masking.threshold=0.9'")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. trainer.max_steps=500")
    return p


def defined_variants(definitions: list[str]) -> dict[str, Variant]:
    """VARIANTS plus the --variant NAME=OVERRIDES definitions."""
    defined = dict(VARIANTS)
    for text in definitions:
        name, sep, overrides = text.partition("=")
        if not sep or not name or "+" in name or not overrides.strip():
            raise SystemExit(f"error: --variant {text!r}: expected NAME=OVERRIDES, e.g. "
                             f"'tau9=algorithm.masking.threshold=0.9'")
        defined[name] = fixed(shlex.split(overrides))
    return defined


def command(script: str, options: list[tuple[str, list]], overrides: list[str],
            definitions: list[str] = ()) -> str:
    """The command line that trains these runs (a --report-only table reproduces with it too)."""
    return " ".join([f"python scripts/{script}", *(f"{flag} {' '.join(map(str, values))}" for flag, values in options),
                     *(f"--variant {shlex.quote(d)}" for d in definitions), *overrides])
