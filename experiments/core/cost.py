"""What a job would take, estimated from its config alone (no torch): the memory it holds at
its peak and the floating-point operations it does in all. Per-field bounds do not bound a job
(8 models of 16 layers of 8192 units are 8·10⁹ parameters, each field within its bounds), so
the service refuses a config whose estimate is over its limits (`service.jobs.validate`).

The estimate is an upper bound of the usual kind, not a measurement: float32 everywhere; the
weights, their gradients and the optimizer's state per parameter, for every model trained
together; the activations (and their gradients) of one batch; the dataset as tensors; 6
operations per parameter and example seen (forward 2, backward 4).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BYTES = 4  # float32
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "rmsprop": 1, "adam": 2}  # values per parameter
TRAIN_EXAMPLES = {"mnist": 60_000, "cifar10": 50_000}
TEST_EXAMPLES = {"mnist": 10_000, "cifar10": 10_000}
POSITIONS = {"mnist": 28 * 28, "cifar10": 32 * 32}  # where a convolution applies its weights


def equal_width(params: int, depth: int, in_dim: int, out_dim: int) -> int:
    """The width of `depth` equal hidden layers that an MLP of about `params` parameters has:
    the positive root of (depth−1)·w² + (in + depth + out)·w + out = params."""
    a, b, c = depth - 1, in_dim + depth + out_dim, out_dim - params
    width = -c / b if a == 0 else (-b + (b * b - 4 * a * c) ** 0.5) / (2 * a)
    return max(1, round(width))


@dataclass(frozen=True)
class JobCost:
    """A job's peak memory (bytes), its work (floating-point operations), and the config
    fields that drive them, for a refusal to name."""

    memory_bytes: int
    flops: float
    fields: tuple[str, ...]

    def describe(self) -> str:
        return f"~{self.memory_bytes / 2**30:,.1f} GiB of memory, ~{self.flops / 1e12:,.1f} TFLOPs"

    @staticmethod
    def one_after_another(costs: Iterable[JobCost], fields: Sequence[str] = ()) -> JobCost:
        """Parts run in turn: the largest one's memory, the sum of their work."""
        found = list(costs)
        return JobCost(max((c.memory_bytes for c in found), default=0),
                       sum(c.flops for c in found),
                       tuple(dict.fromkeys([*fields, *(f for c in found for f in c.fields)])))


@dataclass(frozen=True)
class Training:
    """`models` copies of one network trained together (a vmap ensemble: seeds, rates, inits):
    `params` parameters and `units` activations per example each, batches of `batch` examples,
    `examples` examples seen by each model in all. `per_example` is the operations per
    parameter and example over the usual 6 (a convolution applies its weights at every
    position)."""

    params: int
    units: int
    models: int
    batch: int
    examples: int
    optimizer: str = "adam"
    per_example: int = 1

    @property
    def memory_bytes(self) -> int:
        weights = self.params * (2 + OPTIMIZER_STATES[self.optimizer])
        return BYTES * self.models * (weights + 2 * self.batch * self.units)

    @property
    def flops(self) -> float:
        return 6.0 * self.params * self.per_example * self.examples * self.models

    def cost(self, fields: Sequence[str], held_bytes: int = 0) -> JobCost:
        """This training's cost, with `held_bytes` more held beside it (data, records)."""
        return JobCost(self.memory_bytes + held_bytes, self.flops, tuple(fields))
