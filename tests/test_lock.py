"""Scheme 1: choosers pick present connections, the lock keeps counts, unlock is exact."""

from __future__ import annotations

import pytest
import torch

from ticketmark.errors import TicketmarkError
from ticketmark.io import load_ticket
from ticketmark.ownership.lock import (
    CHOOSERS,
    PATH_METHODS,
    ChooserContext,
    choose,
    lock_ticket,
    read_key,
    unlock_ticket,
    write_key,
)
from ticketmark.ownership.lock.choosers import Selection
from ticketmark.ownership.lock.keyfile import LockKey, seal, unseal
from ticketmark.ownership.lock.locking import spread_counts
from ticketmark.ownership.lock.paths import build_plan, kernel_views, path_ranks, walk


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def assert_bit_identical(a, b):
    assert list(a.mask) == list(b.mask)
    for k in a.mask:
        assert torch.equal(a.mask[k], b.mask[k]), k
    assert set(a.state) == set(b.state)
    for k in a.state:
        assert a.state[k].dtype == b.state[k].dtype and torch.equal(bits(a.state[k]),
                                                                    bits(b.state[k])), k
    for k in a.rewind or {}:
        assert torch.equal(bits(a.rewind[k]), bits(b.rewind[k])), k
    assert a.fingerprint() == b.fingerprint()


@pytest.fixture(scope="module")
def resnet(resnet_ticket):
    return load_ticket(resnet_ticket)


@pytest.fixture(scope="module")
def ctx(resnet):
    return ChooserContext(resnet, seed=3, batches=1, batch_size=64, ig_steps=2,
                          betweenness_k=16)


def test_ewp_follows_the_residual_stream(resnet, ctx):
    plan = ctx.plan
    by_name = {s.name: s for s in plan.steps}
    # Every block: conv1 reads the stream, conv2 writes the next stream register, and the
    # option-B shortcut joins exactly those two stream channels (not conv2's output).
    shortcut = "layer2.0.shortcut.0.weight"
    assert by_name[shortcut].pinned
    assert by_name[shortcut].src == by_name["layer2.0.conv1.weight"].src
    assert by_name[shortcut].dst == by_name["layer2.0.conv2.weight"].dst
    views = kernel_views(plan, resnet.mask, ctx.weights())
    sample = walk(plan, views, 300, generator=torch.Generator().manual_seed(0))
    hops = sample.hops
    writer: dict[str, str] = {}
    for step in plan.steps:
        h = hops[step.name]
        if step.pinned:
            ok = h[:, 0] >= 0
            assert bool(ok.any())
            assert torch.equal(h[ok, 1], hops[writer[step.src]][ok, 0])
            assert torch.equal(h[ok, 0], hops[writer[step.dst]][ok, 0])
            assert bool(views[step.name].present[h[ok, 0], h[ok, 1]].all())
            continue
        assert bool((views[step.name].magnitude[h[:, 0], h[:, 1]] > 0).all()), step.name
        if step.src in writer:
            prev_out = hops[writer[step.src]][:, 0]
            # a path only leaves its channel when that channel is a dead end (rare)
            assert float((h[:, 1] == prev_out).float().mean()) > 0.9, step.name
        writer[step.dst] = step.name


def test_ewp_prefers_heavy_kernels(resnet, ctx):
    plan = ctx.plan
    views = kernel_views(plan, resnet.mask, ctx.weights())
    gen = torch.Generator().manual_seed(1)
    name = "layer3.1.conv2.weight"
    heavy = walk(plan, views, 2000, generator=gen).hops[name]
    flat = walk(plan, views, 2000, uniform=True, generator=gen).hops[name]
    mag = views[name].magnitude
    assert mag[heavy[:, 0], heavy[:, 1]].mean() > 1.2 * mag[flat[:, 0], flat[:, 1]].mean()


def test_path_ranks_take_whole_paths_in_order(resnet, ctx):
    plan = ctx.plan
    views = kernel_views(plan, resnet.mask, ctx.weights())
    sample = walk(plan, views, 50, generator=torch.Generator().manual_seed(2))
    ranks = path_ranks(plan, sample)
    for step in plan.steps:
        h = sample.hops[step.name]
        h = h[h[:, 0] >= 0]
        on_path = torch.zeros_like(ranks[step.name], dtype=torch.bool)
        on_path[h[:, 0], h[:, 1]] = True
        assert torch.equal(on_path, ranks[step.name] >= 0)
    first = sample.hops[plan.steps[0].name][0]
    assert int(ranks[plan.steps[0].name][first[0], first[1]]) == 0


