"""The README's Python snippet runs as written, in a fresh interpreter and an empty directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippet(section: str) -> str:
    text = README.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    assert len(blocks) == 1, f"expected one python block under '## {section}'"
    return blocks[0]


def test_python_api_snippet_runs_as_written(tmp_path, one_thread_env):
    (tmp_path / "snippet.py").write_text(python_snippet("Python API"))
    result = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=one_thread_env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^test acc 0\.\d{3}, drift: (True|False), predicted \d$", result.stdout, flags=re.M)
    for name in ("exports/digits/model.ts", "exports/digits/metadata.json", "eval/digits/eval.json",
                 "monitor/digits/drift.json"):
        assert (tmp_path / name).is_file(), name
