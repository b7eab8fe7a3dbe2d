"""Connection choosers: which kernels or weights of a ticket make the owner's key.

Every chooser returns a :class:`Choice`, a *priority order* over present kernels
(``ewp``, ``random-path``, ``betweenness``: ``(layer, out, in)`` connections) or present
weights (``taylor``, ``hessian``, ``intgrads``, ``omp``). ``Choice.take`` cuts the order to a
size, so one scoring pass serves every key size (the evaluation needs five), and the keys
of one chooser are nested: the 1% key is a subset of the 2% key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from ticketmark.data import DataSplits, load_dataset
from ticketmark.errors import TicketmarkError
from ticketmark.io import Ticket
from ticketmark.ownership.lock.paths import Plan, build_plan, kernel_views, path_ranks, walk
from ticketmark.sparsity.mask import Mask

KERNEL, WEIGHT = "kernel", "weight"
MAX_PATHS = 1 << 21


@dataclass
class Selection:
    """A cut of a choice: the weights to remove and the connections they came from.

    ``connections[name]`` is ``(n, 2)`` ``(out, in)`` kernels for kernel-level choosers and
    ``(n,)`` flat weight indices for weight-level ones.
    """

    method: str
    level: str
    removal: dict[str, torch.Tensor]
    connections: dict[str, torch.Tensor]

    def count(self) -> int:
        return int(sum(int(r.sum()) for r in self.removal.values()))

    def layer_counts(self) -> dict[str, int]:
        return {n: int(r.sum()) for n, r in self.removal.items()}


@dataclass
class Choice:
    """Priorities: ``ranks[name]`` is int64 over kernels ``(out, in)`` or over weights
    (the weight's shape); 0 is removed first, -1 never. ``counts`` holds how many present
    weights each ranked entry stands for."""

    method: str
    level: str
    mask: Mask
    ranks: dict[str, torch.Tensor]
    counts: dict[str, torch.Tensor]

    def available(self) -> int:
        return int(sum(int(c[r >= 0].sum()) for r, c in zip(self.ranks.values(),
                                                            self.counts.values(),
                                                            strict=True)))

    def take(self, weights: int | None = None) -> Selection:
        """The smallest prefix of the order holding at least ``weights`` weights (all of it
        when ``None``). A kernel is taken whole, so the key may exceed ``weights`` by less
        than one kernel."""
        names = list(self.ranks)
        r = torch.cat([self.ranks[n].flatten() for n in names])
        c = torch.cat([self.counts[n].flatten() for n in names])
        keep = (r >= 0) & (c > 0)
        rr, cc = r[keep], c[keep]
        if rr.numel() == 0:
            raise TicketmarkError(f"{self.method} found no connection to remove")
        order = torch.argsort(rr)
        cum = cc[order].cumsum(0)
        if weights is None:
            threshold = int(rr.max())
        else:
            if weights <= 0:
                raise TicketmarkError(f"key size must be positive, got {weights} weights")
            if int(cum[-1]) < weights:
                raise TicketmarkError(f"{self.method} can remove at most {int(cum[-1])} "
                                      f"weights, fewer than the {weights} asked")
            cut = int(torch.searchsorted(cum, torch.tensor([weights]))[0])
            threshold = int(rr[order[cut]])
        removal, connections = {}, {}
        for n in names:
            picked = (self.ranks[n] >= 0) & (self.ranks[n] <= threshold) & (self.counts[n] > 0)
            m = self.mask[n]
            if self.level == KERNEL:
                out, cin = picked.shape
                full = picked.reshape(out, cin, 1).expand(out, cin, m.numel() // (out * cin))
                removal[n] = full.reshape(m.shape) & m
                connections[n] = picked.nonzero()
            else:
                removal[n] = picked & m
                connections[n] = picked.flatten().nonzero().squeeze(1)
        return Selection(self.method, self.level, removal, connections)


@dataclass
class ChooserContext:
    """What a chooser may look at: the ticket's trained weights, mask and owner's data."""

    ticket: Ticket
    seed: int = 0
    data_dir: str | None = None
    batches: int = 4
    batch_size: int = 128
    ig_steps: int = 8
    betweenness_k: int = 64
    data: DataSplits | None = field(default=None, repr=False)

    @cached_property
    def model(self) -> nn.Module:
        return self.ticket.build().eval()

    @property
    def mask(self) -> Mask:
        return self.ticket.mask

    @cached_property
    def plan(self) -> Plan:
        return build_plan(self.model, self.mask)

    def weights(self) -> dict[str, torch.Tensor]:
        return {n: self.ticket.state[n] for n in self.mask}

    def generator(self, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + salt)

    def owner_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A few seeded batches of the owner's training data (scores are averaged)."""
        if self.data is None:
            self.data = load_dataset(self.ticket.dataset, self.data_dir)
        train = self.data.train
        n = min(len(train), self.batches * self.batch_size)
        idx = torch.randperm(len(train), generator=self.generator(17))[:n]
        for start in range(0, n, self.batch_size):
            b = idx[start : start + self.batch_size]
            yield train.x[b], train.y[b]


# --- path choosers ------------------------------------------------------------------------

def _path_choice(ctx: ChooserContext, method: str, paths: int | None, weights: int | None,
                 uniform: bool) -> Choice:
    plan = ctx.plan
    views = kernel_views(plan, ctx.mask, ctx.weights())
    counts = {n: v.count for n, v in views.items()}
    num = paths if paths is not None else 256
    while True:
        sample = walk(plan, views, num, uniform=uniform, generator=ctx.generator(num))
        choice = Choice(method, KERNEL, ctx.mask, path_ranks(plan, sample), counts)
        if paths is not None or weights is None or choice.available() >= weights:
            return choice
        if num >= MAX_PATHS:
            raise TicketmarkError(f"{method}: {num} paths cover only {choice.available()} "
                                  f"weights, fewer than the {weights} asked")
        num *= 2


def choose_ewp(ctx: ChooserContext, paths: int | None = None,
               weights: int | None = None) -> Choice:
    """Paths drawn in proportion to kernel magnitude; every kernel on a path is removed."""
    return _path_choice(ctx, "ewp", paths, weights, uniform=False)


def choose_random_path(ctx: ChooserContext, paths: int | None = None,
                       weights: int | None = None) -> Choice:
    """The same walk, uniform over present kernels: the control for ``ewp``."""
    return _path_choice(ctx, "random-path", paths, weights, uniform=True)


# --- betweenness --------------------------------------------------------------------------

def choose_betweenness(ctx: ChooserContext, paths: int | None = None,
                       weights: int | None = None) -> Choice:
    """Kernels ranked by edge betweenness on the channel graph (ties: larger magnitude).

    Edge length is ``mean magnitude / magnitude``, so strong kernels are short and carry
    many shortest paths. Identity shortcuts join stream channels with unit-weight edges that
    count for paths but are never removed. ``k`` sampled sources keep it to seconds.
    """
    import networkx as nx

    plan = ctx.plan
    views = kernel_views(plan, ctx.mask, ctx.weights())
    mags = torch.cat([v.magnitude[v.present] for v in views.values()])
    if mags.numel() == 0:
        raise TicketmarkError("betweenness: the ticket has no present connection")
    scale = float(mags.mean())
    graph = nx.DiGraph()
    for step in plan.steps:
        v = views[step.name]
        idx = v.present.nonzero()
        length = (scale / v.magnitude[idx[:, 0], idx[:, 1]].clamp_min(1e-12)).tolist()
        graph.add_edges_from(((step.src, i), (step.dst, o), {"d": d, "layer": step.name})
                             for (o, i), d in zip(idx.tolist(), length, strict=True))
    for src, dst, width in plan.identities:
        unit = scale / 1.0
        graph.add_edges_from(((src, c), (dst, c), {"d": unit, "layer": None})
                             for c in range(width))
    k = min(ctx.betweenness_k, graph.number_of_nodes())
    central = nx.edge_betweenness_centrality(graph, k=k, normalized=True, weight="d",
                                             seed=ctx.seed)
    names = list(views)
    score = {n: torch.zeros_like(views[n].magnitude, dtype=torch.float64) for n in names}
    for (a, b), value in central.items():
        layer = graph.edges[a, b]["layer"]
        if layer is not None:
            score[layer][b[1], a[1]] = value
    flat_score = torch.cat([score[n].flatten() for n in names])
    flat_mag = torch.cat([views[n].magnitude.flatten().double() for n in names])
    present = torch.cat([views[n].present.flatten() for n in names])
    ranks = _rank(present, flat_score, flat_mag)
    sizes = [views[n].magnitude.numel() for n in names]
    return Choice("betweenness", KERNEL, ctx.mask,
                  {n: part.view_as(views[n].magnitude) for n, part in
                   zip(names, ranks.split(sizes), strict=True)},
                  {n: views[n].count for n in names})


def _rank(valid: torch.Tensor, primary: torch.Tensor,
          secondary: torch.Tensor | None = None) -> torch.Tensor:
    """Rank 0 for the largest ``primary`` (ties: largest ``secondary``); -1 where invalid."""
    order = torch.arange(primary.numel())
    if secondary is not None:
        order = torch.argsort(secondary, descending=True, stable=True)
    order = order[torch.argsort(primary[order], descending=True, stable=True)]
    order = order[valid[order]]
    ranks = torch.full((primary.numel(),), -1, dtype=torch.long)
    ranks[order] = torch.arange(order.numel())
    return ranks


# --- weight scores ------------------------------------------------------------------------

def _weight_choice(ctx: ChooserContext, method: str, scores: dict[str, torch.Tensor]
                   ) -> Choice:
    names = list(ctx.mask)
    present = torch.cat([ctx.mask[n].flatten() for n in names])
    flat = torch.cat([scores[n].detach().double().flatten() for n in names])
    ranks = _rank(present, flat)
    sizes = [ctx.mask[n].numel() for n in names]
    return Choice(method, WEIGHT, ctx.mask,
                  {n: part.view_as(ctx.mask[n]) for n, part in
                   zip(names, ranks.split(sizes), strict=True)},
                  {n: ctx.mask[n].long() for n in names})


def _params(ctx: ChooserContext) -> list[nn.Parameter]:
    params = dict(ctx.model.named_parameters())
    return [params[n] for n in ctx.mask]


def _averaged(ctx: ChooserContext, per_batch: Callable[[torch.Tensor, torch.Tensor],
                                                       list[torch.Tensor]]
              ) -> dict[str, torch.Tensor]:
    total: list[torch.Tensor] | None = None
    n = 0
    for x, y in ctx.owner_batches():
        scores = [s.detach() for s in per_batch(x, y)]
        total = scores if total is None else [a + b for a, b in zip(total, scores,
                                                                    strict=True)]
        n += 1
    if total is None:
        raise TicketmarkError("the owner's training split is empty; cannot score weights")
    return {name: t / n for name, t in zip(ctx.mask, total, strict=True)}


def choose_omp(ctx: ChooserContext, paths: int | None = None,
               weights: int | None = None) -> Choice:
    """Largest trained magnitudes first (one-shot magnitude pruning's criterion)."""
    return _weight_choice(ctx, "omp", {n: w.abs() for n, w in ctx.weights().items()})


def choose_taylor(ctx: ChooserContext, paths: int | None = None,
                  weights: int | None = None) -> Choice:
    """First-order Taylor saliency ``|w * dL/dw|``: the loss change if ``w`` were zeroed."""
    params = _params(ctx)

    def batch(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        grads = torch.autograd.grad(F.cross_entropy(ctx.model(x), y), params)
        return [(p * g).abs() for p, g in zip(params, grads, strict=True)]

    return _weight_choice(ctx, "taylor", _averaged(ctx, batch))


def choose_hessian(ctx: ChooserContext, paths: int | None = None,
                   weights: int | None = None) -> Choice:
    """Second-order saliency ``|w * (H w)|`` from one Hessian-vector product per batch.

    At a trained minimum the gradient term of the Taylor expansion vanishes, so the
    curvature along the weights themselves says what zeroing them costs.
    """
    params = _params(ctx)

    def batch(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        loss = F.cross_entropy(ctx.model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * p.detach()).sum() for g, p in zip(grads, params, strict=True))
        hvp = torch.autograd.grad(dot, params)
        return [(p * h).abs() for p, h in zip(params, hvp, strict=True)]

    return _weight_choice(ctx, "hessian", _averaged(ctx, batch))


def choose_intgrads(ctx: ChooserContext, paths: int | None = None,
                    weights: int | None = None) -> Choice:
    """Integrated gradients along ``alpha * w`` (alpha from 0 to 1, right Riemann sum).

    Unlike Taylor it credits weights whose effect shows only once others are present.
    """
    from torch.func import functional_call

    names = list(ctx.mask)
    base = dict(zip(names, [p.detach() for p in _params(ctx)], strict=True))
    steps = max(1, ctx.ig_steps)

    def batch(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        acc = [torch.zeros_like(w) for w in base.values()]
        for i in range(1, steps + 1):
            scaled = {n: (w * (i / steps)).requires_grad_() for n, w in base.items()}
            loss = F.cross_entropy(functional_call(ctx.model, scaled, (x,)), y)
            grads = torch.autograd.grad(loss, list(scaled.values()))
            acc = [a + g for a, g in zip(acc, grads, strict=True)]
        return [(w * a / steps).abs() for w, a in zip(base.values(), acc, strict=True)]

    return _weight_choice(ctx, "intgrads", _averaged(ctx, batch))


Chooser = Callable[..., Choice]
CHOOSERS: dict[str, tuple[str, Chooser]] = {
    "ewp": (KERNEL, choose_ewp),
    "random-path": (KERNEL, choose_random_path),
    "betweenness": (KERNEL, choose_betweenness),
    "taylor": (WEIGHT, choose_taylor),
    "hessian": (WEIGHT, choose_hessian),
    "intgrads": (WEIGHT, choose_intgrads),
    "omp": (WEIGHT, choose_omp),
}
PATH_METHODS = ("ewp", "random-path")


def choose(ctx: ChooserContext, method: str, *, paths: int | None = None,
           weights: int | None = None) -> Choice:
    """Run chooser ``method``; ``paths`` or ``weights`` says how much the key needs."""
    if method not in CHOOSERS:
        raise TicketmarkError(f"unknown chooser {method!r}; choose one of: "
                              f"{', '.join(CHOOSERS)}")
    if paths is not None and method not in PATH_METHODS:
        raise TicketmarkError(f"--paths applies to {' and '.join(PATH_METHODS)}, "
                              f"not {method}")
    with torch.enable_grad():
        return CHOOSERS[method][1](ctx, paths=paths, weights=weights)
