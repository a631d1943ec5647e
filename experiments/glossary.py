"""Every name the project logs to MLflow — metric, param or tag — with its exact definition:
of which loss, at which weights, on which split, per sample or averaged, and the MLflow step's
unit. One name means one thing in every experiment; a test runs the whole catalog and fails on
a logged name that is not here. A config's own fields are logged on the parent run as params
under their field names (nested fields joined with dots); `phenolab list` describes those.

Placeholders in a name stand for a family: `<split>` is a data split (`train`: a full pass
over the training split, or the experiment's training subset, at the weights of that moment;
`test`; `val`: early stopping's held-out validation split; `fit`: the training split minus the
validation split), `<k>` a 1-based layer number, `<layer>` a parameter's or layer's name,
`<method>` a minimal-ratio phase-2 method, `<task>` a gradient-norm task (`function`, `mnist`).
"""

from __future__ import annotations

import re
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
    "measure": r"[a-z_]+",
}


@dataclass(frozen=True)
class Term:
    name: str
    kind: Kind
    definition: str
    experiments: tuple[str, ...] = EVERY  # the experiments that log it; () = every one

    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"<(\w+)>", self.name)
        return re.compile("".join(PLACEHOLDERS[p] if i % 2 else re.escape(p) for i, p in enumerate(parts)))

    def describe(self) -> dict[str, str | list[str]]:
        return {"name": self.name, "kind": self.kind, "definition": self.definition,
                "experiments": list(self.experiments) or ["every experiment"]}


BATCH_STUDY = ("sensitivity", "sharpness")
TERMS: tuple[Term, ...] = (
    # --- what the shared training loop logs on each child, at each evaluation ---------------
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
    # --- the tracking layer, on every run ---------------------------------------------------
    Term("phenolab.experiment", "tag", "The catalog name of the run's experiment."),
    Term("phenolab.variant", "tag", "On a child run: the name of the variant it trained."),
    Term("phenolab.error", "tag", "On a FAILED or KILLED parent: the error message."),
    Term("torch_version", "tag", "The PyTorch version the run trained with."),
    Term("python_version", "tag", "The Python version the run trained with."),
    Term("device", "tag", "The device the run trained on (cpu, cuda)."),
    Term("git_revision", "tag", "The git commit of the code that ran (or $PHENOLAB_GIT_REVISION)."),
    Term("host", "tag", "The machine the run trained on."),
)


@cache
def _compiled() -> list[tuple[re.Pattern[str], Term]]:
    return [(term.pattern(), term) for term in TERMS]


def lookup(name: str, experiment: str | None = None) -> Term | None:
    """The term that defines `name` (as logged by `experiment`, when given), else None."""
    for pattern, term in _compiled():
        if pattern.fullmatch(name) and (experiment is None or not term.experiments
                                         or experiment in term.experiments):
            return term
    return None


def terms_of(experiment: str) -> list[Term]:
    """The terms an experiment may log."""
    return [t for t in TERMS if not t.experiments or experiment in t.experiments]
