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
    "measure": r"[a-z0-9_]+",
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
    # --- the lab service's job records (a job's parent run) ---------------------------------
    Term("phenolab.kind", "tag", "`job` on a parent run that is a lab job (submitted, or `phenolab run`)."),
    Term("phenolab.config", "tag", "The job's validated config as JSON."),
    Term("phenolab.attempt", "tag", "Which attempt of the job runs (1, then 2 after a re-queue)."),
    Term("phenolab.worker", "tag", "The worker slot running the job: host/slotN/pidP."),
    Term("phenolab.started", "tag", "When the attempt started (Unix seconds)."),
    Term("phenolab.heartbeat", "tag", "The running job's last sign of life (Unix seconds)."),
    Term("phenolab.progress", "tag", "JSON progress: variant, done/total, fraction, shown metrics."),
    Term("phenolab.cancel", "tag", "When a cancel was requested (Unix seconds)."),
    Term("phenolab.requeued", "tag", "Why and when the job was put back in the queue."),
    # --- variant settings (child params) -----------------------------------------------------
    Term("hidden", "param", "Hidden widths of the variant's MLP (input and output sizes come from "
                            "the data)."),
    Term("widths", "param", "function-fit: hidden widths of the 1-…-1 MLP.", ("function-fit",)),
    Term("depth", "param", "Number of hidden layers (MLP) or of conv layers (task-fit's CNN).",
         ("function-fit", "task-fit", "param-count")),
    Term("width", "param", "param-count: the width of every hidden layer.", ("param-count",)),
    Term("family", "param", "task-fit: `cnn` or `mlp`.", ("task-fit",)),
    Term("channels", "param", "task-fit: output channels of each conv layer.", ("task-fit",)),
    Term("batch_size", "param", "Examples per optimizer step (the whole training split for full batch)."),
    Term("full_batch", "param", "batch-size: whether the variant trains on the whole split each step.",
         ("batch-size",)),
    Term("budget", "param", "batch-size: `steps` or `epochs`, what every batch size gets the same of.",
         ("batch-size",)),
    Term("lr", "param", "The variant's learning rate."),
    Term("optimizer", "param", "The variant's optimizer: sgd, momentum (0.9), adam or rmsprop."),
    Term("activation", "param", "The hidden units' nonlinearity: relu, tanh or sigmoid."),
    Term("init", "param", "weight-init: the scheme (zero or gaussian).", ("weight-init",)),
    Term("init_name", "param", "weight-init: the init's label (zero, N(0, v)).", ("weight-init",)),
    Term("variance", "param", "weight-init: the Gaussian weights' variance (none for zero init).",
         ("weight-init",)),
    Term("event", "param", "weight-trajectory: the training event's number (1-based).",
         ("weight-trajectory",)),
    Term("task", "param", "gradient-norm: the 1-D target's name, or `mnist`.", ("gradient-norm",)),
    Term("fraction", "param", "random-labels: fraction of the training labels shuffled.", ("random-labels",)),
    Term("method", "param", "minimal-ratio: the phase-2 method of this child.", ("minimal-ratio",)),
    Term("repetitions", "param", "minimal-ratio: networks trained and examined.", ("minimal-ratio",)),
    Term("patience", "param", "early-stopping: validations without improvement before stopping.",
         ("early-stopping",)),
    Term("eval_every", "param", "early-stopping: optimizer steps between validations.", ("early-stopping",)),
    Term("fit_size", "param", "early-stopping: training examples left to fit on.", ("early-stopping",)),
    Term("validation_size", "param", "early-stopping: training examples held out for validation.",
         ("early-stopping",)),
    # --- function-fit ----------------------------------------------------------------------
    Term("dead_units/layer<k>", "metric",
         "Fraction of hidden layer k's units whose ReLU output is exactly 0 on every training "
         "input, at the final weights (step 0).", ("function-fit",)),
    Term("collapsed", "tag", "`true` when some hidden layer is entirely dead at the final "
                             "weights: the model outputs a constant.", ("function-fit",)),
    # --- task-fit, batch-size, learning-rate -------------------------------------------------
    Term("best_test_acc", "metric", "The highest `final_test_acc` among the variants.",
         ("task-fit", "batch-size", "learning-rate")),
    Term("best_batch_size", "metric", "batch-size: the batch size of the highest `final_test_acc`.",
         ("batch-size",)),
    Term("best_lr", "metric", "learning-rate: the rate of the highest `final_test_acc` among the rates "
                              "that did not diverge.", ("learning-rate",)),
    Term("diverged_count", "metric", "learning-rate: how many rates diverged.", ("learning-rate",)),
    Term("diverged_rates", "tag", "learning-rate: the rates that diverged, comma-separated (or none).",
         ("learning-rate",)),
    # --- per-step series ---------------------------------------------------------------------
    Term("step_loss", "metric",
         "The loss of each optimizer step's own mini-batch (the whole split for full batch), at "
         "the weights before that step. MLflow step: the iteration, from 1.",
         ("gradient-norm", "batch-size")),
    Term("grad_norm", "metric",
         "2-norm over all parameters of the gradient of the training loss. gradient-norm: of each "
         "step's mini-batch loss at the weights before the step (step = iteration, from 1); "
         "minimal-ratio: of the full training loss at each repetition's final point (step = "
         "repetition).", ("gradient-norm", "minimal-ratio")),
    Term("first_grad_norm", "metric", "gradient-norm: `grad_norm` of the first iteration.",
         ("gradient-norm",)),
    Term("last_grad_norm", "metric", "gradient-norm: `grad_norm` of the last iteration.", ("gradient-norm",)),
    Term("max_grad_norm", "metric", "gradient-norm: the largest `grad_norm` of all iterations.",
         ("gradient-norm",)),
    Term("last_step_loss", "metric", "gradient-norm: `step_loss` of the last iteration.", ("gradient-norm",)),
    Term("min_step_loss", "metric", "gradient-norm: the smallest `step_loss` of all iterations.",
         ("gradient-norm",)),
    Term("<task>.last_grad_norm", "metric", "gradient-norm (parent): the task's `last_grad_norm`.",
         ("gradient-norm",)),
    Term("<task>.last_step_loss", "metric", "gradient-norm (parent): the task's `last_step_loss`.",
         ("gradient-norm",)),
    # --- weight-init -------------------------------------------------------------------------
    Term("grad_norm/<layer>", "metric",
         "weight-init: 2-norm of ∂L/∂θ for that one parameter tensor (a layer's weight or bias), "
         "L the mean cross-entropy over the probe batch (the first `probe_size` training "
         "examples), at the weights of the evaluation. Step: the optimizer step.", ("weight-init",)),
    Term("saturation/<layer>", "metric",
         "weight-init: fraction of that hidden layer's activation entries on the probe batch in "
         "the flat region (sigmoid < 0.01 or > 0.99, |tanh| > 0.99, relu = 0). Step: optimizer step.",
         ("weight-init",)),
    Term("unit_spread/<layer>", "metric",
         "weight-init: max − min over the layer's units of their activation, averaged over the "
         "probe batch; exactly 0 when all units are identical. Step: optimizer step.", ("weight-init",)),
    # --- weight-trajectory -------------------------------------------------------------------
    Term("first_layer_explained_variance", "metric", "weight-trajectory: fraction of the collected "
         "first-layer weights' variance the 2-D PCA keeps.", ("weight-trajectory",)),
    Term("whole_model_explained_variance", "metric", "weight-trajectory: the same for the whole "
         "model's weights.", ("weight-trajectory",)),
    Term("mean_final_test_acc", "metric", "weight-trajectory: mean of the events' `final_test_acc`.",
         ("weight-trajectory",)),
    Term("points", "metric", "weight-trajectory: weight vectors collected (all events).",
         ("weight-trajectory",)),
    Term("train_seconds", "metric", "weight-trajectory: wall time of the training.", ("weight-trajectory",)),
    # --- minimal-ratio -----------------------------------------------------------------------
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
    # --- random-labels, param-count, interpolation (parent summaries) -----------------------
    Term("labels_changed", "metric", "random-labels: fraction of training labels that differ from the "
                                     "true ones after the shuffle.", ("random-labels",)),
    Term("<split>_<measure>_by_params", "metric", "param-count (parent): the final `<split>_loss` / "
         "`<split>_acc` of each width, with MLflow step = its number of parameters.", ("param-count",)),
    Term("min_params", "metric", "param-count: the smallest model's parameters.", ("param-count",)),
    Term("max_params", "metric", "param-count: the largest model's parameters.", ("param-count",)),
    Term("interp_<split>_loss", "metric", "interpolation: mean cross-entropy over the split (train: "
         "its first `eval_subset` examples) at θ(α) = (1−α)θ1 + αθ2, step = round(100·α).",
         ("interpolation",)),
    Term("interp_<split>_acc", "metric", "interpolation: accuracy on the split at θ(α), step = round(100·α).",
         ("interpolation",)),
    Term("interp_step", "tag", "interpolation: how the α axis maps to MLflow steps.", ("interpolation",)),
    Term("<split>_<measure>_at_m1", "metric", "interpolation: `interp_<split>_<measure>` at α = 0 (m1).",
         ("interpolation",)),
    Term("<split>_<measure>_at_m2", "metric", "interpolation: `interp_<split>_<measure>` at α = 1 (m2).",
         ("interpolation",)),
    # --- the batch-size study: sensitivity and sharpness ------------------------------------
    Term("sensitivity", "metric", "sensitivity: the Frobenius norm of ∂ℓ_i/∂x_i (sample i's own "
         "cross-entropy w.r.t. its own input), averaged over the test split, at the final weights.",
         ("sensitivity",)),
    Term("sensitivity_train", "metric", "sensitivity: the same over the first `measure_subset` training "
                                        "examples.", ("sensitivity",)),
    Term("jacobian_sensitivity", "metric", "sensitivity: Frobenius norm of the Jacobian of the class "
         "probabilities w.r.t. the input, per test sample, averaged (Novak et al. 2018).", ("sensitivity",)),
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
         "metric) averaged over the seeds of each batch size, with MLflow step = the batch size.",
         BATCH_STUDY),
    # --- early-stopping ----------------------------------------------------------------------
    Term("best_step", "metric", "early-stopping: the step of the lowest validation loss (restored).",
         ("early-stopping",)),
    Term("best_val_loss", "metric", "early-stopping: the lowest `val_loss` seen.", ("early-stopping",)),
    Term("stop_step", "metric", "early-stopping: the step training stopped at.", ("early-stopping",)),
    Term("restored_<split>_loss", "metric", "early-stopping: `<split>_loss` of the restored (best) weights.",
         ("early-stopping",)),
    Term("restored_<split>_acc", "metric", "early-stopping: `<split>_acc` of the restored (best) weights.",
         ("early-stopping",)),
    Term("stopped_early", "tag", "early-stopping: whether patience ran out before the budget.",
         ("early-stopping",)),
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
