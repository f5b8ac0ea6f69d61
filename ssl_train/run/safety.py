"""Configs read from files are data, never code: only ssl_train's own `_target_`s are instantiated.

A checkpoint, a reference profile or an export names the model and data it was
made with as Hydra configs. `instantiate` calls whatever importable callable a
`_target_` names (at any depth, in lists, with `_partial_`), so a shared file
could name `pathlib.Path.write_text` or `numpy.load(allow_pickle=True)` and run
code on load. An allowlist is the only safe rule: the targets that ssl_train's
shipped configs name under ssl_train's own package, plus what the user trusts by
name (`trust_targets=[mymodule.MyNet]`, `mymodule.*` for a whole module) or
wholesale (`trust_checkpoint=true`, for files the user made). Interpolations
(`${...}`) are refused too: a saved config is stored resolved, and a resolver
is code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssl_train.errors import SSLTrainError
from ssl_train.run.config import config_dir

log = logging.getLogger(__name__)


class UntrustedFileError(SSLTrainError):
    """A file names code that ssl_train will not run for it."""


@dataclass(frozen=True)
class Trust:
    """What a config read from a file may instantiate beyond ssl_train's own targets.

    Args:
        targets: extra `_target_`s by their dotted name; `module.*` trusts every name in a module (`module.Net`,
            not `module.sub.Net` nor `module.os.system`: name a submodule as `module.sub.*`).
        everything: trust the file entirely (`trust_checkpoint=true`): any importable callable runs.
    """

    targets: tuple[str, ...] = field(default_factory=tuple)
    everything: bool = False

    @classmethod
    def from_config(cls, cfg) -> Trust:
        """From a command's `trust_targets` and `trust_checkpoint` keys (absent: ssl_train's own only)."""
        targets = cfg.get("trust_targets") or ()
        if isinstance(targets, str):
            targets = [targets]
        everything = cfg.get("trust_checkpoint", False)
        if not isinstance(everything, bool):  # bool("false") is True: a trust switch takes booleans only
            raise SSLTrainError(f"trust_checkpoint={everything!r}: expected true or false")
        if everything:
            log.warning("trust_checkpoint=true: the configs in the files this command reads may name any code, "
                        "and it runs")
        return cls(tuple(str(t) for t in targets), everything)

    def allows(self, target: str) -> bool:
        if self.everything or target in shipped_targets() or target in self.targets:
            return True
        # `module.*` is the names defined in that module, one level: Hydra resolves a longer path attribute by
        # attribute, so `module.os.system` would reach into everything the module imports.
        return any(t.endswith(".*") and target.startswith(t[:-1]) and _NAME.fullmatch(target[len(t) - 1:])
                   for t in self.targets)


@cache
def shipped_targets() -> frozenset[str]:
    """Every `ssl_train.*` `_target_` named by the configs shipped with the package."""
    found: set[str] = set()
    for path in sorted(Path(config_dir()).rglob("*.yaml")):
        document = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        found.update(t for _, t in _targets(document, "") if isinstance(t, str) and t.startswith("ssl_train."))
    return frozenset(found)


def check_config(config, source: str | Path, trust: Trust | None = None, where: str = "") -> None:
    """Raise UntrustedFileError (one line naming the target, where it sits and the file) unless every
    `_target_` in `config` is allowed and it holds no interpolation."""
    trust = trust or Trust()
    if isinstance(config, (DictConfig, ListConfig)):  # walked as plain data, interpolations left unresolved
        config = OmegaConf.to_container(config, resolve=False)
    try:
        _check(config, source, trust, where)
    except _Malformed as exc:
        raise UntrustedFileError(f"{source}: refused a config {exc.reason} at {exc.location or '<root>'}") from None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Deeper than any config ssl_train writes, far below Python's recursion limit (the walk and Hydra recurse).
MAX_DEPTH = 64


class _Malformed(Exception):
    def __init__(self, location: str, reason: str):
        super().__init__(reason)
        self.location, self.reason = location, reason


def _check(config, source, trust: Trust, where: str) -> None:
    for location, target in _targets(config, where):
        if not isinstance(target, str):
            raise UntrustedFileError(f"{source}: refused a non-string _target_ at {location or '<root>'}")
        if not trust.allows(target):
            # Only a dotted name is repeated unquoted: a newline in a crafted target must not break the line.
            this = f"trust_targets=[{target}] allows this one, " if _DOTTED.fullmatch(target) else ""
            raise UntrustedFileError(
                f"{source}: refused _target_ {target!r} at {location or '<root>'}: only ssl_train's own classes "
                f"are instantiated from a file ({this}trust_checkpoint=true any code the file names)")
    if not trust.everything:
        for location, text in _strings(config, where):
            if "${" in text:
                raise UntrustedFileError(f"{source}: refused an interpolation at {location or '<root>'} "
                                         f"({text[:60]!r}): configs saved by ssl_train are stored resolved")


def _targets(node, where: str) -> Iterator[tuple[str, object]]:
    """(location of the node that holds it, value) of every `_target_` key, at any depth, through dicts and lists."""
    if isinstance(node, dict) and "_target_" in node:
        yield where, node["_target_"]
    for location, _, value in _walk(node, where):
        if isinstance(value, dict) and "_target_" in value:
            yield location, value["_target_"]


def _strings(node, where: str) -> Iterator[tuple[str, str]]:
    for location, key, value in _walk(node, where):
        for text in (key, value):
            if isinstance(text, str):
                yield location, text


def _child(where: str, key) -> str:
    """`where.key`, or `where['odd key']` for a key that is not a plain name (a newline in a key must not
    break the one-line error, nor a dot fake another location)."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return f"{where}.{key}" if where else key
    return f"{where}[{key!r}]"


def _walk(node, where: str, _path: tuple[int, ...] = (), _seen: set[int] | None = None
          ) -> Iterable[tuple[str, object, object]]:
    """(location, key or None, value) of every entry below `node`, depth first.

    A file can hold self-referencing or absurdly deep containers (the unpickler's memo allows both): they are
    refused here, as one line, rather than overflowing the stack of this walk or of Hydra's. A container
    referenced twice (not a cycle) is walked once: its content is the same wherever it appears.
    """
    if not isinstance(node, (dict, list, tuple)):
        return
    _seen = set() if _seen is None else _seen
    if id(node) in _path:
        raise _Malformed(where, "that contains itself")
    if len(_path) >= MAX_DEPTH:
        raise _Malformed(where, f"nested deeper than {MAX_DEPTH} levels")
    if id(node) in _seen:
        return
    _seen.add(id(node))
    path = (*_path, id(node))
    items = ((_child(where, key), key, value) for key, value in node.items()) if isinstance(node, dict) \
        else ((f"{where}[{i}]", None, value) for i, value in enumerate(node))
    for location, key, value in items:
        yield location, key, value
        yield from _walk(value, location, path, _seen)
