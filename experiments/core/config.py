"""The base of every experiment config: pydantic models importable without torch.

The API validates requests against the configs, so each experiment's `config.py` (built on
the bases and field types here) stays apart from its PyTorch `experiment.py`. Every numeric
field is bounded so that one request cannot take the server down.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import core_schema

from experiments.core.cost import (
    BYTES,
    TEST_EXAMPLES,
    TRAIN_EXAMPLES,
    JobCost,
    Training,
)

DeviceName = Literal["auto", "cpu", "cuda"]
OptimizerName = Literal["sgd", "momentum", "adam", "rmsprop"]
DatasetName = Literal["mnist", "cifar10"]
TargetName = Literal["sinc", "sign", "exp_sin2", "sin_linear", "five_sin"]
ActivationName = Literal["relu", "tanh", "sigmoid"]

Epochs = Annotated[int, Field(ge=1, le=100_000)]
Steps = Annotated[int, Field(ge=1, le=1_000_000)]
BatchSize = Annotated[int, Field(ge=1, le=100_000)]
LearningRate = Annotated[float, Field(gt=0.0, le=10.0)]
Width = Annotated[int, Field(ge=1, le=8192)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
TrainSubset = Annotated[int, Field(ge=10, le=60_000, description="first N training examples")]
TestSubset = Annotated[int, Field(ge=10, le=10_000, description="first N test examples")]


INPUT_SIZES = {"mnist": 28 * 28, "cifar10": 3 * 32 * 32}  # flattened, for counting without torch


def mlp_params(in_dim: int, hidden: Sequence[int], out_dim: int) -> int:
    """Closed form of `count_params(mlp(...))` (weights and biases), without torch: configs
    bound what a request may build."""
    dims = [in_dim, *hidden, out_dim]
    return sum((a + 1) * b for a, b in zip(dims, dims[1:]))


def mlp_training(in_dim: int, hidden: Sequence[int], out_dim: int, models: int, batch: int,
                 examples: int, optimizer: str) -> Training:
    """`models` copies of an MLP trained together (see `experiments.core.cost`)."""
    return Training(mlp_params(in_dim, hidden, out_dim), in_dim + sum(hidden) + out_dim, models,
                    batch, examples, optimizer)


def distinct(values: list[Any]) -> list[Any]:
    """Reject repeated entries in a list of variants: each becomes one child run, by name."""
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"each value at most once (repeated: {', '.join(repeated)})")
    return values


class DistinctItems:
    """The annotation of a list of variants: `distinct`, declared as `uniqueItems` in the JSON
    Schema (the API's document), so that a schema-valid request is not refused for it."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(distinct, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> Any:
        return {**handler(schema), "uniqueItems": True}


Distinct = DistinctItems()


class ExperimentConfig(BaseModel):
    """Fields every experiment shares: the seed and the device. Strict: a request is JSON, so a
    field takes its JSON type only (no `"100"` or `20.0` for an integer, no `1` or `"yes"` for
    a boolean, no `true` for a number)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    seed: Seed = Field(0, description="seed of every random choice")
    seeds: int = Field(3, ge=1, le=16, description="repetitions of every variant, from seed, "
                                                   "seed+1, …, trained together")
    reuse: bool = Field(True, description="load a finished model with the same training key "
                                          "(see README: reuse) instead of training it again")
    device: DeviceName = Field("auto", description="auto = cuda when available, else cpu")

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    COST_FIELDS: ClassVar[tuple[str, ...]] = ("seeds",)  # what the job's size grows with

    @property
    def ensemble(self) -> int:
        """Copies of each model trained together besides the seeds (rates, inits)."""
        return 1

    def trainings(self) -> list[Training]:
        """The trainings the job does, one after another (see `experiments.core.cost`)."""
        raise NotImplementedError(f"{type(self).__name__} has no estimate of its trainings")

    def held_bytes(self) -> int:
        """Memory the job holds beside its trainings (data, records kept for figures)."""
        return 0

    def cost(self) -> JobCost:
        """The job's estimated peak memory and work, torch-free: what the service bounds."""
        held, fields = self.held_bytes(), [f for f in self.COST_FIELDS if f in type(self).model_fields]
        return JobCost.one_after_another((part.cost(fields, held) for part in self.trainings()),
                                         fields)

    @field_validator("*", mode="before")
    @classmethod
    def _arrays_for_tuples(cls, value: Any, info: ValidationInfo) -> Any:
        """JSON has no tuples: a JSON array is what a request (or `--set`, or a job's stored
        config) gives a tuple field, and strict mode takes a list for a tuple in JSON mode only
        (the configs are validated as Python values)."""
        if isinstance(value, list) and _is_tuple(cls.model_fields[info.field_name].annotation):
            return tuple(value)
        return value


def _bare(annotation: Any) -> Any:
    """The type under `Annotated[…]` and `… | None`; a real union stays a union."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _bare(members[0])
    return annotation


def _is_tuple(annotation: Any) -> bool:
    return get_origin(_bare(annotation)) is tuple


def hidden_widths(default: list[int], description: str = "hidden widths of the MLP") -> Any:
    """The `hidden` field of an MLP: 1 to 8 bounded widths."""
    return Field(default_factory=lambda: list(default), min_length=1, max_length=8,
                 description=description)


COURSE_MLP = [256, 256, 256]  # the course's model: 3 hidden layers of 256


class DatasetConfig(ExperimentConfig):
    """Fields of every experiment on an image dataset: which one, and how much of each split.
    Its cost, unless a subclass says otherwise: an MLP per architecture (`hidden`), `seeds` ×
    `ensemble` copies trained together in batches of `batch_size`, `examples` examples each."""

    dataset: DatasetName = "mnist"
    train_subset: TrainSubset | None = None
    test_subset: TestSubset | None = None

    COST_FIELDS: ClassVar = ("hidden", "seeds", "batch_size", "dataset", "train_subset")
    BATCH_STUDY_COST: ClassVar = ("hidden", "batch_sizes", "seeds", "budget", "steps", "epochs",
                                  "dataset", "train_subset")

    @property
    def train_examples(self) -> int:
        return self.train_subset or TRAIN_EXAMPLES[self.dataset]

    def held_bytes(self) -> int:
        """Both splits, as float32 tensors."""
        test = self.test_subset or TEST_EXAMPLES[self.dataset]
        return BYTES * INPUT_SIZES[self.dataset] * (self.train_examples + test)

    def mlp(self, hidden: Sequence[int], models: int, batch: int, examples: int) -> Training:
        """`models` copies of the classifier MLP of `hidden` trained together."""
        return mlp_training(INPUT_SIZES[self.dataset], hidden, 10, models, batch, examples,
                            self.optimizer)

    def architectures(self) -> list[list[int]]:
        return [self.hidden]

    def trainings(self) -> list[Training]:
        return [self.mlp(hidden, self.seeds * self.ensemble, self.batch_size, self.examples)
                for hidden in self.architectures()]

    def per_batch_size(self, sizes: Sequence[int | str]) -> list[Training]:
        """A batch-size study: one training per batch size (`"full"`: the whole training set),
        each model seeing `steps` batches (a `budget` of steps), else `epochs` passes."""
        full = [self.train_examples if size == "full" else int(size) for size in sizes]
        return [self.mlp(self.hidden, self.seeds, batch, batch * self.steps
                         if self.budget == "steps" else self.train_examples * self.epochs)
                for batch in full]


class SupervisedConfig(DatasetConfig):
    """A classifier trained on the dataset with one optimizer and rate, in mini-batches, for a
    budget of epochs (`TrainSpec.of` reads these fields)."""

    optimizer: OptimizerName = "adam"
    lr: LearningRate = 1e-3
    batch_size: BatchSize = 128
    epochs: Epochs = 10

    COST_FIELDS: ClassVar = (*DatasetConfig.COST_FIELDS, "epochs")

    @property
    def examples(self) -> int:
        return self.train_examples * self.epochs


class DynamicsConfig(DatasetConfig):
    """Fields of the training-dynamics experiments: an MLP on a dataset, trained for a budget
    of optimizer steps (the course trained for fixed step counts)."""

    hidden: list[Width] = hidden_widths([256, 256])
    optimizer: OptimizerName = "sgd"
    steps: Steps = 3000
    eval_every: Steps = Field(100, description="steps between evaluations")

    COST_FIELDS: ClassVar = (*DatasetConfig.COST_FIELDS, "steps")

    @property
    def examples(self) -> int:
        return self.batch_size * self.steps

    @property
    def schedule(self) -> dict[str, Any]:
        """`steps` optimizer steps, evaluated every `eval_every` steps (see `TrainSpec.of`)."""
        return {"epochs": None, "max_steps": self.steps, "eval_every": self.eval_every,
                "eval_unit": "step"}


class Budget(ExperimentConfig):
    """What each model of a batch-size comparison gets the same of: `epochs` (passes over the
    data), `steps` (optimizer steps), or `target_loss` — train until the full-pass training
    loss reaches `target_loss`, checked every epoch, at most `epochs` epochs (Keskar et al.
    2017 compare batch sizes at a comparable training loss; equal epochs give a large batch
    far fewer steps, so it is also less trained)."""

    budget: Literal["epochs", "steps", "target_loss"] = "target_loss"
    epochs: Epochs = Field(30, description="the budget (budget=epochs) or the cap (target_loss)")
    steps: Steps = Field(3000, description="optimizer steps of every model (budget=steps)")
    target_loss: float = Field(0.05, gt=0.0, le=10.0,
                               description="full-pass training loss to reach (budget=target_loss)")

    @property
    def schedule(self) -> dict[str, Any]:
        """`steps` steps (budget=steps), else at most `epochs` epochs (see `TrainSpec.of`)."""
        return {"epochs": None, "max_steps": self.steps} if self.budget == "steps" else {}


class BatchSizeStudy(DatasetConfig, Budget):
    """One MLP trained once per batch size (`seeds` seeds each, trained together as a vmap
    ensemble), same optimizer and learning rate, the same `budget` for all."""

    hidden: list[Width] = hidden_widths(COURSE_MLP)
    batch_sizes: Annotated[list[BatchSize], Distinct] = Field(
        default_factory=lambda: [16, 64, 256, 1024, 4096], min_length=1, max_length=12)
    optimizer: OptimizerName = "adam"
    lr: LearningRate = 1e-3
    measure_subset: TrainSubset = Field(
        10_000, description="first N training examples the train-set measures use")

    COST_FIELDS: ClassVar = DatasetConfig.BATCH_STUDY_COST

    def trainings(self) -> list[Training]:
        return self.per_batch_size(self.batch_sizes)


def field_errors(error: ValidationError, model: type[BaseModel]) -> list[dict[str, str]]:
    """Pydantic errors of validating `model` as [{field, reason}], each field once and named
    as the user wrote it; the offending input is not echoed (it may be huge, or not JSON at
    all, like inf)."""
    reasons: dict[str, list[str]] = {}
    for e in error.errors():
        reasons.setdefault(".".join(map(str, user_path(model, e["loc"]))) or "config",
                           []).append(e["msg"])
    return [{"field": field, "reason": " or ".join(found)} for field, found in reasons.items()]


def user_path(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[int | str]:
    """An error's location without the names pydantic adds for the member of a union a value
    was tried as (`batch_sizes.0.constrained-int` is the user's `batch_sizes.0`): the
    location is walked along the model's types."""
    path: list[int | str] = []
    node: Any = model
    for part in loc:
        node = _bare(node)
        if get_origin(node) in (Union, UnionType):
            node = Any  # this part names a member tried, not a field of the user's
            continue
        path.append(part)
        node = _member(node, part)
    return path


def _member(node: Any, part: int | str) -> Any:
    """The type at `part` (a field name or an index) inside `node`."""
    if isinstance(node, type) and issubclass(node, BaseModel):
        found = node.model_fields.get(str(part))
        return found.annotation if found else Any
    args = get_args(node)
    if get_origin(node) is tuple and isinstance(part, int) and part < len(args):
        return args[part]
    return args[-1] if get_origin(node) in (list, dict) and args else Any


def one_line(errors: list[dict[str, str]]) -> str:
    """[{field, reason}] as `field: reason; …`: what the CLI prints and the API's `detail`."""
    return "; ".join(f"{e['field']}: {e['reason']}" for e in errors)


def build_config(cls: type[ExperimentConfig], preset: str | None = None,
                 overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Defaults, then the preset's values, then the caller's overrides — validated once."""
    values: dict[str, Any] = {}
    if preset is not None:
        if not isinstance(preset, str) or preset not in cls.PRESETS:  # a request may send [1]
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(cls.PRESETS) or 'none'}")
        values.update(cls.PRESETS[preset])
    values.update(overrides or {})
    return cls.model_validate(values)


def flatten(config: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → {"a.b": value}, the form MLflow params take."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