def test_path_ranks_follow_first_appearance_to_the_last_path():
    """Every kernel's rank is its order of first appearance, path by path, layer by layer,
    also at the tail of a long sample with absent shortcut kernels (-1 hops) in it (the
    ranking once tied every kernel first seen after as many positions as there were valid
    hops, and ordered those by id)."""
    from ticketmark.models import build_model
    from ticketmark.sparsity import Mask, magnitude_prune

    torch.manual_seed(0)
    model = build_model("resnet20s", 1, 10, 28)
    mask = magnitude_prune(model, Mask.ones(model), 0.8)
    plan = build_plan(model, mask)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in mask}
    sample = walk(plan, kernel_views(plan, mask, weights), 400,
                  generator=torch.Generator().manual_seed(5))
    assert any(bool((h[:, 0] < 0).any()) for h in sample.hops.values())  # the case at hand
    ranks = path_ranks(plan, sample)
    order: dict[tuple[str, int, int], int] = {}
    for p in range(sample.num_paths):
        for step in plan.steps:
            o, i = sample.hops[step.name][p].tolist()
            if o >= 0:
                order.setdefault((step.name, o, i), len(order))
    got = {(name, o, i): int(r[o, i]) for name, r in ranks.items()
           for o, i in torch.nonzero(r >= 0).tolist()}
    assert got == order


