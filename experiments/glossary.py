"""Every name the project logs to MLflow — metric, param or tag — with its exact definition:
of which loss, at which weights, on which split, per sample or averaged, and the MLflow step's
unit. The names every experiment may log are in `glossary.toml` beside this file; an
experiment's own names in the `glossary.toml` of its folder (the catalog gathers both). One
name means one thing in every experiment; a test runs the whole catalog and fails on a logged
name that is not defined. A config's own fields are logged on the parent run as params under
their field names (nested fields joined with dots); `phenolab list` describes those.

Placeholders in a name stand for a family: `<split>` is a data split (`train`: a full pass
over the training split, or the experiment's training subset, at the weights of that moment;
`test`; `val`: early stopping's held-out validation split; `fit`: the training split minus the
validation split), `<k>` a 1-based layer number, `<layer>` a parameter's or layer's name,
`<method>` a minimal-ratio phase-2 method, `<task>` a gradient-norm task (`function`, `mnist`),
`<variant>` a variant's name, `<metric>` a child metric's name, `<key>` a finding's key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

Kind = Literal["metric", "param", "tag"]
EVERY = ()  # a term every experiment logs (through the shared loop and tracking layer)

PLACEHOLDERS = {
    "split": r"(?:train|test|val|fit)",
    "k": r"\d+",
    "layer": r"[A-Za-z0-9_.]+",
    "method": r"(?:grad_norm|newton|levenberg_marquardt)",
    "task": r"(?:function|mnist)",
    "measure": r"[a-z0-9_]+",
    "variant": r"[^/]+",
    "metric": r".+",
    "key": r"[a-z0-9_]+",
}


@cache
def _pattern(name: str) -> re.Pattern[str]:
    parts = re.split(r"<(\w+)>", name)
    return re.compile("".join(PLACEHOLDERS[p] if i % 2 else re.escape(p) for i, p in enumerate(parts)))


@dataclass(frozen=True)
class Term:
    name: str
    kind: Kind
    definition: str
    experiments: tuple[str, ...] = EVERY  # the experiments that log it; () = every one

    def matches(self, name: str) -> bool:
        """Whether `name` is this term (a placeholder matches its family)."""
        return _pattern(self.name).fullmatch(name) is not None

    def describe(self) -> dict[str, str | list[str]]:
        return {"name": self.name, "kind": self.kind, "definition": self.definition,
                "experiments": list(self.experiments) or ["every experiment"]}


def load(path: Path, experiment: str | None = None) -> tuple[Term, ...]:
    """The terms of a glossary file (`[name]` tables with `kind` and `definition`), logged by
    `experiment` (None: any experiment may log them)."""
    if not path.exists():
        return ()
    table = tomllib.loads(path.read_text())
    return tuple(Term(name, entry["kind"], " ".join(entry["definition"].split()),
                      (experiment,) if experiment else EVERY) for name, entry in table.items())


SHARED = load(Path(__file__).with_name("glossary.toml"))


def find(terms: Iterable[Term], name: str, experiment: str | None = None) -> Term | None:
    """The term of `terms` that defines `name` (as logged by `experiment`, when given)."""
    for term in terms:
        if term.matches(name) and (experiment is None or not term.experiments
                                   or experiment in term.experiments):
            return term
    return None
