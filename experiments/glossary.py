"""Every name the project logs to MLflow — metric, param or tag — with its exact definition:
of which loss, at which weights, on which split, per sample or averaged, and the MLflow step's
unit. The names every experiment may log are `SHARED` here; an experiment's own names are the
`TERMS` of its `config.py` (the catalog gathers both). One name means one thing in every
experiment; a test runs the whole catalog and fails on a logged name that is not defined.
A config's own fields are logged on the parent run as params under their field names (nested
fields joined with dots); `phenolab list` describes those.

Placeholders in a name stand for a family: `<split>` is a data split (`train`: a full pass
over the training split, or the experiment's training subset, at the weights of that moment;
`test`; `val`: early stopping's held-out validation split; `fit`: the training split minus the
validation split), `<k>` a 1-based layer number, `<layer>` a parameter's or layer's name,
`<method>` a minimal-ratio phase-2 method, `<task>` a gradient-norm task (`function`, `mnist`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
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


SHARED: tuple[Term, ...] = (
    Term("running_loss", "metric",
         "Mean of the mini-batch losses (each model's own loss: cross-entropy, or MSE for the "
         "1-D fits) of the optimizer steps since the previous evaluation, each taken at the "
         "weights before its step. MLflow step: the epoch (or the step, for step budgets)."),
    Term("running_acc", "metric",
         "Fraction of correct argmax predictions over the mini-batches of the steps since the "
         "previous evaluation, each at the weights before its step. Step: epoch or step."),
    Term("<split>_loss", "metric",
         "Mean loss (cross-entropy, or MSE for the 1-D fits) over the whole split at the "
         "weights of that evaluation. `train_loss` is a full pass over the training split, "
         "never the running mean of mini-batches (that is `running_loss`). Step: epoch or step."),
    Term("<split>_acc", "metric",
         "Fraction of the split's examples whose argmax prediction is the label, at the weights "
         "of that evaluation. Step: epoch or step."),
    Term("final_running_loss", "metric", "`running_loss` at the model's last evaluation (step 0)."),
    Term("final_running_acc", "metric", "`running_acc` at the model's last evaluation (step 0)."),
    Term("final_<split>_loss", "metric", "`<split>_loss` at the model's last evaluation (step 0)."),
    Term("final_<split>_acc", "metric", "`<split>_acc` at the model's last evaluation (step 0)."),
    Term("steps_trained", "metric",
         "Optimizer steps the model took before it stopped (budget spent, converged, diverged "
         "or stopped early)."),
    Term("n_params", "param", "Trainable parameters of the variant's model: weights and biases."),
    Term("seed", "param", "The seed the variant's model was initialised (and its data order "
                          "drawn) from."),
    Term("status", "tag", "How the variant's training ended: finished (budget spent), "
                          "converged, diverged or stopped."),
    Term("diverged", "tag", "`true` when the variant's mini-batch loss turned NaN/inf or passed "
                            "the experiment's divergence threshold."),
    Term("diverged_step", "tag", "The optimizer step at which the variant diverged."),
    Term("phenolab.experiment", "tag", "The catalog name of the run's experiment."),
    Term("phenolab.variant", "tag", "On a child run: the name of the variant it trained."),
    Term("phenolab.error", "tag", "On a FAILED or KILLED parent: the error message."),
    Term("torch_version", "tag", "The PyTorch version the run trained with."),
    Term("python_version", "tag", "The Python version the run trained with."),
    Term("device", "tag", "The device the run trained on (cpu, cuda)."),
    Term("git_revision", "tag", "The git commit of the code that ran (or $PHENOLAB_GIT_REVISION)."),
    Term("host", "tag", "The machine the run trained on."),
    Term("phenolab.kind", "tag", "`job` on a parent run that is a lab job (submitted, or `phenolab run`)."),
    Term("phenolab.config", "tag", "The job's validated config as JSON."),
    Term("phenolab.attempt", "tag", "Which attempt of the job runs (1, then 2 after a re-queue)."),
    Term("phenolab.worker", "tag", "The worker slot running the job: host/slotN/pidP."),
    Term("phenolab.started", "tag", "When the attempt started (Unix seconds)."),
    Term("phenolab.heartbeat", "tag", "The running job's last sign of life (Unix seconds)."),
    Term("phenolab.progress", "tag", "JSON progress: variant, done/total, fraction, shown metrics."),
    Term("phenolab.cancel", "tag", "When a cancel was requested (Unix seconds)."),
    Term("phenolab.requeued", "tag", "Why and when the job was put back in the queue."),
    Term("hidden", "param", "Hidden widths of the variant's MLP (input and output sizes come from "
                            "the data)."),
    Term("depth", "param", "Number of hidden layers (MLP) or of conv layers (task-fit's CNN)."),
    Term("batch_size", "param", "Examples per optimizer step (the whole training split for full batch)."),
    Term("lr", "param", "The variant's learning rate."),
    Term("optimizer", "param", "The variant's optimizer: sgd, momentum (0.9), adam or rmsprop."),
    Term("activation", "param", "The hidden units' nonlinearity: relu, tanh or sigmoid."),
    Term("method", "param", "minimal-ratio: the phase-2 method of this child.", ("minimal-ratio",)),
    Term("repetitions", "param", "minimal-ratio: networks trained and examined.", ("minimal-ratio",)),
    Term("best_test_acc", "metric", "The highest `final_test_acc` among the variants."),
    Term("step_loss", "metric",
         "The loss of each optimizer step's own mini-batch (the whole split for full batch), at "
         "the weights before that step. MLflow step: the iteration, from 1."),
    Term("grad_norm", "metric",
         "2-norm over all parameters of the gradient of the training loss. gradient-norm: of each "
         "step's mini-batch loss at the weights before the step (step = iteration, from 1); "
         "minimal-ratio: of the full training loss at each repetition's final point (step = "
         "repetition)."),
    Term("phase1_loss", "metric", "minimal-ratio: each repetition's training MSE at the end of phase 1 "
                                  "(step = repetition).", ("minimal-ratio",)),
    Term("phase1_seconds", "metric", "minimal-ratio: wall time of phase 1.", ("minimal-ratio",)),
    Term("loss", "metric", "minimal-ratio: the training MSE (all points, float64) at each repetition's "
                           "final point (step = repetition).", ("minimal-ratio",)),
    Term("reached", "metric", "minimal-ratio: 1 when that repetition's `grad_norm` is below the "
                              "threshold, else 0 (step = repetition).", ("minimal-ratio",)),
    Term("minimal_ratio", "metric", "minimal-ratio: fraction of the exact Hessian's eigenvalues "
         "(of the training MSE, float64, at the final point) above `eigen_tol` (step = repetition).",
         ("minimal-ratio",)),
    Term("sampling_minimal_ratio", "metric", "minimal-ratio: fraction of `samples` random weight "
         "perturbations of 2-norm `sample_radius` with a higher training loss (step = repetition).",
         ("minimal-ratio",)),
    Term("min_eigenvalue", "metric", "minimal-ratio: the smallest eigenvalue of the exact Hessian at the "
                                     "final point (step = repetition).", ("minimal-ratio",)),
    Term("max_eigenvalue", "metric", "minimal-ratio: the largest eigenvalue of the exact Hessian at the "
                                     "final point (step = repetition).", ("minimal-ratio",)),
    Term("phase2_steps", "metric", "minimal-ratio: phase-2 steps the repetition took (step = repetition).",
         ("minimal-ratio",)),
    Term("n_reached", "metric", "minimal-ratio: repetitions whose `grad_norm` fell below the threshold.",
         ("minimal-ratio",)),
    Term("fraction_reached", "metric", "minimal-ratio: `n_reached` / repetitions.", ("minimal-ratio",)),
    Term("median_loss", "metric", "minimal-ratio: median of `loss` over the repetitions.",
         ("minimal-ratio",)),
    Term("mean_minimal_ratio", "metric", "minimal-ratio: mean of `minimal_ratio`.", ("minimal-ratio",)),
    Term("mean_sampling_minimal_ratio", "metric", "minimal-ratio: mean of `sampling_minimal_ratio`.",
         ("minimal-ratio",)),
    Term("corr_log_loss_minimal_ratio", "metric", "minimal-ratio: Pearson correlation of log10(`loss`) "
         "and `minimal_ratio` over the repetitions.", ("minimal-ratio",)),
    Term("<method>.<measure>", "metric", "minimal-ratio (parent): the method's summary `<measure>` "
         "(as on its child), or the wall time of its `phase2_seconds` / `measure_seconds`.",
         ("minimal-ratio",)),
    Term("profile_loss", "metric", "sharpness: mean training cross-entropy (first `measure_subset` "
         "examples) along the profile direction at distance t, step = round(100·t).", ("sharpness",)),
    Term("profile_sharpness", "metric", "sharpness: `profile_loss` at t = +radius minus at t = 0.",
         ("sharpness",)),
    Term("profile_sharpness_back", "metric", "sharpness: `profile_loss` at t = −radius minus at t = 0 "
                                             "(seed 002's sharpness).", ("sharpness",)),
    Term("epsilon_sharpness", "metric", "sharpness: Keskar et al.'s ε-sharpness in %: the rise of the "
         "largest training loss found in the box |δ_i| ≤ ε(|θ_i|+1), by projected ascent.", ("sharpness",)),
    Term("top_eigenvalue", "metric", "sharpness: an estimate of the training loss Hessian's top "
         "eigenvalue by power iteration.", ("sharpness",)),
    Term("<measure>_by_batch_size", "metric", "sensitivity / sharpness (parent): the measure (or final "
         "metric) averaged over the seeds of each batch size, with MLflow step = the batch size."),
)

def find(terms: Iterable[Term], name: str, experiment: str | None = None) -> Term | None:
    """The term of `terms` that defines `name` (as logged by `experiment`, when given)."""
    for term in terms:
        if term.matches(name) and (experiment is None or not term.experiments
                                   or experiment in term.experiments):
            return term
    return None
