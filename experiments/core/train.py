"""The one training loop, for a single model and for N same-shape models trained at once.

Models are always held as a stack: parameters with a leading model dimension
(`torch.func.stack_module_state`), the forward pass `vmap`-ed over it (a stack of one calls the
module directly). Each model keeps its own data order, drawn from its own seed, so a model
trained in an ensemble follows the same path as the same model trained alone.

Inside the step loop nothing is read back to the host: the running loss, the first
non-finite step and the per-step records stay on the device and are read once per evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from experiments.core.context import RunContext
from experiments.core.data import Split

Params = dict[str, Tensor]
Status = Literal["finished", "converged", "diverged", "stopped"]


@dataclass
class TrainSpec:
    """How to train. `batch_size=None` is full batch; the budget is `epochs`, cut short by
    `max_steps` (`epochs=None`: `max_steps` steps alone); evaluation happens every
    `eval_every` epochs (or steps with `eval_unit="step"`). `converge_tol` enables the
    convergence rule for long fits: a model stops when its training loss has not improved by
    that relative amount over `converge_patience` evaluations. `lr_scale` gives model i the
    learning rate `lr * lr_scale[i]` by scaling its loss before the backward pass: exact for
    the linear optimizers (sgd, momentum), so the adaptive ones reject it. A model diverges when its
    mini-batch loss turns NaN/inf, or, with `diverge_above`, exceeds that value: a loss that
    blew up by orders of magnitude but stays finite (ReLU nets at huge learning rates explode,
    then die and sit at a finite loss) counts as diverged too. `record_steps` names what is
    kept at every step, on the device (read once per evaluation): `step_loss` (the mini-batch
    loss) and/or `grad_norm` (2-norm of the whole gradient, an extra pass over the parameters).
    `eval_at_start` adds an evaluation of the initial weights (epoch 0, step 0: the `evals`
    splits only, no mini-batch has been seen), for curves and hooks that start at the init."""

    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int | None = None
    epochs: int | None = 1
    max_steps: int | None = None
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    eval_every: int = 1
    eval_unit: Literal["epoch", "step"] = "epoch"
    record_steps: tuple[Literal["step_loss", "grad_norm"], ...] = ()
    converge_tol: float | None = None
    converge_patience: int = 20
    momentum: float = 0.9
    eval_chunk: int = 8192
    lr_scale: list[float] | None = None
    diverge_above: float | None = None
    eval_at_start: bool = False


@dataclass
class ModelResult:
    """How a model's training ended, and `history`: one row per evaluation with `epoch`,
    `step`, `x` (the MLflow step: epoch or step, per `eval_unit`) and the metrics."""

    status: Status = "finished"
    stop_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class EvalEvent:
    """Handed to `on_eval` after each evaluation; `metrics[i]` belongs to model `active[i]`."""

    epoch: int
    step: int
    x: int  # the value used as MLflow step: epoch or step, per `eval_unit`
    active: list[int]
    metrics: list[dict[str, float]]
    stack: ModelStack

    def state_dict(self, model: int) -> Params:
        """Weights of model `model` (an original index) at this evaluation, detached."""
        return self.stack.state_dict(self.active.index(model))


def make_optimizer(name: str, params: Iterable[Tensor], lr: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """Optimizers by name; each updates element-wise, so a stack of models trains as if alone."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
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
        new_opt = make_optimizer(spec.optimizer, self.params.values(), spec.lr, spec.momentum)
        for p_old, p_new in zip(old, self.params.values()):
            state = optimizer.state.get(p_old)
            if state:
                new_opt.state[p_new] = {
                    key: value[rows] if torch.is_tensor(value) and value.dim() and value.shape[0] == n
                    else value for key, value in state.items()}
        return new_opt

    @torch.no_grad()
    def evaluate(self, split: Split, loss: str, chunk: int) -> tuple[Tensor, Tensor]:
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


