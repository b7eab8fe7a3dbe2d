"""Attacks by a thief who has read docs/signature.md and the public claim.

The ordinary attacks (prune, quantize, noise, fine-tune) do not know where the evidence
lives. These do:

* ``rescale``: the network's own symmetries. Scaling a conv's output channel by s and
  rescaling the BatchNorm statistics that follow leaves the function exactly unchanged;
  so does scaling a BatchNorm's affine output by t > 0 and dividing the next conv's input
  column by t (ReLU is positively homogeneous). Optionally a tiny entry goes into every
  empty kernel first (``fill_ratio`` of the row's L1 norm), so a global magnitude threshold
  sees whole rows switched on.
* ``block_edit``: the QR block's position is in the public claim. ``swap`` flips a
  fraction of its modules (dark kernels zeroed, light kernels given entries of the
  layer's typical size); ``shuffle`` moves the block's kernels around (same count).
* ``addon``: switch on a fraction of pruned entries with N(0, sigma^2) values.
* ``adam_finetune``: dense fine-tuning with Adam, not the SGD recipe we train with.
* ``round_bits``: symmetric per-tensor quantisation to any bit width (int4, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ticketmark.attacks.common import check_data, clone_model
from ticketmark.attacks.finetune import thief_splits
from ticketmark.data import DataSplits, TensorLoader
from ticketmark.errors import TicketmarkError


def _conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(conv -> bn) pairs where the BN reads only that conv, and (bn -> relu -> conv)
    chains where the ReLU output feeds only that conv: the two rescalable places."""
    graph = fx.symbolic_trace(model).graph
    mods = dict(model.named_modules())

    def module(node: fx.Node) -> nn.Module | None:
        return mods.get(str(node.target)) if node.op == "call_module" else None

    def is_relu(node: fx.Node) -> bool:
        return (node.op == "call_function" and node.target in (F.relu, torch.relu)) or \
            isinstance(module(node), nn.ReLU)

    conv_bn, bn_conv = [], []
    for node in graph.nodes:
        m = module(node)
        if isinstance(m, nn.Conv2d) and m.groups == 1 and len(node.users) == 1:
            (user,) = node.users
            if isinstance(module(user), nn.BatchNorm2d):
                conv_bn.append((str(node.target), str(user.target)))
        if isinstance(m, nn.BatchNorm2d) and len(node.users) == 1:
            (relu,) = node.users
            if is_relu(relu) and len(relu.users) == 1:
                (nxt,) = relu.users
                c = module(nxt)
                if isinstance(c, nn.Conv2d) and c.groups == 1:
                    bn_conv.append((str(node.target), str(nxt.target)))
    return conv_bn, bn_conv


def _log_uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    lo, hi = torch.tensor(low).log(), torch.tensor(high).log()
    return (lo + (hi - lo) * torch.rand(n, generator=gen)).exp()


@torch.no_grad()
def rescale(model: nn.Module, low: float = 1e-3, high: float = 1e6, *, fill_ratio: float = 0.0,
            seed: int = 0) -> nn.Module:
    """Function-preserving per-channel rescaling (module docstring), scales log-uniform in
    [low, high]; ``fill_ratio`` > 0 first writes one entry of that fraction of the row's
    L1 norm into every empty kernel."""
    if not 0 < low <= high:
        raise TicketmarkError(f"rescale needs 0 < low <= high, got {low}, {high}")
    out = clone_model(model).eval()
    gen = torch.Generator().manual_seed(int(seed))
    mods = dict(out.named_modules())
    conv_bn, bn_conv = _conv_bn_pairs(out)
    if fill_ratio > 0:
        for conv_name, _ in conv_bn:
            w = mods[conv_name].weight
            o, i, kh, kw = w.shape
            empty = w.flatten(2).abs().sum(2) == 0  # (O, I)
            row = w.abs().flatten(1).sum(1)  # (O,)
            where = torch.randint(kh * kw, (o, i), generator=gen)
            sign = torch.randint(2, (o, i), generator=gen).to(w.dtype) * 2 - 1
            values = (fill_ratio * row)[:, None] * sign * empty
            flat = w.view(o, i, kh * kw)
            flat.scatter_add_(2, where.unsqueeze(2), values.unsqueeze(2))
    for conv_name, bn_name in conv_bn:
        conv, bn = mods[conv_name], mods[bn_name]
        s = _log_uniform(conv.out_channels, low, high, gen).to(conv.weight.dtype)
        conv.weight.mul_(s.view(-1, 1, 1, 1))
        if conv.bias is not None:
            conv.bias.mul_(s)
        # (s x - s mu) / sqrt(s^2 var + eps) * g' must equal (x - mu) / sqrt(var + eps) * g:
        # scale the statistics and correct the affine weight (no cancellation in float32).
        old = (bn.running_var + bn.eps).sqrt()
        bn.running_mean.mul_(s)
        bn.running_var.mul_(s * s)
        bn.weight.mul_((bn.running_var + bn.eps).sqrt() / (s * old))
    for bn_name, conv_name in bn_conv:
        bn, conv = mods[bn_name], mods[conv_name]
        t = _log_uniform(bn.num_features, low, high, gen).to(conv.weight.dtype)
        bn.weight.mul_(t)
        bn.bias.mul_(t)
        conv.weight.div_(t.view(1, -1, 1, 1))
    return out


