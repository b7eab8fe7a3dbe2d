"""The channel graph of a ticket and vectorised path walks over it (``ewp``, ``random-path``).

A path is a sequence of channels, one per *register*: a named channel slot of the network.
In a ResNet the registers are the residual stream between blocks (``s0``, ``s1``, ...) and
the middle of each block (``m0``, ...). A BasicBlock reads stream ``s_b`` with ``conv1``
(into ``m_b``), writes stream ``s_{b+1}`` with ``conv2``, and its option-B shortcut connects
``s_b`` to ``s_{b+1}`` directly. Following registers rather than the forward order of the
layers is what makes a walk respect the residual stream: a naive chain would feed
``conv2``'s output channel into the shortcut, whose input is the block's *input*.

Every layer is seen at kernel granularity: ``K[out, in]`` is the summed |weight| of the
kernel connecting input channel ``in`` to output channel ``out`` (only present weights
count). A ``Linear`` after a convolution groups its ``C*h*w`` inputs per channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ticketmark.errors import TicketmarkError
from ticketmark.models.resnet import BasicBlock
from ticketmark.sparsity.mask import Mask


@dataclass(frozen=True)
class Step:
    """One prunable layer: it maps the channel in register ``src`` to one in ``dst``.

    ``pinned`` steps draw nothing: both ends are already fixed by the path (an option-B
    shortcut joins the block's input and output stream channels), so the path removes that
    kernel if it is present.
    """

    name: str
    src: str
    dst: str
    pinned: bool = False


@dataclass
class Plan:
    """How to walk a model: steps in forward order, register sizes, identity shortcuts."""

    steps: list[Step]
    channels: dict[str, int]
    group: dict[str, int]  # weights per (out, in) kernel, per layer
    identities: list[tuple[str, str, int]] = field(default_factory=list)

    def in_channels(self, step: Step) -> int:
        return self.channels[step.src]

    def out_channels(self, step: Step) -> int:
        return self.channels[step.dst]


def build_plan(model: nn.Module, mask: Mask) -> Plan:
    """The walk plan for ``model`` restricted to the layers ``mask`` covers."""
    names = list(mask)
    if not names:
        raise TicketmarkError("the ticket's mask covers no layers; nothing to lock")
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, BasicBlock)]
    if blocks:
        return _resnet_plan(model, mask, blocks)
    return _chain_plan(mask)


def _kernel_shape(shape: torch.Size, in_channels: int | None) -> tuple[int, int, int]:
    """(out, in, weights per kernel) for a conv or linear weight; linear inputs are grouped
    per channel of the preceding layer when its width divides them."""
    out, fan_in = int(shape[0]), int(shape[1])
    per = 1
    for s in shape[2:]:
        per *= int(s)
    if len(shape) == 2 and in_channels and fan_in != in_channels and fan_in % in_channels == 0:
        return out, in_channels, fan_in // in_channels
    return out, fan_in, per


def _chain_plan(mask: Mask) -> Plan:
    steps, channels, group = [], {}, {}
    reg = "r0"
    for i, name in enumerate(mask):
        out, cin, per = _kernel_shape(mask[name].shape, channels.get(reg))
        if reg in channels and channels[reg] != cin:
            reg = f"r{i}x"  # a reshape we cannot follow: start a fresh register
        channels[reg] = cin
        nxt = f"r{i + 1}"
        channels[nxt] = out
        group[name] = per
        steps.append(Step(name, reg, nxt))
        reg = nxt
    return Plan(steps, channels, group)


def _resnet_plan(model: nn.Module, mask: Mask, blocks: list[tuple[str, nn.Module]]) -> Plan:
    index = {prefix: b for b, (prefix, _) in enumerate(blocks)}
    last = f"s{len(blocks)}"
    steps, channels, group = [], {}, {}
    for name in mask:
        module = name.removesuffix(".weight")
        shape = mask[name].shape
        if module == "conv1":
            step = Step(name, "x", "s0")
        elif module == "fc":
            step = Step(name, last, "y")
        else:
            prefix, _, role = module.rpartition(".")
            if role == "0" and prefix.endswith(".shortcut"):
                prefix, role = prefix.removesuffix(".shortcut"), "shortcut"
            if prefix not in index:
                raise TicketmarkError(f"cannot place layer {name} in the residual stream")
            b = index[prefix]
            step = {"conv1": Step(name, f"s{b}", f"m{b}"),
                    "conv2": Step(name, f"m{b}", f"s{b + 1}"),
                    "shortcut": Step(name, f"s{b}", f"s{b + 1}", pinned=True)}.get(role)
            if step is None:
                raise TicketmarkError(f"cannot place layer {name} in the residual stream")
        out, cin, per = _kernel_shape(shape, channels.get(step.src))
        channels.setdefault(step.src, cin)
        channels.setdefault(step.dst, out)
        group[name] = per
        steps.append(step)
    identities = []
    for b, (_, block) in enumerate(blocks):
        if isinstance(block.shortcut, nn.Sequential) and len(block.shortcut) == 0:
            planes = block.conv2.out_channels
            identities.append((f"s{b}", f"s{b + 1}", planes))
            channels.setdefault(f"s{b}", planes)
            channels.setdefault(f"s{b + 1}", planes)
    return Plan(steps, channels, group, identities)


_CHUNK = 1 << 16  # weights per temporary in ``kernel_views``


class KernelView:
    """Per layer: summed |weight| per kernel ``[out, in]``, and (computed on first use, as
    the walk itself never needs it) the number of present weights per kernel."""

    def __init__(self, magnitude: torch.Tensor, mask: torch.Tensor):
        self.magnitude = magnitude  # float32 (out, in), a view of an (in, out) tensor
        self._mask = mask  # bool (out, in * weights per kernel)
        self._count: torch.Tensor | None = None

    @property
    def count(self) -> torch.Tensor:
        if self._count is None:
            out, cin = self.magnitude.shape
            per = self._mask.shape[1] // cin
            m = self._mask.view(torch.uint8) if self._mask.dtype == torch.bool else self._mask
            if per == 1:
                self._count = m.to(torch.int64).view(out, cin)
                return self._count
            # A bool ``sum(1, dtype=int64)`` over a few weights per kernel is slow; chunks
            # of uint8 -> float32 summed by a matrix-vector product are exact (counts far
            # below 2^24) and about twice as fast on ResNet-18.
            count = torch.empty(out * cin)
            ones = torch.ones(per)
            rows = max(1, _CHUNK // max(1, self._mask.shape[1]))
            for lo in range(0, out, rows):
                hi = min(out, lo + rows)
                part = m[lo:hi].to(torch.float32)
                torch.mv(part.view(-1, per), ones, out=count[lo * cin : hi * cin])
            self._count = count.to(torch.int64).view(out, cin)
        return self._count

    @property
    def present(self) -> torch.Tensor:
        return self.count > 0


def _row_length(mask: torch.Tensor) -> int:
    """Weights per output row of a layer."""
    return max(1, mask[0].numel()) if mask.shape[0] else 1


def _chunk_rows(mask: torch.Tensor) -> int:
    """Output rows per chunk in :func:`kernel_views`: about ``_CHUNK`` weights."""
    return min(max(1, mask.shape[0]), max(1, _CHUNK // _row_length(mask)))


def kernel_views(plan: Plan, mask: Mask, weights: dict[str, torch.Tensor]) -> dict[str,
                                                                                   KernelView]:
    """Summed |present weight| per kernel for every step of ``plan``.

    Each magnitude is stored *transposed*, ``(in, out)`` contiguous, and exposed as its
    ``(out, in)`` view: the walk needs each input channel's row of outgoing kernels laid end
    to end. Chunks of whole output rows, about ``_CHUNK`` weights, keep the ``|w| * mask``
    temporary in cache; their sums go straight into an ``(out, in)`` array (``out=``),
    transposed once per layer (0.3 ms for 512 x 512), which is cheaper than writing each
    chunk's small result transposed. The chunks come from one ``split`` per tensor rather
    than slicing in the loop: ResNet-18 has about 180 of them, and the per-chunk Python and
    dispatch overhead was a fifth of this function's time (19.2 -> 16.9 ms on ResNet-18,
    best of 40 interleaved calls; bit-identical magnitudes).
    """
    views = {}
    # One scratch buffer for every layer: a fresh one per layer is mmap'ed and faulted in.
    scratch = torch.empty(max(_chunk_rows(mask[s.name]) * _row_length(mask[s.name])
                              for s in plan.steps))
    for step in plan.steps:
        m = mask[step.name]
        out, cin, per = plan.out_channels(step), plan.in_channels(step), plan.group[step.name]
        w = weights[step.name].detach().to("cpu", torch.float32).reshape(-1, per)
        mm = m.reshape(out, -1)
        # ``mul_`` by a bool tensor goes through a slow type-promoting kernel; the same
        # bytes seen as uint8 (0 or 1) multiply about three times faster, bit-identically.
        mu = (m.view(torch.uint8) if m.dtype == torch.bool else m).reshape(-1, per)
        magnitude = torch.empty(out, cin)
        kernels = _chunk_rows(m) * cin  # kernels per chunk: whole output rows
        full = scratch[: kernels * per].view(kernels, per)
        ones = torch.ones(per)
        chunks = (zip(w.split(kernels), mu.split(kernels), magnitude.view(-1).split(kernels),
                      strict=True) if out * cin > kernels else [(w, mu, magnitude.view(-1))])
        for wc, mc, oc in chunks:
            buf = full if wc.shape[0] == kernels else full[: wc.shape[0]]
            # A matrix-vector product sums each kernel several times faster than sum(-1).
            torch.mv(torch.abs(wc, out=buf).mul_(mc), ones, out=oc)
        views[step.name] = KernelView(magnitude.t().contiguous().t(), mm)
    return views


@dataclass
class PathSample:
    """``hops[name]``: (paths, 2) long tensor of (out, in) per path; -1 where a pinned
    kernel was absent."""

    hops: dict[str, torch.Tensor]
    num_paths: int


def _draw(trans: torch.Tensor, totals: np.ndarray, cin: np.ndarray, gen: torch.Generator,
          workspace: torch.Tensor) -> np.ndarray:
    """Draw ``next`` given ``current`` channels for many paths with one ``searchsorted``.

    The transition rows (``trans``: one row per input channel, contiguous) are laid end to
    end in a single float64 cumulative sum; a path at channel ``c`` draws a uniform point
    inside row ``c``'s span. No per-path row is ever copied, so a 512x512 layer costs one
    pass over its kernels, however many paths cross it. The per-path arithmetic runs in
    numpy: on a thousand paths a torch call's fixed overhead outweighs its work. The sums
    go into ``workspace`` (float64, at least ``trans.numel()``), shared by all layers: a
    fresh megabyte-sized array per layer costs about as much in page faults as the sum.
    """
    width = trans.shape[1]
    cdf = torch.cumsum(trans.view(-1), 0, dtype=torch.float64,
                       out=workspace[: trans.numel()]).numpy()
    u = torch.rand(cin.shape[0], generator=gen, dtype=torch.float64).numpy()
    first = cin * width
    start = np.where(cin > 0, cdf[first - 1], 0.0)
    point = start + u * totals[cin].astype(np.float64)
    # Searching the points in sorted order lets each binary search start where the last
    # one ended and follow the same branches: about twice as fast as random order.
    order = np.argsort(point)
    idx = np.empty_like(cin)
    idx[order] = np.searchsorted(cdf, point[order], side="right")
    # ``point >= start`` exactly (a non-negative addend), so the index never falls before
    # the row; rounding can land it a hair past the row's end: clip back into it.
    return np.minimum(idx - first, width - 1)


def walk(plan: Plan, views: dict[str, KernelView], num_paths: int, *, uniform: bool = False,
         generator: torch.Generator | None = None) -> PathSample:
    """Sample ``num_paths`` paths at once: one batched draw per layer, no loop over paths.

    The first register of a path gets a uniformly random channel among those with an
    outgoing connection. The next channel is drawn in proportion to ``K[next, current]``
    (``ewp``) or uniformly over present kernels (``uniform``: ``random-path``). A path at a
    channel with no outgoing connection (a dead end the pruning left) jumps to a channel
    drawn in proportion to the layer's outgoing totals, so every path still crosses every
    layer and the key size stays predictable.
    """
    if num_paths <= 0:
        raise TicketmarkError(f"number of paths must be positive, got {num_paths}")
    gen = generator or torch.Generator().manual_seed(0)
    regs: dict[str, np.ndarray] = {}
    hops: dict[str, torch.Tensor] = {}
    workspace = torch.empty(max(v.magnitude.numel() for v in views.values()),
                            dtype=torch.float64)
    for step in plan.steps:
        view = views[step.name]
        if step.pinned and step.src in regs and step.dst in regs:
            out, cin = regs[step.dst], regs[step.src]
            ok = view.present.numpy()[out, cin]
            hops[step.name] = torch.from_numpy(
                np.where(ok[:, None], np.stack([out, cin], 1), -1))
            continue
        weight = view.present.float() if uniform else view.magnitude
        trans = weight.t().contiguous()  # row ``in``: where ``in`` can go (a no-op for
        # ``magnitude``, stored transposed by ``kernel_views``)
        totals_t = trans.sum(1)
        totals = totals_t.numpy()
        if not (totals > 0).any():
            hops[step.name] = torch.full((num_paths, 2), -1)
            regs[step.dst] = np.zeros(num_paths, dtype=np.int64)
            continue
        if step.src in regs:
            cin = regs[step.src].copy()
            dead = totals[cin] <= 0
            if dead.any():
                cin[dead] = torch.multinomial(totals_t, int(dead.sum()), replacement=True,
                                              generator=gen).numpy()
        else:
            cin = torch.multinomial((totals_t > 0).float(), num_paths, replacement=True,
                                    generator=gen).numpy()
        out = _draw(trans, totals, cin, gen, workspace)
        regs[step.src], regs[step.dst] = cin, out
        hop = np.empty((num_paths, 2), dtype=np.int64)
        hop[:, 0], hop[:, 1] = out, cin
        hops[step.name] = torch.from_numpy(hop)
    return PathSample(hops, num_paths)


def path_ranks(plan: Plan, sample: PathSample) -> dict[str, torch.Tensor]:
    """Kernel priority from a sample: kernels ranked by their first appearance, path by
    path, layer by layer (so taking a prefix of ranks is taking whole paths in order).

    Returns per layer an int64 ``(out, in)`` tensor of ranks, -1 for kernels on no path.
    """
    names = [s.name for s in plan.steps]
    sizes = [plan.out_channels(s) * plan.in_channels(s) for s in plan.steps]
    offsets = np.cumsum([0, *sizes[:-1]])
    widths = np.array([plan.in_channels(s) for s in plan.steps])
    # (paths, layers, 2), so that raveling the ids is path-major: path 0's layers, then 1's
    hops = np.stack([sample.hops[n].numpy() for n in names], 1)
    ids = hops[:, :, 0] * widths + hops[:, :, 1] + offsets
    ids = ids[hops[:, :, 0] >= 0]  # boolean indexing keeps the row-major order
    # Rank by first appearance with one plain sort (no stable argsort, as numpy's
    # ``unique(return_index=True)`` needs): sorting ``id * n + position`` groups each id's
    # occurrences with the first one leading; scattering the ids into a slot per first
    # position then orders them by appearance without a second sort.
    n = len(ids)
    keys = np.sort(ids * n + np.arange(n))
    sorted_ids = keys // n
    lead = np.ones(n, dtype=bool)
    lead[1:] = sorted_ids[1:] != sorted_ids[:-1]
    slot = np.full(n, -1, dtype=np.int64)
    slot[keys[lead] - sorted_ids[lead] * n] = sorted_ids[lead]
    by_appearance = slot[slot >= 0]
    # numpy's ``full`` of a large array is several times faster than torch's here (fewer
    # page faults); the ranks are then shared with torch without a copy.
    rank = np.full(int(sum(sizes)), -1, dtype=np.int64)
    rank[by_appearance] = np.arange(len(by_appearance))
    out = {}
    for name, part, step in zip(names, torch.from_numpy(rank).split(sizes), plan.steps,
                                strict=True):
        out[name] = part.view(plan.out_channels(step), plan.in_channels(step))
    return out