def train(models: Sequence[nn.Module], data: Split, spec: TrainSpec, *, seeds: Sequence[int],
          evals: Mapping[str, Split] | None = None, ctx: RunContext | None = None,
          sink: Callable[[int, int, dict[str, float]], None] | None = None,
          on_eval: Callable[[EvalEvent], Iterable[int] | None] | None = None) -> list[ModelResult]:
    """Train `models` (same shape when more than one) on `data`; write the final weights back
    into them and return one result per model.

    Metrics at each evaluation, per model: `train_loss` / `train_acc` = mean over the
    mini-batches since the previous evaluation (at the weights as they moved), and
    `<name>_loss` / `<name>_acc` for each split in `evals` at the current weights. `sink(model,
    x, metrics)` receives them; `on_eval` may return indices of models to stop. A model whose
    mini-batch loss turns NaN/inf (or exceeds `spec.diverge_above`) is stopped as `diverged`
    with the step it happened at; the others go on.
    """
    ctx = ctx or RunContext()
    evals = evals or {}
    device = data.x.device
    scale = _lr_scale(spec, len(models), device)
    stack = ModelStack(models)
    optimizer = make_optimizer(spec.optimizer, stack.params.values(), spec.lr, spec.momentum)
    results = [ModelResult() for _ in models]
    active = list(range(len(models)))
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    n = len(data)
    batch = min(spec.batch_size or n, n)
    steps_per_epoch = math.ceil(n / batch)
    if spec.epochs is None and spec.max_steps is None:
        raise ValueError("a budget: epochs, max_steps or both")
    epochs = spec.epochs or math.ceil(spec.max_steps / steps_per_epoch)
    max_steps = min(spec.max_steps or steps_per_epoch * epochs, steps_per_epoch * epochs)
    total = epochs if spec.eval_unit == "epoch" else max_steps

    running = torch.zeros(len(models), device=device)
    running_acc = torch.zeros(len(models), device=device)
    since = 0
    first_bad = torch.full((len(models),), -1, dtype=torch.long, device=device)
    records: dict[str, list[Tensor]] = {key: [] for key in spec.record_steps}
    best = [math.inf] * len(models)
    stale = [0] * len(models)
    step = 0
    order: Tensor | None = None  # this epoch's data order, one row per active model

    def evaluate(epoch: int) -> None:
        nonlocal optimizer, since, running, running_acc, first_bad, active, scale, order
        x = epoch if spec.eval_unit == "epoch" else step
        values: dict[str, Tensor] = {}
        if since:  # the mini-batches seen since the last evaluation
            values["train_loss"] = running / since
            if spec.loss == "cross_entropy":
                values["train_acc"] = running_acc / since
        for name, split in evals.items():
            values[f"{name}_loss"], acc = stack.evaluate(split, spec.loss, spec.eval_chunk)
            if spec.loss == "cross_entropy":
                values[f"{name}_acc"] = acc
        host = {k: v.tolist() for k, v in values.items()}
        bad = first_bad.tolist()
        series = {k: torch.stack(v).T.tolist() for k, v in records.items() if v}
        metrics = []
        stop: set[int] = set()
        for row, model in enumerate(active):
            m = {k: v[row] for k, v in host.items() if math.isfinite(v[row])}
            metrics.append(m)
            result = results[model]
            for key, values_row in series.items():
                result.steps.setdefault(key, []).extend(values_row[row])
            if bad[row] >= 0:
                result.status, result.stop_step = "diverged", bad[row]
                stop.add(model)
                continue
            result.history.append({"epoch": epoch, "step": step, "x": x, **m})
            if sink:
                sink(model, x, m)
            if spec.converge_tol is not None and "train_loss" in m:
                loss = m["train_loss"]
                if loss < best[model] * (1 - spec.converge_tol):
                    best[model], stale[model] = loss, 0
                else:
                    stale[model] += 1
                    if stale[model] >= spec.converge_patience:
                        result.status, result.stop_step = "converged", step
                        stop.add(model)
        for key in records:
            records[key] = []
        event = EvalEvent(epoch, step, x, list(active), metrics, stack)
        requested = (on_eval(event) or ()) if on_eval else ()
        for model in requested:
            if model not in stop:
                results[model].status, results[model].stop_step = "stopped", step
                stop.add(model)
        shown = {"loss": metrics[0]["train_loss"]} if metrics and "train_loss" in metrics[0] else {}
        ctx.advance(min(x, total), total, **shown)
        if stop:
            for row, model in enumerate(active):
                if model in stop:
                    _write_back(models[model], stack.state_dict(row))
            rows = torch.tensor([r for r, m in enumerate(active) if m not in stop], device=device)
            active = [m for m in active if m not in stop]
            if active:
                optimizer = stack.keep(rows, optimizer, spec)
                first_bad = first_bad[rows]
                scale = scale if scale is None else scale[rows]
                order = order if order is None else order[rows]
        running = torch.zeros(len(active), device=device)
        running_acc = torch.zeros(len(active), device=device)
        since = 0

    ctx.advance(0, total)
    if spec.eval_at_start:
        evaluate(0)
    epoch = 0
    while active and step < max_steps:
        epoch += 1
        if batch < n:
            order = torch.stack([torch.randperm(n, generator=generators[m], device=device)
                                 for m in active])
        for start in range(0, n, batch):
            if batch < n:
                idx = order[:, start:start + batch]
                xb, yb = _rows(data.x, idx), _rows(data.y, idx)
            else:
                xb = data.x.expand(len(active), *data.x.shape)
                yb = data.y.expand(len(active), *data.y.shape)
            out = stack.forward(xb)
            losses = per_model_loss(spec.loss, out, yb)
            optimizer.zero_grad(set_to_none=True)
            (losses if scale is None else losses * scale).sum().backward()
            optimizer.step()
            step += 1
            detached = losses.detach()
            running += detached
            if spec.loss == "cross_entropy":
                running_acc += per_model_accuracy(out.detach(), yb)
            since += 1
            bad = ~torch.isfinite(detached)
            if spec.diverge_above is not None:
                bad |= detached > spec.diverge_above
            first_bad = torch.where((first_bad < 0) & bad, step, first_bad)
            if "step_loss" in records:
                records["step_loss"].append(detached)
            if "grad_norm" in records:
                norms = grad_norms(stack.params)
                records["grad_norm"].append(norms if scale is None else norms / scale)
            if step >= max_steps:
                break
            if spec.eval_unit == "step" and step % spec.eval_every == 0:
                evaluate(epoch)
                if not active:
                    break
        if active and (step >= max_steps or (spec.eval_unit == "epoch"
                                             and epoch % spec.eval_every == 0)):
            evaluate(epoch)
    for row, model in enumerate(active):
        _write_back(models[model], stack.state_dict(row))
        results[model].stop_step = step
    return results


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


def _lr_scale(spec: TrainSpec, n_models: int, device: torch.device) -> Tensor | None:
    """The per-model learning-rate multipliers as a device tensor, checked against the spec."""
    if spec.lr_scale is None:
        return None
    if spec.optimizer not in ("sgd", "momentum"):
        raise ValueError(f"lr_scale needs a linear optimizer (sgd, momentum), not {spec.optimizer!r}")
    if len(spec.lr_scale) != n_models:
        raise ValueError(f"lr_scale has {len(spec.lr_scale)} entries for {n_models} models")
    return torch.tensor(spec.lr_scale, dtype=torch.float32, device=device)


def _rows(t: Tensor, idx: Tensor) -> Tensor:
    """t[idx] for a 2-D index [models, batch]: `index_select` on the flat index is ~9x faster
    on CPU than advanced indexing with a 2-D index, which dominated ensemble steps."""
    return t.index_select(0, idx.flatten()).view(*idx.shape, *t.shape[1:])


def _write_back(model: nn.Module, state: Params) -> None:
    model.load_state_dict(state)
