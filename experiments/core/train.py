"""The one training loop, for a single model and for N same-shape models trained at once.

Models are always held as a stack: parameters with a leading model dimension
(`torch.func.stack_module_state`), the forward pass `vmap`-ed over it (a stack of one calls the
module directly). Each model keeps its own data order, drawn from its own seed, so a model
trained in an ensemble follows the same path as the same model trained alone.

Inside the step loop nothing is read back to the host: the running loss, the first
non-finite step and whatever a hook keeps per step stay on the device and are read once per
evaluation. What one experiment needs of the loop (per-model learning rates, a loss threshold
that counts as divergence, the convergence rule, per-step records, early stopping) is a `Hook`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from experiments.core.context import RunContext
from experiments.core.data import Split

Params = dict[str, Tensor]
Status = Literal["finished", "converged", "reached", "diverged", "stopped"]
SPEC_FIELDS = ("optimizer", "lr", "batch_size", "epochs")  # what a config's field of that name sets
MOMENTUM = 0.9  # of the "momentum" optimizer (SGD with heavy-ball momentum)
EVAL_CHUNK = 8192  # samples per forward pass of an evaluation, shared by the models


@dataclass
class TrainSpec:
    """How to train: the optimizer and its rate, the batch (`batch_size=None` is full batch),
    the budget — `epochs`, cut short by `max_steps` (`epochs=None`: `max_steps` steps alone) —
    the loss, and when to evaluate: every `eval_every` epochs (or steps with
    `eval_unit="step"`), plus the initial weights with `eval_at_start` (epoch 0, step 0: the
    `evals` splits only, no mini-batch has been seen)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int | None = None
    epochs: int | None = 1
    max_steps: int | None = None
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    eval_every: int = 1
    eval_unit: Literal["epoch", "step"] = "epoch"
    eval_at_start: bool = False

    @classmethod
    def of(cls, config: object, **changes: Any) -> TrainSpec:
        """The spec a config asks for — its `optimizer`, `lr`, `batch_size` and `epochs`, those
        it has, then its `schedule` (a family's budget, e.g. a number of steps) — then
        `changes`."""
        values: dict[str, Any] = {key: getattr(config, key) for key in SPEC_FIELDS if hasattr(config, key)}
        return cls(**{**values, **getattr(config, "schedule", {}), **changes})


@dataclass
class ModelResult:
    """How a model's training ended, and `history`: one row per evaluation with `epoch`,
    `step`, `x` (the MLflow step: epoch or step, per `eval_unit`) and the metrics; `steps`
    holds per-step series a hook kept (see `StepRecords`)."""

    status: Status = "finished"
    stop_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class EvalEvent:
    """Handed to the hooks after each evaluation; `metrics[i]` belongs to model `active[i]`;
    `results` are every model's, by original index."""

    epoch: int
    step: int
    x: int  # the value used as MLflow step: epoch or step, per `eval_unit`
    active: list[int]
    metrics: list[dict[str, float]]
    stack: ModelStack
    results: list[ModelResult] = field(default_factory=list)

    def state_dict(self, model: int) -> Params:
        """Weights of model `model` (an original index) at this evaluation, detached."""
        return self.stack.state_dict(self.active.index(model))


class Hook:
    """Behaviour an experiment adds to the loop; every method is a no-op here. Per-step methods
    work on device tensors of the active models (no host reads); `keep(rows)` says which rows
    of them go on after some models stopped, for a hook that holds per-model state."""

    def objective(self, losses: Tensor) -> Tensor:
        """What is backpropagated, per model ([N] → [N]); the losses themselves by default."""
        return losses

    def diverges(self, losses: Tensor) -> Tensor | None:
        """Which models' step losses count as diverged beyond NaN/inf (a bool mask [N])."""
        return None

    def before_step(self, stack: ModelStack) -> None:
        """Right before the optimizer step, gradients computed."""

    def after_step(self, step: int, losses: Tensor, stack: ModelStack) -> None:
        """After the optimizer step `step`; gradients are still on the parameters."""

    def on_eval(self, event: EvalEvent) -> Mapping[int, Status]:
        """After an evaluation: models (original indices) to stop now, with their status."""
        return {}

    def keep(self, rows: Tensor) -> None:
        """Only the active models at `rows` go on."""

    def key(self, row: int) -> object | None:
        """What this hook does to model `row`, as JSON-able data for its training key (see
        `core.reuse`); None: it cannot say (a callback), so its models always train."""
        return None


