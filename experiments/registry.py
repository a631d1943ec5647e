"""The catalog: experiment name → config class, title, description, and its run function.

Discovered from `experiments/configs/<module>.py` (each defines NAME, TITLE and Config); the
PyTorch code lives in `experiments/<module>.py` and is imported only when a run starts, so the
API can list and validate experiments without torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from experiments import configs
from experiments.configs import ExperimentConfig


@dataclass(frozen=True)
class Entry:
    name: str
    title: str
    module: str
    config_cls: type[ExperimentConfig]

    @property
    def description(self) -> str:
        return " ".join((self.config_cls.__doc__ or "").split())

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        return self.config_cls.PRESETS

    def run_function(self) -> Callable[..., Any]:
        return importlib.import_module(f"experiments.{self.module}").run

    def describe(self) -> dict[str, Any]:
        """The JSON form shown by `phenolab list` and `GET /experiments`."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "defaults": self.config_cls().model_dump(mode="json"),
            "presets": self.presets,
            "schema": self.config_cls.model_json_schema(),
        }


class UnknownExperiment(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown experiment {self.name!r}; known: {', '.join(names())}"


@cache
def entries() -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for info in pkgutil.iter_modules(configs.__path__):
        module = importlib.import_module(f"{configs.__name__}.{info.name}")
        found[module.NAME] = Entry(module.NAME, module.TITLE, info.name, module.Config)
    return dict(sorted(found.items()))


def names() -> list[str]:
    return list(entries())


def get(name: str) -> Entry:
    try:
        return entries()[name]
    except KeyError:
        raise UnknownExperiment(name) from None