@pytest.mark.parametrize("method", list(CHOOSERS))
def test_choosers_remove_present_connections(resnet, ctx, method):
    budget = max(1, resnet.mask.count() // 100)
    kw = {"paths": 20} if method in PATH_METHODS else {"weights": budget}
    sel = choose(ctx, method, **kw).take(None if method in PATH_METHODS else budget)
    assert sel.count() > 0
    if method not in PATH_METHODS:
        assert budget <= sel.count() < budget + 10
    for name, removal in sel.removal.items():
        m = resnet.mask[name]
        assert not bool((removal & ~m).any()), f"{method} removes an absent weight"
        conns = sel.connections[name]
        if sel.level == "kernel":
            out, cin = m.shape[:2]
            kernel_any = m.reshape(out, cin, -1).any(-1)
            assert bool(kernel_any[conns[:, 0], conns[:, 1]].all()) if len(conns) else True
            expect = torch.zeros(out, cin, dtype=torch.bool)
            expect[conns[:, 0], conns[:, 1]] = True
            assert torch.equal(removal, expect.reshape(out, cin, 1).expand_as(
                m.reshape(out, cin, -1)).reshape(m.shape) & m)
        else:
            assert torch.equal(removal.flatten().nonzero().squeeze(1), conns)


def test_omp_takes_the_largest_weights(resnet, ctx):
    sel = choose(ctx, "omp").take(100)
    taken = torch.cat([resnet.state[n][r] for n, r in sel.removal.items()]).abs()
    left = torch.cat([resnet.state[n][resnet.mask[n] & ~r] for n, r in sel.removal.items()])
    assert float(taken.min()) >= float(left.abs().max())


def test_add_back_keeps_exact_layer_counts(resnet, ctx):
    sel = choose(ctx, "ewp", paths=30).take()
    locked, key = lock_ticket(resnet, sel, add_back=True, seed=5)
    assert locked.mask.layer_counts() == resnet.mask.layer_counts()
    assert locked.mask.count() == resnet.mask.count()
    assert key.removed_count() == key.added_count() == sel.count()
    for name in key.added:
        assert not bool(resnet.mask[name].flatten()[key.added[name]].any())
        assert not bool(locked.mask[name].flatten()[key.removed[name]].any())
        # the weights imply the declared mask: no added weight is zero
        assert torch.equal(locked.state[name] != 0, locked.mask[name])
    assert locked.rewind is resnet.rewind
    assert locked.meta["history"][-1] == {"kind": "lock", "params": {"add_back": True}}


def _with_dense_layer(ticket, name: str, free: int):
    """``ticket`` with layer ``name`` kept dense but for ``free`` pruned positions (like the
    README's ticket, whose layer2.0.shortcut.0 IMP left 76% dense)."""
    from dataclasses import replace

    from ticketmark.sparsity import Mask

    m = torch.ones_like(ticket.mask[name]).flatten()
    m[torch.randperm(m.numel(), generator=torch.Generator().manual_seed(0))[:free]] = False
    m = m.view_as(ticket.mask[name])
    w = ticket.state[name].clone()
    w = torch.where(m, torch.where(w == 0, torch.full_like(w, 0.01), w), torch.zeros_like(w))
    mask = Mask({n: (m if n == name else v) for n, v in ticket.mask.items()})
    return replace(ticket, state={**ticket.state, name: w}, mask=mask)


def test_add_back_spreads_what_a_dense_layer_has_no_room_for(resnet):
    shortcut = next(n for n in resnet.mask if "shortcut" in n)
    dense = _with_dense_layer(resnet, shortcut, free=7)
    cut = dense.mask[shortcut] & (torch.rand(dense.mask[shortcut].shape,
                                            generator=torch.Generator().manual_seed(1)) < 0.3)
    other = next(n for n in dense.mask if n != shortcut)
    cut_other = dense.mask[other] & (torch.rand(dense.mask[other].shape,
                                                generator=torch.Generator().manual_seed(2)) < 0.2)
    sel = Selection("omp", "weight", {shortcut: cut, other: cut_other}, {})
    assert sel.layer_counts()[shortcut] > 7  # more than the layer can take back
    locked, key = lock_ticket(dense, sel, add_back=True, seed=4)
    assert locked.mask.count() == dense.mask.count()  # the total is kept...
    assert key.added_count() == key.removed_count() == sel.count()
    assert key.added[shortcut].numel() == 7  # ...the dense layer takes what it has room for
    assert int(locked.mask[other].sum()) == int(dense.mask[other].sum())  # room: exact
    spilled = sel.layer_counts()[shortcut] - 7
    elsewhere = {n for n in key.added if n not in (shortcut, other)}
    assert elsewhere and sum(key.added[n].numel() for n in elsewhere) == spilled
    for name in key.added:  # only pruned positions, weights imply the mask
        assert not bool(dense.mask[name].flatten()[key.added[name]].any())
        assert torch.equal(locked.state[name] != 0, locked.mask[name])
    assert_bit_identical(unlock_ticket(locked, key), dense)


def test_add_back_without_room_anywhere_says_what_to_do(resnet):
    from dataclasses import replace

    from ticketmark.sparsity import Mask

    full = Mask({n: torch.ones_like(m) for n, m in resnet.mask.items()})
    state = {**resnet.state, **{n: torch.where(resnet.state[n] == 0, 0.01, resnet.state[n])
                                for n in full}}
    dense = replace(resnet, state=state, mask=full)
    name = next(iter(full))
    sel = Selection("omp", "weight", {name: full[name].clone()}, {})
    with pytest.raises(TicketmarkError, match="too few to add back .*without --add-back"):
        lock_ticket(dense, sel, add_back=True)
    assert spread_counts({"a": 3, "b": 10}, {"a": 5}) == {"a": 3, "b": 2}
    assert spread_counts({"a": 3, "b": 10, "c": 0}, {"a": 3, "c": 2}) == {"a": 3, "b": 2}


@pytest.mark.parametrize("passphrase", [None, "correct horse"])
def test_unlock_is_bit_identical(resnet, ctx, tmp_path, passphrase):
    sel = choose(ctx, "betweenness").take(resnet.mask.count() // 50)
    locked, key = lock_ticket(resnet, sel, add_back=True)
    assert locked.fingerprint() != resnet.fingerprint()
    path = write_key(tmp_path / "owner.lock", key, passphrase)
    restored = unlock_ticket(locked, read_key(path, passphrase))
    assert_bit_identical(restored, resnet)
    assert restored.meta == resnet.meta


def test_key_file_errors(resnet, ctx, tmp_path, conv_ticket):
    sel = choose(ctx, "omp").take(50)
    locked, key = lock_ticket(resnet, sel)
    enc = write_key(tmp_path / "enc.lock", key, "secret")
    plain = write_key(tmp_path / "plain.lock", key)
    with pytest.raises(TicketmarkError, match="wrong passphrase"):
        read_key(enc, "not the secret")
    with pytest.raises(TicketmarkError, match="encrypted"):
        read_key(enc)
    for path in (enc, plain):
        data = path.read_bytes()
        cut = tmp_path / f"cut-{path.name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(TicketmarkError, match="truncated"):
            read_key(cut, "secret")
    flipped = bytearray(plain.read_bytes())
    flipped[100] ^= 1
    with pytest.raises(TicketmarkError, match="corrupted"):
        unseal(bytes(flipped), None, "x")
    with pytest.raises(TicketmarkError, match="applies to"):
        choose(ctx, "omp", paths=5)
    with pytest.raises(TicketmarkError, match="not a ticketmark lock key"):
        LockKey.from_bytes(b"garbage" * 10, "x")
    with pytest.raises(TicketmarkError, match="another ticket"):
        unlock_ticket(resnet, key)  # the unlocked original is not the locked ticket
    other = load_ticket(conv_ticket)
    with pytest.raises(TicketmarkError, match="resnet20s"):
        unlock_ticket(other, key)
    assert unseal(seal(b"payload", None), None, "x") == b"payload"


def test_plan_for_a_plain_conv_net(conv_ticket):
    ticket = load_ticket(conv_ticket)
    plan = build_plan(ticket.build(), ticket.mask)
    assert [s.src for s in plan.steps][1:] == [s.dst for s in plan.steps][:-1]
    assert not plan.identities
