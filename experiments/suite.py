"""Suites: the experiments of a homework run as one job, laid out in its parts. No torch here,
so the API validates a suite's request as it does an experiment's.

`hw1` is the whole of HW1: every experiment of the catalog, in the homework's order. Its config
chooses a subset, one preset for all, and per-experiment overrides; each chosen experiment's
own config is built from those (defaults, then the preset, then the suite's seed and device,
then its overrides) and validated with the suite's, so a bad override is refused before
anything runs (`overrides.sensitivity.epochs: …`). The runner runs a suite as one MLflow
parent run with each experiment a nested run (`experiments.runner.run_suite`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from experiments import catalog
from experiments.core.config import Distinct, ExperimentConfig, Seed, build_config, user_path
from experiments.core.cost import JobCost


@dataclass(frozen=True)
class Part:
    """A part of the homework: its label, its title, its experiments in order."""

    label: str
    title: str
    experiments: tuple[str, ...]


FAILED_TAG = "phenolab.failed_experiments"  # on a suite's run: the experiments that failed

HW1_PARTS = (
    Part("HW1-1", "Deep vs shallow", ("function-fit", "task-fit")),
    Part("HW1-2", "Optimization", ("weight-trajectory", "gradient-norm", "minimal-ratio")),
    Part("HW1-3", "Generalization", ("random-labels", "param-count", "interpolation",
                                     "sensitivity", "sharpness")),
    Part("Dynamics", "Training dynamics",
         ("weight-init", "batch-size", "learning-rate", "early-stopping")),
)
HW1_EXPERIMENTS = tuple(name for part in HW1_PARTS for name in part.experiments)
Seeds = Annotated[(int, *ExperimentConfig.model_fields["seeds"].metadata)]  # with their bounds
Member = Literal[HW1_EXPERIMENTS]  # type: ignore[valid-type]  # an experiment of HW1, by name


def common_presets(names: tuple[str, ...]) -> tuple[str, ...]:
    """The presets every one of these experiments has (a suite's preset applies to all)."""
    found = [set(catalog.get(name).presets) for name in names]
    return tuple(sorted(set.intersection(*found)))


PresetName = Literal[common_presets(HW1_EXPERIMENTS)]  # type: ignore[valid-type]


class SuiteConfig(ExperimentConfig):
    """Every experiment of HW1 as one job: one MLflow parent run, each experiment a nested run
    with its variants nested under it, in the homework's order. `experiments` picks a subset,
    `preset` applies one preset to each, `overrides` sets fields of one experiment
    (`{"sensitivity": {"epochs": 2}}`); the suite's `device` and `reuse`, and its `seed` and
    `seeds` when set, apply to every experiment unless its overrides set them. An experiment that fails is
    recorded FAILED and the next one runs."""

    seed: Seed | None = Field(None, description="when set, every experiment's seed (else its own)")
    seeds: Seeds | None = Field(None, description="when set, every experiment's seeds (else its own)")

    experiments: Annotated[list[Member], Distinct] = Field(
        default_factory=lambda: list(HW1_EXPERIMENTS), min_length=1,
        description="the experiments to run, by name (run in the homework's order)")
    preset: PresetName | None = Field(None, description="a preset every chosen experiment has")
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per experiment, config fields that replace its own")

    PRESETS: ClassVar = {name: {"preset": name} for name in get_args(PresetName)}

    @model_validator(mode="after")
    def _members_valid(self) -> SuiteConfig:
        self.configs()  # each chosen experiment's config, validated now; errors name their field
        return self

    def configs(self) -> dict[str, ExperimentConfig]:
        """Each chosen experiment's config, in the homework's order. A ValidationError names
        each bad value by its place in the suite's config (`overrides.<name>.<field>`)."""
        errors: list[InitErrorDetails] = [
            _error(("overrides", name), f"not among the chosen experiments ({', '.join(self.experiments)})",
                   self.overrides[name])
            for name in self.overrides if name not in self.experiments]
        configs: dict[str, ExperimentConfig] = {}
        for name in (n for n in HW1_EXPERIMENTS if n in self.experiments):
            shared = {"seed": self.seed, "seeds": self.seeds, "device": self.device,
                      "reuse": self.reuse}
            values = {**{k: v for k, v in shared.items() if v is not None},
                      **self.overrides.get(name, {})}
            cls = catalog.get(name).config_cls
            try:
                configs[name] = build_config(cls, self.preset, values)
            except ValidationError as error:
                errors += [_error(("overrides", name, *user_path(cls, e["loc"])), e["msg"], e["input"])
                           for e in error.errors()]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return configs

    def cost(self) -> JobCost:
        """Its experiments one after another, each named by its place in the suite's config."""
        return JobCost.one_after_another(
            JobCost(part.memory_bytes, part.flops, tuple(f"overrides.{name}.{f}" for f in part.fields))
            for name, part in ((name, config.cost()) for name, config in self.configs().items()))


def _error(loc: tuple[Any, ...], reason: str, value: Any) -> InitErrorDetails:
    """One error of a suite's config at `loc`; the reason is a value, never a template."""
    return InitErrorDetails(type=PydanticCustomError("suite", "{reason}", {"reason": reason}),
                            loc=loc, input=value)


@dataclass(frozen=True)
class Suite(catalog.Runnable):
    """Experiments of the catalog run as one job, in the parts of their homework."""

    parts: tuple[Part, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The JSON form of `GET /suites/{name}`."""
        return {**super().describe(),
                "parts": [{"label": p.label, "title": p.title, "experiments": list(p.experiments)}
                          for p in self.parts]}


SUITES = {"hw1": Suite("hw1", "HW1: the whole homework", SuiteConfig, HW1_PARTS)}


class UnknownRunnable(catalog.UnknownExperiment):
    def __str__(self) -> str:
        return (f"unknown experiment or suite {self.name!r}; experiments: "
                f"{', '.join(catalog.names())}; suites: {', '.join(SUITES)}")


def runnable(name: str) -> catalog.Entry | Suite:
    """What `phenolab run NAME`, a job or `experiments.run` runs: an experiment or a suite."""
    if name in SUITES:
        return SUITES[name]
    if name in catalog.entries():
        return catalog.get(name)
    raise UnknownRunnable(name)


def part_of(name: str) -> Part | None:
    """The homework part an experiment belongs to."""
    return next((p for s in SUITES.values() for p in s.parts if name in p.experiments), None)