def make_optimizer(name: str, params: Iterable[Tensor], lr: float) -> torch.optim.Optimizer:
    """Optimizers by name; each updates element-wise, so a stack of models trains as if alone."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def per_model_loss(kind: str, out: Tensor, y: Tensor) -> Tensor:
    """Mean loss over the batch, per model: out [N, B, ...], y [N, B, ...] → [N]."""
    n = out.shape[0]
    if kind == "cross_entropy":
        return F.cross_entropy(out.flatten(0, 1), y.flatten(0, 1), reduction="none").view(n, -1).mean(1)
    return ((out - y) ** 2).flatten(1).mean(1)


def per_model_accuracy(out: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct argmax predictions per model: [N]."""
    return (out.argmax(-1) == y).float().flatten(1).mean(1)


class ModelStack:
    """N same-shape models as one set of stacked leaf tensors, called through `vmap`."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.module = models[0]
        params, buffers = stack_module_state(list(models))
        self.params: Params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        self.buffers: Params = {k: v.detach().clone() for k, v in buffers.items()}

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def _call(self, params: Params, buffers: Params, x: Tensor) -> Tensor:
        return functional_call(self.module, (params, buffers), (x,))

    def forward(self, x: Tensor) -> Tensor:
        """x [N, B, ...] → outputs [N, B, ...], model i on x[i]."""
        if len(self) == 1:
            one = {k: v[0] for k, v in self.params.items()}
            return self._call(one, {k: v[0] for k, v in self.buffers.items()}, x[0]).unsqueeze(0)
        return torch.vmap(self._call)(self.params, self.buffers, x)

    def state_dict(self, i: int) -> Params:
        return {k: v[i].detach().clone() for k, v in {**self.params, **self.buffers}.items()}

    def keep(self, rows: Tensor, optimizer: torch.optim.Optimizer,
             spec: TrainSpec) -> torch.optim.Optimizer:
        """Drop the models not in `rows`, carrying the optimizer state of the others."""
        n = len(self)
        old = list(self.params.values())
        self.params = {k: v[rows].detach().clone().requires_grad_() for k, v in self.params.items()}
        self.buffers = {k: v[rows].clone() for k, v in self.buffers.items()}
        new_opt = make_optimizer(spec.optimizer, self.params.values(), spec.lr)
        for p_old, p_new in zip(old, self.params.values()):
            state = optimizer.state.get(p_old)
            if state:
                new_opt.state[p_new] = {
                    key: value[rows] if torch.is_tensor(value) and value.dim() and value.shape[0] == n
                    else value for key, value in state.items()}
        return new_opt

    @torch.no_grad()
    def evaluate(self, split: Split, loss: str, chunk: int = EVAL_CHUNK) -> tuple[Tensor, Tensor]:
        """Mean loss and accuracy of every model on the whole split at the current weights."""
        n_models, total = len(self), len(split)
        chunk = max(256, chunk // n_models)
        loss_sum = torch.zeros(n_models, device=split.x.device)
        correct = torch.zeros(n_models, device=split.x.device)
        for start in range(0, total, chunk):
            x, y = split.x[start:start + chunk], split.y[start:start + chunk]
            out = self.forward(x.expand(n_models, *x.shape))
            ys = y.expand(n_models, *y.shape)
            loss_sum += per_model_loss(loss, out, ys) * x.shape[0]
            if loss == "cross_entropy":
                correct += per_model_accuracy(out, ys) * x.shape[0]
        return loss_sum / total, correct / total


def seeded(factory: Callable[[], nn.Module], seeds: Sequence[int],
           device: torch.device | str) -> list[nn.Module]:
    """One model per seed, each initialised right after `torch.manual_seed(seed)`."""
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(factory().to(device))
    return models


def grad_norms(params: Mapping[str, Tensor]) -> Tensor:
    """2-norm of the gradient over all parameters, per model: [N]."""
    squares = [p.grad.pow(2).flatten(1).sum(1) for p in params.values() if p.grad is not None]
    return torch.stack(squares).sum(0).sqrt()


class _Training:
    """The state of one `train` call: the stack and its optimizer, the active models, what
    accumulates on the device between evaluations, and the results."""

    def __init__(self, models: Sequence[nn.Module], data: Split, spec: TrainSpec,
                 seeds: Sequence[int], hooks: Sequence[Hook]) -> None:
        self.models, self.data, self.spec, self.hooks = models, data, spec, hooks
        self.device = data.x.device
        self.stack = ModelStack(models)
        self.optimizer = make_optimizer(spec.optimizer, self.stack.params.values(), spec.lr)
        self.results = [ModelResult() for _ in models]
        self.active = list(range(len(models)))
        self.generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        self.order: Tensor | None = None  # this epoch's data order, one row per active model
        self.first_bad = torch.full((len(models),), -1, dtype=torch.long, device=self.device)
        self.step = 0
        self.reset_running()

    def reset_running(self) -> None:
        self.running = torch.zeros(len(self.active), device=self.device)
        self.running_acc = torch.zeros(len(self.active), device=self.device)
        self.since = 0

    def shuffle(self) -> None:
        """Each active model's own data order for the next epoch."""
        n = len(self.data)
        self.order = torch.stack([torch.randperm(n, generator=self.generators[m], device=self.device)
                                  for m in self.active])

    def batch(self, start: int, size: int) -> tuple[Tensor, Tensor]:
        """The next mini-batch of every active model ([N, B, ...]), or the whole split."""
        x, y = self.data.x, self.data.y
        if size >= len(self.data):
            return x.expand(len(self.active), *x.shape), y.expand(len(self.active), *y.shape)
        idx = self.order[:, start:start + size]
        return _rows(x, idx), _rows(y, idx)

    def take_step(self, xb: Tensor, yb: Tensor) -> None:
        """One optimizer step of every active model on its own batch; no host reads."""
        out = self.stack.forward(xb)
        losses = per_model_loss(self.spec.loss, out, yb)
        objective = losses
        for hook in self.hooks:
            objective = hook.objective(objective)
        self.optimizer.zero_grad(set_to_none=True)
        objective.sum().backward()
        for hook in self.hooks:
            hook.before_step(self.stack)
        self.optimizer.step()
        self.step += 1
        detached = losses.detach()
        self.running += detached
        if self.spec.loss == "cross_entropy":
            self.running_acc += per_model_accuracy(out.detach(), yb)
        self.since += 1
        bad = ~torch.isfinite(detached)
        for hook in self.hooks:
            if (more := hook.diverges(detached)) is not None:
                bad |= more
        self.first_bad = torch.where((self.first_bad < 0) & bad, self.step, self.first_bad)
        for hook in self.hooks:
            hook.after_step(self.step, detached, self.stack)

    def metrics(self, evals: Mapping[str, Split]) -> list[dict[str, float]]:
        """Per active model, read to the host: `running_loss`/`running_acc` since the last
        evaluation and `<split>_loss`/`<split>_acc` of every split in `evals`."""
        values: dict[str, Tensor] = {}
        if self.since:
            values["running_loss"] = self.running / self.since
            if self.spec.loss == "cross_entropy":
                values["running_acc"] = self.running_acc / self.since
        for name, split in evals.items():
            values[f"{name}_loss"], acc = self.stack.evaluate(split, self.spec.loss)
            if self.spec.loss == "cross_entropy":
                values[f"{name}_acc"] = acc
        host = {k: v.tolist() for k, v in values.items()}
        return [{k: v[row] for k, v in host.items() if math.isfinite(v[row])}
                for row in range(len(self.active))]

    def evaluate(self, epoch: int, evals: Mapping[str, Split],
                 sink: Callable[[int, int, dict[str, float]], None] | None) -> dict[str, float]:
        """Record an evaluation, stop the models that diverged or that a hook stops; returns
        what the progress bar shows."""
        x = epoch if self.spec.eval_unit == "epoch" else self.step
        metrics = self.metrics(evals)
        stops: dict[int, tuple[Status, int]] = {}
        for row, (model, bad) in enumerate(zip(self.active, self.first_bad.tolist())):
            if bad >= 0:
                stops[model] = ("diverged", bad)
                self.results[model].status, self.results[model].stop_step = stops[model]
                continue
            self.results[model].history.append({"epoch": epoch, "step": self.step, "x": x, **metrics[row]})
            if sink:
                sink(model, x, metrics[row])
        event = EvalEvent(epoch, self.step, x, list(self.active), metrics, self.stack, self.results)
        for hook in self.hooks:
            for model, status in hook.on_eval(event).items():
                stops.setdefault(model, (status, self.step))
        self.stop(stops)
        self.reset_running()
        return {"loss": metrics[0]["running_loss"]} if metrics and "running_loss" in metrics[0] else {}

    def stop(self, stops: Mapping[int, tuple[Status, int]]) -> None:
        """End the models in `stops` (weights written back) and go on with the others."""
        if not stops:
            return
        for row, model in enumerate(self.active):
            if model in stops:
                self.results[model].status, self.results[model].stop_step = stops[model]
                _write_back(self.models[model], self.stack.state_dict(row))
        rows = torch.tensor([r for r, m in enumerate(self.active) if m not in stops], device=self.device)
        self.active = [m for m in self.active if m not in stops]
        if self.active:
            self.optimizer = self.stack.keep(rows, self.optimizer, self.spec)
            self.first_bad = self.first_bad[rows]
            self.order = self.order if self.order is None else self.order[rows]
            for hook in self.hooks:
                hook.keep(rows)

    def finish(self) -> list[ModelResult]:
        """The models still training when the budget ran out: weights written back."""
        for row, model in enumerate(self.active):
            _write_back(self.models[model], self.stack.state_dict(row))
            self.results[model].stop_step = self.step
        return self.results


