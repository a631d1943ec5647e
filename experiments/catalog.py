"""The catalog: experiment name → config class, title, description, and its run function.

Found by convention: every folder `experiments/<package>/` other than `core/` is one experiment,
with `config.py` (NAME, TITLE and Config: pydantic, no torch) and `experiment.py` (its
`run(config, tracker, ctx)`, PyTorch). The code is imported only when a run starts, so the API
lists and validates experiments without torch; a test walks the catalog and checks each
experiment module runs the config next to it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from experiments import glossary
from experiments.core.config import ExperimentConfig
from experiments.glossary import Term


@dataclass(frozen=True)
class Runnable:
    """What the catalog says of anything `phenolab run` runs (an experiment, a suite of them):
    its name, title and config."""

    name: str
    title: str
    config_cls: type[ExperimentConfig]

    @property
    def description(self) -> str:
        return " ".join((self.config_cls.__doc__ or "").split())

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        return self.config_cls.PRESETS

    def describe(self) -> dict[str, Any]:
        """The JSON form shown by `phenolab list` and the API."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "defaults": self.config_cls().model_dump(mode="json"),
            "presets": self.presets,
            "schema": self.config_cls.model_json_schema(),
        }


@dataclass(frozen=True)
class Entry(Runnable):
    package: str  # experiments.<folder>: its config.py and experiment.py
    own_terms: tuple[Term, ...] = ()  # the names only this experiment logs (its glossary.toml)

    @property
    def terms(self) -> list[Term]:
        """Every name this experiment may log: the shared ones and its own."""
        return [*glossary.SHARED, *self.own_terms]

    def run_function(self) -> Callable[..., Any]:
        return importlib.import_module(f"{self.package}.experiment").run

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "glossary": [term.describe() for term in self.terms]}


class UnknownExperiment(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown experiment {self.name!r}; known: {', '.join(names())}"


NOT_EXPERIMENTS = {"core"}


@cache
def entries() -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.ispkg or info.name in NOT_EXPERIMENTS:
            continue
        package = f"experiments.{info.name}"
        module = importlib.import_module(f"{package}.config")
        own = glossary.load(Path(module.__file__).with_name("glossary.toml"), module.NAME)
        found[module.NAME] = Entry(module.NAME, module.TITLE, module.Config, package, own)
    return dict(sorted(found.items()))


def names() -> list[str]:
    return list(entries())


def get(name: str) -> Entry:
    try:
        return entries()[name]
    except KeyError:
        raise UnknownExperiment(name) from None


def glossary_terms() -> list[Term]:
    """The whole glossary: the shared names, then each experiment's own."""
    return [*glossary.SHARED, *(t for e in entries().values() for t in e.own_terms)]


def lookup(name: str, experiment: str | None = None) -> Term | None:
    """The term that defines a logged `name` (as logged by `experiment`, when given)."""
    return glossary.find(glossary_terms(), name, experiment)
