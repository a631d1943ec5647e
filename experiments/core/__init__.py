"""The core every experiment shares; each module imports torch only where it trains or measures.

- `config`: the pydantic bases of the experiment configs (no torch): shared fields (seed,
  seeds, reuse, device), bounded field types, the dataset, supervised, training-dynamics and
  batch-size-study families, presets and validation errors.
- `context`: `RunContext`, what a run reports progress to and how it is cancelled.
- `data`: MNIST / CIFAR-10 through torchvision from a data directory, device-resident splits,
  and the 1-D target functions.
- `models`: MLPs and CNNs by widths, initialisation schemes, parameter counts, the architecture
  as data (rebuilt with plain torch).
- `train`: the one training loop, for one model or a vmap ensemble of same-shape models, and
  its hooks (learning rates, divergence, convergence, step records, a target loss).
- `variants`: variants × seeds as MLflow child runs: train, log, save final weights, summarize.
- `reuse`: a finished model found again by its training key instead of trained twice.
- `batch_study`: the batch-size study that sensitivity and sharpness share.
- `measures`: measures of trained networks (flatness, sensitivity, per-layer statistics, exact
  Hessians of small nets, the sampling minimal ratio, weight PCA).
- `curvature`: the Hessian spectrum of a loss without forming it: λ_max, λ_min by Lanczos,
  Hutchinson's trace, the SLQ density, and the tolerance-based classification of an exact one.
- `findings`: a claim tested on the run's numbers, with a bootstrap interval and a verdict.
- `plots`: the matplotlib figures, one function per figure kind.
"""