def train(models: Sequence[nn.Module], data: Split, spec: TrainSpec, *, seeds: Sequence[int],
          evals: Mapping[str, Split] | None = None, ctx: RunContext | None = None,
          sink: Callable[[int, int, dict[str, float]], None] | None = None,
          hooks: Sequence[Hook] = ()) -> list[ModelResult]:
    """Train `models` (same shape when more than one) on `data`; write the final weights back
    into them and return one result per model.

    Metrics at each evaluation, per model: `running_loss` / `running_acc` = mean over the
    mini-batches since the previous evaluation (each at the weights before its step), and
    `<name>_loss` / `<name>_acc` for each split in `evals` at the current weights. `sink(model,
    x, metrics)` receives them. A model whose mini-batch loss turns NaN/inf (or that a hook's
    `diverges` flags) is stopped as `diverged` with the step it happened at; a hook's
    `on_eval` may stop others; the rest go on.
    """
    ctx = ctx or RunContext()
    evals = evals or {}
    n = len(data)
    batch = min(spec.batch_size or n, n)
    steps_per_epoch = math.ceil(n / batch)
    if spec.epochs is None and spec.max_steps is None:
        raise ValueError("a budget: epochs, max_steps or both")
    epochs = spec.epochs or math.ceil(spec.max_steps / steps_per_epoch)
    max_steps = min(spec.max_steps or steps_per_epoch * epochs, steps_per_epoch * epochs)
    total = epochs if spec.eval_unit == "epoch" else max_steps
    run = _Training(models, data, spec, seeds, hooks)

    def evaluate(epoch: int) -> None:
        shown = run.evaluate(epoch, evals, sink)
        ctx.advance(min(epoch if spec.eval_unit == "epoch" else run.step, total), total, **shown)

    ctx.advance(0, total)
    if spec.eval_at_start:
        evaluate(0)
    epoch = 0
    while run.active and run.step < max_steps:
        epoch += 1
        if batch < n:
            run.shuffle()
        for start in range(0, n, batch):
            run.take_step(*run.batch(start, batch))
            if run.step >= max_steps:
                break
            if spec.eval_unit == "step" and run.step % spec.eval_every == 0:
                evaluate(epoch)
                if not run.active:
                    break
        if run.active and (run.step >= max_steps or (spec.eval_unit == "epoch"
                                                     and epoch % spec.eval_every == 0)):
            evaluate(epoch)
    return run.finish()


