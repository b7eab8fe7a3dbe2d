"""Dataset registry: a name -> a loader returning normalised train/val/test splits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ticketmark.errors import TicketmarkError


@dataclass
class Split:
    """Images ``x`` (N, C, H, W) float32, already normalised, and integer labels ``y``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.x[index], self.y[index])

    def part(self, which: str, fraction: float, seed: int = 0) -> Split:
        """Cut the split in two disjoint parts: ``owner`` (1 - fraction) and ``thief``.

        Attacks fine-tune on the thief's part so that the thief never sees the owner's data.
        """
        if not 0.0 < fraction < 1.0:
            raise TicketmarkError(f"thief fraction must be in (0, 1), got {fraction}")
        gen = torch.Generator().manual_seed(seed + 7919)
        order = torch.randperm(len(self), generator=gen)
        n_thief = max(1, int(round(fraction * len(self))))
        if which == "thief":
            return self.subset(order[:n_thief])
        if which == "owner":
            return self.subset(order[n_thief:])
        raise TicketmarkError(f"unknown data part {which!r} (expected 'owner' or 'thief')")


@dataclass
class DataSplits:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    augment: bool = False
    # Per-channel mean and std of the raw [0, 1] training pixels that ``x`` was normalised
    # with, so attacks and corruptions can work in pixel space (None: unknown).
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def image_size(self) -> int:
        return self.input_shape[1]


Loader = Callable[[Path | None], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                        torch.Tensor | None, int, bool]]
DATASETS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn

    return deco


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def _stratified_split(
    y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, taken) with ``fraction`` of each class taken, vectorised per class."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=gen)
    ys = y[perm]
    order = torch.argsort(ys, stable=True)
    perm, ys = perm[order], ys[order]
    counts = torch.bincount(ys)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(ys)) - starts[ys]
    take = rank < torch.round(counts[ys].float() * fraction).long()
    return perm[~take], perm[take]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> DataSplits:
    """Load ``name`` as normalised tensors with a stratified, seeded validation split.

    ``split_seed`` fixes which images are validation (and, for embedded sets with no
    official test split, test) so every command of a project sees the same partition.
    """
    import ticketmark.data.embedded  # noqa: F401  (registers digits, mnist5k)
    import ticketmark.data.local  # noqa: F401  (registers cifar, mnist, imagefolder)
    from ticketmark import usercode

    path = Path(data_dir) if data_dir is not None else None
    if usercode.is_spec(name):
        x, y, x_test, y_test, num_classes, augment = user_data(name)
    elif name not in DATASETS:
        raise TicketmarkError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}, or "
            "your own as 'package.module:factory'"
        )
    else:
        x, y, x_test, y_test, num_classes, augment = DATASETS[name](path)
    x = x.float()
    if x_test is None or y_test is None:
        rest, test_idx = _stratified_split(y, 0.2, split_seed)
        x_test, y_test = x[test_idx], y[test_idx]
        x, y = x[rest], y[rest]
    x_test = x_test.float()
    train_idx, val_idx = _stratified_split(y, val_fraction, split_seed + 1)
    mean = x[train_idx].mean(dim=(0, 2, 3))
    std = x[train_idx].std(dim=(0, 2, 3)).clamp_min(1e-6)
    x, x_test = _normalise(x, mean, std), _normalise(x_test, mean, std)
    return DataSplits(
        name=name,
        train=Split(x[train_idx].contiguous(), y[train_idx].long()),
        val=Split(x[val_idx].contiguous(), y[val_idx].long()),
        test=Split(x_test.contiguous(), y_test.long()),
        num_classes=num_classes,
        augment=augment,
        pixel_mean=tuple(float(v) for v in mean),
        pixel_std=tuple(float(v) for v in std),
    )


MAX_USER_ITEMS = 2_000_000  # examples read from a user's dataset (they are held in memory)


def _materialise(dataset: object, spec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) tensors from a ``torch.utils.data.Dataset`` of ``(tensor, label)`` pairs (or a
    ``(x, y)`` pair of tensors)."""
    if isinstance(dataset, tuple) and len(dataset) == 2 and all(
            isinstance(t, torch.Tensor) for t in dataset):
        x, y = dataset
    else:
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TicketmarkError(f"{spec} must give datasets with a length") from None
        if n > MAX_USER_ITEMS:
            raise TicketmarkError(f"{spec} has {n} examples; at most {MAX_USER_ITEMS} are "
                                  "read into memory")
        xs, ys = [], []
        for i in range(n):
            item = dataset[i]  # type: ignore[index]
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise TicketmarkError(f"{spec}: example {i} is not a (tensor, label) pair")
            xs.append(torch.as_tensor(item[0], dtype=torch.float32))
            ys.append(int(item[1]))
        if not xs:
            raise TicketmarkError(f"{spec} gave an empty dataset")
        try:
            x = torch.stack(xs)
        except RuntimeError:
            raise TicketmarkError(f"{spec}: examples differ in shape") from None
        y = torch.tensor(ys)
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).long()
    if x.dim() == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    if x.dim() != 4 or len(x) != len(y):
        raise TicketmarkError(f"{spec}: images must be (N, C, H, W) with one label each, got "
                              f"{tuple(x.shape)} and {len(y)} labels")
    if not torch.isfinite(x).all() or (y < 0).any():
        raise TicketmarkError(f"{spec}: non-finite pixels or negative labels")
    return x, y


def user_data(spec: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                  torch.Tensor | None, int, bool]:
    """A dataset of the user's: ``package.module:factory`` returning a ``(train, test)``
    pair of datasets (or one dataset, split here like the embedded sets). Class count and
    input shape come from the data; nothing is downloaded by ticketmark."""
    from ticketmark import usercode

    factory, kwargs = usercode.load(spec, "data")
    made = usercode.call_with(factory, kwargs)
    if isinstance(made, tuple) and len(made) == 2 and not all(
            isinstance(t, torch.Tensor) for t in made):
        (x, y), (x_test, y_test) = _materialise(made[0], spec), _materialise(made[1], spec)
    else:
        (x, y), x_test, y_test = _materialise(made, spec), None, None
    classes = int(max(int(y.max()), int(y_test.max()) if y_test is not None else 0)) + 1
    return x, y, x_test, y_test, classes, False

