"""Self-contained HTML pages (figures embedded as base64 PNG): the building blocks of every tool's report.

A page built from these references no file at all, so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px;background:#fff;min-height:100vh}
h1{font-size:1.6em;margin:0 0 4px}
h2{font-size:1.25em;border-bottom:2px solid #e4e7eb;padding-bottom:4px;margin-top:36px}
h3{font-size:1.05em;margin-top:22px}.sub{color:#666;margin:0 0 18px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:.9em}
th,td{border:1px solid #dde1e6;padding:4px 9px;text-align:left}th{background:#f0f2f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.flag td{background:#fdecea}
.warn{background:#fff4e5;border-left:4px solid #ff9800;padding:10px 14px;margin:12px 0}
.ok{background:#edf7ed;border-left:4px solid #4caf50;padding:10px 14px;margin:12px 0}
.note{color:#555;font-size:.9em}img{max-width:100%;height:auto;display:block;margin:8px 0}
code{background:#f0f2f5;padding:1px 4px;border-radius:3px}
"""


def esc(value) -> str:
    return html.escape(str(value))


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1e}" if 0 < abs(value) < 10 ** -digits * 5 else f"{value:.{digits}f}"
    return str(value)


def page(title: str, subtitle: str, body: Iterable[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body><main><h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}</p>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{esc(title)}</h2>\n" + "\n".join(p for p in parts if p) + "\n</section>"


def heading(title: str) -> str:
    return f"<h3>{esc(title)}</h3>"


def paragraph(text: str, kind: str = "") -> str:
    return f"<p class=\"{kind}\">{esc(text)}</p>" if kind else f"<p>{esc(text)}</p>"


def box(text: str, warning: bool) -> str:
    return f"<div class=\"{'warn' if warning else 'ok'}\">{esc(text)}</div>"


def table(header: Sequence[str] | None, rows: Iterable[Sequence], flagged: Iterable[bool] | None = None) -> str:
    """An HTML table (numbers right-aligned); rows whose `flagged` entry is true are highlighted."""
    flags = list(flagged) if flagged is not None else None
    head = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    lines = [f"<table>{head}<tbody>"]
    for i, row in enumerate(rows):
        cls = " class=\"flag\"" if flags is not None and flags[i] else ""
        cells = "".join(f"<td class=\"num\">{esc(fmt(c))}</td>" if _is_number(c) else f"<td>{esc(fmt(c))}</td>"
                        for c in row)
        lines.append(f"<tr{cls}>{cells}</tr>")
    return "\n".join(lines) + "</tbody></table>"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def figure(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f"<img alt=\"{esc(alt)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\">"