class LearningRates(Hook):
    """Model i trains at `lr * rates[i]` (train with `lr=1` and the rates here). For the
    optimizers whose step is linear in the gradient (sgd, momentum) its loss is scaled by
    `rates[i]` before the backward pass; for the adaptive ones (adam, rmsprop), whose state does
    not depend on the rate, the step each model takes is scaled by `rates[i]` after it."""

    def __init__(self, rates: Sequence[float], optimizer: str, device: torch.device | str) -> None:
        self.scale = torch.tensor(list(rates), dtype=torch.float32, device=device)
        self.linear = optimizer in ("sgd", "momentum")
        self.before: list[Tensor] = []

    def objective(self, losses: Tensor) -> Tensor:
        return losses * self.scale if self.linear else losses

    def before_step(self, stack: ModelStack) -> None:
        if not self.linear:
            self.before = [p.detach().clone() for p in stack.params.values()]

    def after_step(self, step: int, losses: Tensor, stack: ModelStack) -> None:
        if self.linear:
            return
        with torch.no_grad():
            for p, old in zip(stack.params.values(), self.before):
                p.copy_(old + (p - old) * self.scale.view(-1, *[1] * (p.dim() - 1)))

    def keep(self, rows: Tensor) -> None:
        self.scale = self.scale[rows]

    def key(self, row: int) -> object:
        return {"rate": float(self.scale[row]), "scaled": "loss" if self.linear else "step"}