@torch.no_grad()
def block_edit(model: nn.Module, layer: str, row: int, col: int, size: int, *,
               fraction: float = 0.25, mode: str = "swap", seed: int = 0) -> nn.Module:
    """Overwrite the claimed block: ``swap`` a fraction of modules, or ``shuffle`` all."""
    out = clone_model(model)
    params = dict(out.named_parameters())
    if layer not in params or params[layer].dim() != 4:
        raise TicketmarkError(f"the model has no conv layer {layer!r}")
    w = params[layer]
    if row + size > w.shape[0] or col + size > w.shape[1]:
        raise TicketmarkError("the block does not fit in that layer")
    gen = torch.Generator().manual_seed(int(seed))
    blk = w[row:row + size, col:col + size]  # view
    ks = blk.shape[2] * blk.shape[3]
    flat = blk.reshape(size * size, ks).clone()
    if mode == "shuffle":
        flat = flat[torch.randperm(size * size, generator=gen)]
    elif mode == "swap":
        dark = flat.abs().sum(1) > 0
        pick = torch.randperm(size * size, generator=gen)[:round(fraction * size * size)]
        alive = w[w != 0].abs()
        typical = float(alive.median()) if alive.numel() else 0.05
        for_light = ~dark[pick]
        flat[pick[~for_light]] = 0.0
        n_new = int(for_light.sum())
        new = torch.zeros(n_new, ks, dtype=w.dtype)
        on = torch.rand(n_new, ks, generator=gen) < 0.5
        on[:, 0] |= ~on.any(1)
        signs = torch.randint(2, (n_new, ks), generator=gen).to(w.dtype) * 2 - 1
        new[on] = (typical * signs)[on]
        flat[pick[for_light]] = new
    else:
        raise TicketmarkError(f"block_edit mode must be swap or shuffle, got {mode!r}")
    blk.copy_(flat.view_as(blk))
    return out


@torch.no_grad()
def addon(model: nn.Module, fraction: float = 0.1, sigma: float = 0.1, *,
          names: list[str] | None = None, seed: int = 0) -> nn.Module:
    """Switch on ``fraction`` of the zero entries of conv layers with N(0, sigma^2)."""
    if not 0 <= fraction <= 1:
        raise TicketmarkError(f"add-on fraction must be in [0, 1], got {fraction}")
    out = clone_model(model)
    gen = torch.Generator().manual_seed(int(seed))
    for name, w in out.named_parameters():
        if w.dim() != 4 or (names is not None and name not in names):
            continue
        dead = w == 0
        pick = dead & (torch.rand(w.shape, generator=gen) < fraction)
        w.add_(torch.randn(w.shape, generator=gen).to(w.dtype) * sigma * pick)
    return out


def adam_finetune(model: nn.Module, data: DataSplits, *, epochs: int = 3, lr: float = 1e-3,
                  thief_fraction: float = 0.5, batch_size: int = 128, seed: int = 0
                  ) -> nn.Module:
    """Dense fine-tuning with Adam on the thief's share of the training data."""
    out = clone_model(model)
    check_data(out, data)
    thief = thief_splits(data, thief_fraction, seed=0)
    torch.manual_seed(int(seed))
    opt = torch.optim.Adam(out.parameters(), lr=lr)
    loader = TensorLoader(thief.train, batch_size, shuffle=True, seed=int(seed))
    out.train()
    for epoch in range(int(epochs)):
        loader.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(out(x), y).backward()
            opt.step()
    return out.eval()


@torch.no_grad()
def round_bits(model: nn.Module, bits: int = 4) -> nn.Module:
    """Symmetric per-tensor quantisation of conv/linear weights to ``bits`` bits."""
    if not 2 <= bits <= 16:
        raise TicketmarkError(f"bits must be in 2..16, got {bits}")
    out = clone_model(model)
    levels = 2 ** (bits - 1) - 1
    for _, w in out.named_parameters():
        if w.dim() in (2, 4):
            scale = w.abs().max() / levels
            if scale > 0:
                w.copy_(torch.round(w / scale) * scale)
    return out
