"""Datasets as normalized tensors resident on the run's device, and the 1-D target functions.

MNIST and CIFAR-10 are read once through torchvision's own dataset classes from the data
directory ($PHENOLAB_DATA_DIR, default ./data) and kept whole on the device: a batch is an
index slice, never a per-sample DataLoader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor
from torchvision import datasets

from experiments.core.config import DatasetConfig

NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
EXPECTED_FILES = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "cifar10": "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
}


class DatasetUnavailable(RuntimeError):
    """The dataset is not in the data directory and could not be downloaded."""


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one split, both on the same device."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def data_dir() -> Path:
    return Path(os.environ.get("PHENOLAB_DATA_DIR", "data")).resolve()


class _CIFAR10ByPresence(datasets.CIFAR10):
    """CIFAR-10 from its python pickles, checked by presence rather than md5, so the loader can
    be tested on a small file written in CIFAR's own format (downloads are still md5-checked)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


def _torchvision_split(name: str, root: Path, train: bool) -> tuple[Tensor, Tensor]:
    if name == "mnist":
        ds = datasets.MNIST(root, train=train, download=False)
        return ds.data.unsqueeze(1), ds.targets
    ds = _CIFAR10ByPresence(root, train=train, download=False)
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.tensor(ds.targets)


def _download(name: str, root: Path) -> None:
    cls = datasets.MNIST if name == "mnist" else datasets.CIFAR10
    for train in (True, False):
        cls(root, train=train, download=True)


@lru_cache(maxsize=4)
def _load_cpu(name: str, root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    try:
        xs = [_torchvision_split(name, root, train) for train in (True, False)]
    except RuntimeError:
        try:
            _download(name, root)
        except Exception as error:
            reason = [line for line in str(error).splitlines() if line.strip()][-1:] or [""]
            raise DatasetUnavailable(
                f"{name} is not in {root} and could not be downloaded ({reason[0].strip()}); expected "
                f"{root}/{EXPECTED_FILES[name]} — set PHENOLAB_DATA_DIR to a directory holding "
                "them") from None
        xs = [_torchvision_split(name, root, train) for train in (True, False)]
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in NORMALIZATION[name])
    (xtr, ytr), (xte, yte) = xs
    return ((xtr.float() / 255 - mean) / std, ytr.long(), (xte.float() / 255 - mean) / std,
            yte.long())


def load_dataset(name: str, device: torch.device | str = "cpu", train_subset: int | None = None,
                 test_subset: int | None = None) -> Dataset:
    """The dataset normalized per channel, as [N, C, H, W] float32 and [N] int64 on `device`."""
    xtr, ytr, xte, yte = _load_cpu(name, data_dir())
    train = Split(xtr.to(device), ytr.to(device)).head(train_subset)
    test = Split(xte.to(device), yte.to(device)).head(test_subset)
    return Dataset(name, train, test, n_classes=10)


def dataset_for(config: DatasetConfig, device: torch.device | str) -> Dataset:
    """The dataset a config names, cut to its `train_subset` / `test_subset`."""
    return load_dataset(config.dataset, device, config.train_subset, config.test_subset)


TARGETS: dict[str, Callable[[Tensor], Tensor]] = {
    "sinc": lambda x: torch.sinc(5 * x),  # sin(5πx)/(5πx), 1 at x = 0
    "sign": lambda x: torch.sign(torch.sin(5 * math.pi * x)),
    "exp_sin2": lambda x: torch.exp(x) * torch.sin(3 * math.pi * x) ** 2,
    "sin_linear": lambda x: torch.sin(5 * x) + 2 * x,
    "five_sin": lambda x: 5 * torch.sin(5 * x),
}


def target_function(name: str, n_points: int, domain: tuple[float, float],
                    device: torch.device | str = "cpu") -> Split:
    """`n_points` evenly spaced inputs on the domain and the target's values, shapes [n, 1]."""
    x = torch.linspace(domain[0], domain[1], n_points, device=device).unsqueeze(1)
    return Split(x, TARGETS[name](x))
