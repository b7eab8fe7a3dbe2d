"""Function-preserving channel permutation, derived from the model's traced graph.

Reordering the output channels of a layer does not change what the network computes as
long as every tensor indexed by those channels is reordered the same way: the layer's
weight rows and bias, the BatchNorm statistics that follow, the input columns of the next
layer, and, in a ResNet, every other layer writing into or reading from the same residual
stream. Rather than hard-coding each architecture, ``channel_groups`` traces the model
with ``torch.fx`` and builds the groups with a union-find over "channel spaces":

* a Conv2d/Linear output opens a new space (its weight dim 0 and bias belong to it) and
  its weight dim 1 belongs to the input's space;
* BatchNorm, activations, pooling and dropout keep the space (their per-channel tensors
  join it);
* ``a + b`` merges the spaces of ``a`` and ``b`` (the residual stream);
* flattening an NCHW tensor keeps the space but the next Linear sees each channel as a
  contiguous block of ``in_features / channels`` columns (channel-major);
* the model's input and output spaces are fixed, and anything the tracer does not know
  (concatenation, reshapes, custom modules) fixes the spaces it touches, so unknown code
  can make the attack weaker but never make it change the function.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ticketmark.attacks.common import clone_model
from ticketmark.errors import TicketmarkError

# Leaf modules and functions that keep the channel index of their first input.
_KEEP_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                 nn.Tanh, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d,
                 nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_KEEP_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid,
                   torch.tanh, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
                   F.adaptive_max_pool2d, torch.nn.functional.hardtanh}
_KEEP_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_ELEMENTWISE = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
                torch.add, torch.mul, torch.sub}
_ELEMENTWISE_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_"}

# Layout of a tensor's dim 1: NCHW channels (0), a 2-D feature vector whose channels are
# contiguous blocks of ``block`` features (int > 0), or a flattened map (None: the block
# size is learnt from the Linear layer that consumes it).
NCHW = 0


@dataclass(frozen=True)
class Member:
    """One tensor (state-dict key) indexed along ``dim`` by a group's channels.

    Channel ``c`` owns indices ``c*block ... c*block + block - 1`` of that dimension.
    """

    key: str
    dim: int
    block: int = 1


@dataclass
class ChannelGroup:
    """Tensors that share one channel index: permuting them together preserves the function."""

    size: int
    members: list[Member] = field(default_factory=list)

    @property
    def label(self) -> str:
        m = self.members[0]
        return f"{m.key}[{m.dim}]"


@dataclass
class _Info:
    space: int
    block: int | None  # NCHW, a positive block size, or None (flattened, block unknown)


class _Spaces:
    """Union-find over channel spaces, each with a size, a fixed flag and its members."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int | None] = []
        self.fixed: list[bool] = []
        self.members: list[list[Member]] = []
        self.owner: dict[tuple[str, int], int] = {}

    def new(self, size: int | None, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.fixed.append(fixed)
        self.members.append([])
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        sa, sb = self.size[a], self.size[b]
        if sa is not None and sb is not None and sa != sb:
            self.fixed[a] = True  # inconsistent widths: never permute, never guess
        self.parent[b] = a
        self.size[a] = sa if sa is not None else sb
        self.fixed[a] = self.fixed[a] or self.fixed[b]
        self.members[a] += self.members[b]
        return a

    def fix(self, a: int) -> None:
        self.fixed[self.find(a)] = True

    def attach(self, space: int, member: Member) -> None:
        key = (member.key, member.dim)
        if key in self.owner:  # a shared weight ties the spaces it is used in
            self.union(self.owner[key], space)
            return
        self.owner[key] = space
        self.members[self.find(space)].append(member)


def _tensor_args(args: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    for a in args if isinstance(args, list | tuple) else [args]:
        if isinstance(a, fx.Node):
            out.append(a)
        elif isinstance(a, list | tuple | dict):
            out += _tensor_args(list(a.values()) if isinstance(a, dict) else a)
    return out


class _Builder:
    def __init__(self, model: nn.Module):
        self.model = model
        self.modules = dict(model.named_modules())
        self.state = model.state_dict()
        self.s = _Spaces()
        self.info: dict[fx.Node, _Info | None] = {}

    # helpers ------------------------------------------------------------------------------
    def fixed_new(self) -> _Info:
        return _Info(self.s.new(None, fixed=True), NCHW)

    def fix_inputs(self, node: fx.Node) -> _Info:
        for a in _tensor_args(list(node.args) + list(node.kwargs.values())):
            if self.info.get(a) is not None:
                self.s.fix(self.info[a].space)
        return self.fixed_new()

    def attach(self, prefix: str, names: tuple[str, ...], space: int, dim: int,
               block: int = 1) -> None:
        for n in names:
            key = f"{prefix}.{n}" if prefix else n
            if key in self.state and self.state[key].dim() > dim:
                self.s.attach(space, Member(key, dim, block))

    def first(self, node: fx.Node) -> _Info | None:
        args = _tensor_args(node.args[:1])
        return self.info.get(args[0]) if args else None

    # per node kind ------------------------------------------------------------------------
    def module(self, node: fx.Node) -> _Info | None:
        name = str(node.target)
        mod = self.modules[name]
        x = self.first(node)
        if x is None:
            return self.fix_inputs(node)
        if isinstance(mod, nn.Conv2d):
            if x.block != NCHW:
                return self.fix_inputs(node)
            if mod.groups == 1:
                self.attach(name, ("weight",), x.space, 1)
                out = self.s.new(mod.out_channels)
            elif mod.groups == mod.in_channels == mod.out_channels:  # depthwise
                out = x.space
            else:
                return self.fix_inputs(node)
            self.attach(name, ("weight", "bias"), out, 0)
            return _Info(out, NCHW)
        if isinstance(mod, nn.Linear):
            block = x.block
            if block == NCHW:
                return self.fix_inputs(node)  # a Linear on the W axis of an image
            root = self.s.find(x.space)
            if block is None and not self.s.fixed[root]:
                size = self.s.size[root]
                if not size or mod.in_features % size:
                    return self.fix_inputs(node)
                block = mod.in_features // size
            if block is not None:  # None here: a fixed input (the image), nothing to attach
                self.attach(name, ("weight",), x.space, 1, block)
            out = self.s.new(mod.out_features)
            self.attach(name, ("weight", "bias"), out, 0)
            return _Info(out, 1)
        if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
            if x.block not in (NCHW, 1):
                return self.fix_inputs(node)
            self.attach(name, ("weight", "bias", "running_mean", "running_var"), x.space, 0)
            return x
        if isinstance(mod, _KEEP_MODULES):
            return x
        if isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                return self.fix_inputs(node)
            return _Info(x.space, None if x.block == NCHW else x.block)
        return self.fix_inputs(node)

    def flatten(self, node: fx.Node, start_dim: Any) -> _Info | None:
        x = self.first(node)
        if x is None or start_dim != 1:
            return self.fix_inputs(node)
        return _Info(x.space, None if x.block == NCHW else x.block)

    def elementwise(self, node: fx.Node) -> _Info | None:
        tensors = [self.info.get(a) for a in _tensor_args(node.args[:2])]
        tensors = [t for t in tensors if t is not None]
        if not tensors:
            return None
        first = tensors[0]
        for other in tensors[1:]:
            if other.block != first.block or first.block is None:
                return self.fix_inputs(node)
            self.s.union(first.space, other.space)
        return first

    def function(self, node: fx.Node) -> _Info | None:
        if node.target in _KEEP_FUNCTIONS:
            return self.first(node)
        if node.target in _ELEMENTWISE:
            return self.elementwise(node)
        if node.target is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return self.flatten(node, start)
        if node.target is getattr:  # x.shape and friends: not a tensor
            return None
        return self.fix_inputs(node)

    def method(self, node: fx.Node) -> _Info | None:
        target = str(node.target)
        if target in {"size", "dim"}:
            return None
        if target in _KEEP_METHODS:
            return self.first(node)
        if target in _ELEMENTWISE_METHODS:
            return self.elementwise(node)
        if target == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return self.flatten(node, start)
        if target in {"view", "reshape"} and len(node.args) == 3 and node.args[2] == -1:
            return self.flatten(node, 1)  # x.view(x.size(0), -1)
        return self.fix_inputs(node)

    def build(self) -> list[ChannelGroup]:
        try:
            graph = fx.symbolic_trace(self.model).graph
        except Exception as exc:  # noqa: BLE001 - tracing failures come in many types
            raise TicketmarkError(f"cannot trace {type(self.model).__name__} to find its "
                                  f"channels ({type(exc).__name__}: {exc})") from None
        for node in graph.nodes:
            if node.op in ("placeholder", "get_attr"):  # the image, or a raw tensor
                self.info[node] = self.fixed_new()
            elif node.op == "call_module":
                self.info[node] = self.module(node)
            elif node.op == "call_function":
                self.info[node] = self.function(node)
            elif node.op == "call_method":
                self.info[node] = self.method(node)
            elif node.op == "output":
                self.fix_inputs(node)
        order = {k: i for i, k in enumerate(self.state)}
        groups = []
        for root in sorted({self.s.find(i) for i in range(len(self.s.parent))}):
            size, members = self.s.size[root], self.s.members[root]
            if self.s.fixed[root] or not size or size < 2 or not members:
                continue
            if any(self.state[m.key].shape[m.dim] != size * m.block for m in members):
                continue  # a width the graph did not predict: leave it alone
            members = sorted(members, key=lambda m: (order[m.key], m.dim))
            groups.append(ChannelGroup(size, members))
        return sorted(groups, key=lambda g: (order[g.members[0].key], g.members[0].dim))


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Every set of tensors sharing one permutable channel index, in graph order.

    Useful beyond the attack: a verifier can re-align a permuted suspect to the owner's
    reference group by group.
    """
    return _Builder(model).build()


def _block_index(perm: torch.Tensor, block: int) -> torch.Tensor:
    return (perm.view(-1, 1) * block + torch.arange(block)).flatten()


@torch.no_grad()
def apply_permutation(model: nn.Module, groups: list[ChannelGroup],
                      perms: list[torch.Tensor]) -> nn.Module:
    """A copy of ``model`` where new channel ``i`` of each group is old channel ``perm[i]``."""
    out = clone_model(model)
    state = out.state_dict()
    for group, perm in zip(groups, perms, strict=True):
        for m in group.members:
            state[m.key] = state[m.key].index_select(m.dim, _block_index(perm, m.block))
    out.load_state_dict(state)
    return out


def permute_with_perms(model: nn.Module, *, seed: int = 0
                       ) -> tuple[nn.Module, list[ChannelGroup], list[torch.Tensor]]:
    """``permute`` that also returns the groups and the permutation drawn for each."""
    groups = channel_groups(model)
    gen = torch.Generator().manual_seed(int(seed))
    perms = []
    for g in groups:
        p = torch.randperm(g.size, generator=gen)
        if torch.equal(p, torch.arange(g.size)):  # every group really moves
            p = torch.roll(p, 1)
        perms.append(p)
    return apply_permutation(model, groups, perms), groups, perms


def permute(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Randomly permute the channels of every layer without changing the model's outputs."""
    return permute_with_perms(model, seed=seed)[0]