class DivergesAbove(Hook):
    """A mini-batch loss above `threshold` counts as diverged too: a loss that blew up by
    orders of magnitude but stays finite (ReLU nets at huge rates explode, then die and sit at
    a finite loss)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def diverges(self, losses: Tensor) -> Tensor:
        return losses > self.threshold

    def key(self, row: int) -> object:
        return {"diverges_above": self.threshold}


class Convergence(Hook):
    """The convergence rule of long fits: a model stops as `converged` when its `running_loss`
    has not improved by the relative amount `tol` over `patience` evaluations."""

    def __init__(self, tol: float, patience: int, n_models: int) -> None:
        self.tol, self.patience = tol, patience
        self.best = [math.inf] * n_models
        self.stale = [0] * n_models

    def key(self, row: int) -> object:
        return {"convergence": [self.tol, self.patience]}

    def on_eval(self, event: EvalEvent) -> dict[int, Status]:
        done: dict[int, Status] = {}
        for model, metrics in zip(event.active, event.metrics):
            if event.results[model].status != "finished" or "running_loss" not in metrics:
                continue
            loss = metrics["running_loss"]
            if loss < self.best[model] * (1 - self.tol):
                self.best[model], self.stale[model] = loss, 0
            else:
                self.stale[model] += 1
                if self.stale[model] >= self.patience:
                    done[model] = "converged"
        return done


class UntilLoss(Hook):
    """Train until a target: a model stops as `reached` at the first evaluation where its
    `metric` (e.g. `train_loss`, a full pass) is at most `target`."""

    def __init__(self, target: float, metric: str) -> None:
        self.target, self.metric = target, metric

    def on_eval(self, event: EvalEvent) -> dict[int, Status]:
        return {model: "reached" for model, metrics in zip(event.active, event.metrics)
                if metrics.get(self.metric, math.inf) <= self.target}

    def key(self, row: int) -> object:
        return {"until": [self.metric, self.target]}


class StepRecords(Hook):
    """Keeps, at every step, `step_loss` (each model's mini-batch loss) and/or `grad_norm` (the
    2-norm of the gradient of what was backpropagated, over all parameters: an extra pass over
    them) on the device; moved into `ModelResult.steps` at each evaluation."""

    def __init__(self, keys: Iterable[Literal["step_loss", "grad_norm"]]) -> None:
        self.records: dict[str, list[Tensor]] = {key: [] for key in keys}

    def key(self, row: int) -> object:
        return {"records": sorted(self.records)}

    def after_step(self, step: int, losses: Tensor, stack: ModelStack) -> None:
        if "step_loss" in self.records:
            self.records["step_loss"].append(losses)
        if "grad_norm" in self.records:
            self.records["grad_norm"].append(grad_norms(stack.params))

    def on_eval(self, event: EvalEvent) -> dict[int, Status]:
        for key, values in self.records.items():
            if values:
                for model, row in zip(event.active, torch.stack(values).T.tolist()):
                    event.results[model].steps.setdefault(key, []).extend(row)
            self.records[key] = []
        return {}


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op CPU threads, restoring the previous count after. For
    experiments made of many tiny ops (61-parameter nets on a hundred points), where one
    thread is faster: splitting a tiny op costs more than it saves, and on a busy machine the
    second thread waiting at each op's barrier made phase 1 of minimal-ratio 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rows(t: Tensor, idx: Tensor) -> Tensor:
    """t[idx] for a 2-D index [models, batch]: `index_select` on the flat index is ~9x faster
    on CPU than advanced indexing with a 2-D index, which dominated ensemble steps."""
    return t.index_select(0, idx.flatten()).view(*idx.shape, *t.shape[1:])


def _write_back(model: nn.Module, state: Params) -> None:
    model.load_state_dict(state)
