"""Each attack does exactly what it claims, on real tickets and every registry model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketmark.attacks import (
    ATTACKS,
    apply_attack,
    channel_groups,
    effective_bits,
    fill,
    finetune,
    noise,
    permute,
    permute_with_perms,
    prune,
    quantize,
)
from ticketmark.attacks.quantize import INT8_LEVELS
from ticketmark.errors import TicketmarkError
from ticketmark.io import load_ticket, save_ticket
from ticketmark.models import MODELS, build_model
from ticketmark.sparsity import Mask, prunable_names
from ticketmark.training import evaluate


@pytest.fixture(scope="module")
def rticket(resnet_ticket):
    return load_ticket(resnet_ticket)


@pytest.fixture(scope="module")
def cticket(conv_ticket):
    return load_ticket(conv_ticket)


@pytest.fixture(scope="module")
def small(digits):
    """A cut of digits for fine-tuning tests: what is tested is the mechanics, not accuracy."""
    from ticketmark.data import DataSplits

    return DataSplits(name="digits", train=digits.train.subset(torch.arange(256)),
                      val=digits.val.subset(torch.arange(32)),
                      test=digits.test.subset(torch.arange(64)), num_classes=10)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _weights(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach() for n in names}


# prune ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "ratio"), [("global", 0.0), ("global", 0.3),
                                               ("global", 0.9), ("layer", 0.5),
                                               ("random", 0.5), ("random", 0.9)])
def test_prune_reaches_exact_sparsity(rticket, method, ratio):
    model = rticket.build()
    names = prunable_names(model)
    before = Mask.from_weights(model, names)
    original = _state(model)
    out = prune(model, ratio, method=method, seed=3)
    after = Mask.from_weights(out, names)
    remaining = before.count()
    if method == "global":  # one ranking over all layers: the total is exact
        assert after.count() == remaining - round(ratio * remaining)
    else:  # the same fraction of each layer, exact per layer
        for n, c in before.layer_counts().items():
            assert after.layer_counts()[n] == c - round(ratio * c)
    for n in names:  # pruning only removes: survivors are untouched, nothing regrows
        assert not (after[n] & ~before[n]).any()
        w = dict(out.named_parameters())[n].detach()
        assert torch.equal(w[after[n]], original[n][after[n]])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())


def test_prune_magnitude_removes_smallest(cticket):
    model = cticket.build()
    out = prune(model, 0.5, method="global")
    names = prunable_names(model)
    old, new = _weights(model, names), _weights(out, names)
    removed = torch.cat([old[n][(old[n] != 0) & (new[n] == 0)].abs() for n in names])
    kept = torch.cat([new[n][new[n] != 0].abs() for n in names])
    assert removed.max() <= kept.min()


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_prune_ratio_out_of_range(cticket, ratio):
    with pytest.raises(TicketmarkError, match=r"\[0, 1\)"):
        prune(cticket.build(), ratio)


# quantize ---------------------------------------------------------------------------------

def test_quantize_int8_per_tensor_grid(rticket):
    model = rticket.build()
    out = quantize(model, scheme="int8")
    for n, w in _weights(out, list(_weights(out, [k for k in dict(out.named_parameters())
                                                  if k.endswith("weight")
                                                  and dict(out.named_parameters())[k].dim()
                                                  > 1]))).items():
        scale = _weights(model, [n])[n].abs().max() / INT8_LEVELS
        codes = w / scale
        assert torch.allclose(codes, codes.round(), atol=1e-3), n
        assert codes.abs().max() <= INT8_LEVELS + 1e-3
        assert len(torch.unique(w)) <= 2 * INT8_LEVELS + 1
    report = effective_bits(out)
    assert report.bits <= 8.0 and report.entropy <= report.bits + 1e-9


def test_quantize_int8_per_channel_grid(cticket):
    model = cticket.build()
    out = quantize(model, scheme="int8-channel")
    for m_old, m_new in zip(model.modules(), out.modules(), strict=True):
        if not isinstance(m_new, nn.Conv2d | nn.Linear):
            continue
        old, new = m_old.weight.detach(), m_new.weight.detach()
        scale = old.abs().flatten(1).amax(1).clamp_min(1e-12) / INT8_LEVELS
        codes = new.flatten(1) / scale[:, None]
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert codes.abs().max() <= INT8_LEVELS + 1e-3
        assert (new.flatten(1).unique(dim=0).shape[0]) >= 1
    assert effective_bits(out).bits <= 8.0


@pytest.mark.parametrize("threshold", [0.05, 0.7])
def test_quantize_ternary_values(rticket, threshold):
    out = quantize(rticket.build(), scheme="ternary", threshold=threshold)
    for m in out.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            values = torch.unique(m.weight.detach())
            a = values.abs().max()
            assert len(values) <= 3
            assert all(float(v) in (0.0, float(a), -float(a)) for v in values)
    assert effective_bits(out).bits <= 1.585 + 1e-3


def test_quantize_keeps_pruned_zeros(rticket):
    model = rticket.build()
    for scheme in ("int8", "int8-channel", "ternary"):
        out = quantize(model, scheme=scheme)
        for n, m in rticket.mask.items():
            assert (dict(out.named_parameters())[n].detach()[~m] == 0).all()


def test_quantize_rejects_unknown_scheme(cticket):
    with pytest.raises(TicketmarkError, match="unknown quantization scheme"):
        quantize(cticket.build(), scheme="int4")


# noise and fill ---------------------------------------------------------------------------

def test_noise_moves_survivors_only(rticket):
    model = rticket.build()
    out = noise(model, sigma=0.1, seed=1)
    for n, m in rticket.mask.items():
        old, new = _weights(model, [n])[n], _weights(out, [n])[n]
        assert (new[~m] == 0).all()
        delta = (new - old)[m]
        assert (delta != 0).float().mean() > 0.99
        rel = float(delta.std() / old[m].std())
        assert 0.07 < rel < 0.13, (n, rel)
    assert torch.equal(noise(model, 0.1, seed=1).state_dict()["fc.weight"],
                       out.state_dict()["fc.weight"])  # seeded


def test_fill_removes_every_zero_and_keeps_accuracy(rticket, digits):
    model = rticket.build()
    before = evaluate(model, digits.test)[0]
    for kw in ({}, {"scale": 0.05, "reference": "std"}):
        out = fill(model, seed=2, **kw)
        for n, m in rticket.mask.items():
            old, new = _weights(model, [n])[n], _weights(out, [n])[n]
            assert (new[~m] != 0).all(), n
            assert torch.equal(new[m], old[m])
        assert Mask.from_weights(out, list(rticket.mask)).sparsity() == 0.0
        assert abs(before - evaluate(out, digits.test)[0]) <= 0.5, kw


def test_fill_std_reference_overlaps_small_weights(rticket):
    """With ``reference='std'`` some filled values exceed the smallest real weight."""
    model = rticket.build()
    out = fill(model, 0.5, reference="std")
    overlaps = []
    for n, m in rticket.mask.items():
        new = _weights(out, [n])[n]
        overlaps.append(bool(new[~m].abs().max() > new[m].abs().min()))
    assert any(overlaps)
    quiet = fill(model, 0.01, reference="min")  # below every real weight in every layer
    for n, m in rticket.mask.items():
        new = _weights(quiet, [n])[n]
        assert new[~m].abs().max() < new[m].abs().min()


# permute ----------------------------------------------------------------------------------

def _randomise_bn(model: nn.Module, seed: int) -> None:
    """Default BN statistics (0 mean, 1 var, unit affine) are permutation-invariant; make
    them distinct per channel so that a missed BN would show in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.2)


# (in_channels, image size) per model: small inputs keep the big nets quick on CPU.
_SHAPES = {"lenet300": (1, 28), "conv2": (1, 28), "conv4": (3, 32), "conv6": (3, 32),
           "resnet20s": (3, 32), "resnet18": (3, 16), "vgg16": (3, 32)}


@pytest.mark.parametrize("name", list(MODELS))
def test_permute_preserves_outputs_and_moves_channels(name):
    assert set(_SHAPES) == set(MODELS), "a new model needs an input shape here"
    c, size = _SHAPES[name]
    torch.manual_seed(0)
    model = build_model(name, c, 10, size)
    _randomise_bn(model, 0)
    model.eval()
    x = torch.randn(4, c, size, size, generator=torch.Generator().manual_seed(1))
    out, groups, perms = permute_with_perms(model, seed=5)
    out.eval()
    with torch.no_grad():
        diff = float((model(x) - out(x)).abs().max())
    assert diff < 1e-4, diff
    # every hidden layer's output channels are in some group, and each group really moved
    convs_linears = [f"{n}.weight" for n, m in model.named_modules()
                     if isinstance(m, nn.Conv2d | nn.Linear)]
    row_owners = {mem.key for g in groups for mem in g.members if mem.dim == 0}
    assert set(convs_linears[:-1]) <= row_owners, set(convs_linears[:-1]) - row_owners
    assert convs_linears[-1] not in row_owners  # the logits keep their class order
    new_state, old_state = out.state_dict(), model.state_dict()
    for g, p in zip(groups, perms, strict=True):
        assert not torch.equal(p, torch.arange(g.size))
        first = g.members[0]
        assert not torch.equal(new_state[first.key], old_state[first.key]), g.label


def test_permute_resnet_stream_is_one_group():
    model = build_model("resnet20s", 3, 10, 32)
    groups = channel_groups(model)
    # 3 residual streams + 9 independent inner channels
    assert len(groups) == 12
    stream = next(g for g in groups if any(m.key == "conv1.weight" for m in g.members))
    keys = {(m.key, m.dim) for m in stream.members}
    assert ("layer1.2.conv2.weight", 0) in keys and ("layer2.0.shortcut.0.weight", 1) in keys
    inner = next(g for g in groups if g.members[0].key == "layer2.1.conv1.weight")
    assert {m.key for m in inner.members} == {
        "layer2.1.conv1.weight", "layer2.1.bn1.weight", "layer2.1.bn1.bias",
        "layer2.1.bn1.running_mean", "layer2.1.bn1.running_var", "layer2.1.conv2.weight"}


def test_permute_ticket_keeps_accuracy_and_sparsity(rticket, digits):
    model = rticket.build()
    out = permute(model, seed=1)
    assert evaluate(out, digits.test)[0] == evaluate(model, digits.test)[0]
    names = list(rticket.mask)
    assert Mask.from_weights(out, names).layer_counts() == rticket.mask.layer_counts()
    assert not torch.equal(Mask.from_weights(out, names)[names[0]], rticket.mask[names[0]])


# fine-tuning ------------------------------------------------------------------------------

def test_finetune_changes_weights_and_keeps_mask(cticket, small):
    model = cticket.build()
    mask = cticket.mask
    out = finetune(model, small, epochs=1, keep_mask=mask, seed=0)
    for n, m in mask.items():
        old, new = _weights(model, [n])[n], _weights(out, [n])[n]
        assert (new[~m] == 0).all()
        assert not torch.equal(new[m], old[m])
    dense = finetune(model, small, epochs=1, seed=0)
    assert Mask.from_weights(dense, list(mask)).sparsity() < 0.05  # pruned weights regrow


def test_finetune_last_touches_only_the_head(rticket, small):
    model = rticket.build()
    out = finetune(model, small, epochs=1, mode="last", lr=0.05)
    old, new = model.state_dict(), out.state_dict()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed == {"fc.weight", "fc.bias"} | {k for k in changed
                                                   if k.endswith("num_batches_tracked")}


def test_finetune_reinit_last_reinitialises(cticket, small):
    model = cticket.build()
    out = finetune(model, small, epochs=0, mode="reinit-last", seed=4)
    old, new = model.state_dict(), out.state_dict()
    head = [k for k in old if k.startswith("8.") or k.startswith("9.")]
    last = max((k for k in old if k.endswith(".weight")), key=lambda k: int(k.split(".")[0]))
    assert not torch.equal(old[last], new[last])
    assert all(torch.equal(old[k], new[k]) for k in old if k.split(".")[0]
               != last.split(".")[0]), head


def test_finetune_rejects_mismatched_data(cticket):
    from ticketmark.data import load_dataset

    with pytest.raises(TicketmarkError, match="input shape"):
        finetune(cticket.build(), load_dataset("mnist5k"), epochs=1)


# apply_attack and the history -------------------------------------------------------------

def test_apply_attack_records_history(cticket, small, tmp_path):
    stolen = apply_attack(cticket, "prune", {"ratio": 0.5}, small)
    stolen = apply_attack(stolen, "quantize", {"scheme": "int8"}, small)
    hist = stolen.meta["history"]
    assert [h["kind"] for h in hist] == ["prune", "quantize"]
    assert hist[0]["params"]["ratio"] == 0.5 and hist[0]["params"]["method"] == "global"
    for h in hist:
        assert isinstance(h["acc_before"], float) and isinstance(h["acc_after"], float)
    assert hist[1]["acc_before"] == hist[0]["acc_after"]
    assert hist[1]["effective_bits"] <= 8
    assert stolen.meta["metrics"][-1]["test_acc"] == hist[1]["acc_after"]
    assert stolen.mask.sparsity() == pytest.approx(1 - 0.5 * cticket.mask.density(), abs=1e-3)
    path = save_ticket(tmp_path / "stolen", stolen)
    assert load_ticket(path).meta["history"] == hist
    assert "history" not in cticket.meta or len(cticket.meta["history"]) == 0


def test_every_attack_leaves_its_input_alone(cticket, small):
    model = cticket.build()
    before = _state(model)
    for kind, fn in ATTACKS.items():
        if kind in ("finetune", "distill"):
            fn(model, small, epochs=1)
        elif kind == "prune":
            fn(model, 0.5)
        else:
            fn(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize(("kind", "params", "needle"), [
    ("melt", {}, "unknown attack 'melt'"),
    ("prune", {"ratio": 1.0}, "[0, 1)"),
    ("prune", {}, "needs parameter 'ratio'"),
    ("noise", {"sigmaa": 0.1}, "no parameter 'sigmaa'"),
    ("finetune", {"mode": "first"}, "unknown fine-tuning mode"),
])
def test_apply_attack_bad_input(cticket, small, kind, params, needle):
    with pytest.raises(TicketmarkError) as err:
        apply_attack(cticket, kind, params, small)
    assert needle in str(err.value)


def test_apply_attack_rejects_other_input_shape(cticket):
    from ticketmark.data import load_dataset

    with pytest.raises(TicketmarkError, match=r"input shape \(1, 28, 28\)"):
        apply_attack(cticket, "noise", {}, load_dataset("mnist5k"))


# distillation -----------------------------------------------------------------------------

def test_distill_trains_a_fresh_student_with_a_fresh_mask(cticket, small):
    from ticketmark.attacks import distill

    teacher = cticket.build()
    names = list(cticket.mask)
    student = distill(teacher, small, epochs=1, seed=1)
    smask = Mask.from_weights(student, names)
    assert smask.layer_counts() == cticket.mask.layer_counts()  # same capacity per layer
    for n in names:
        assert not torch.equal(smask[n], cticket.mask[n])  # ... at other positions
        overlap = (smask[n] & cticket.mask[n]).float().sum() / cticket.mask[n].sum()
        assert overlap < 0.8
    same = distill(teacher, small, epochs=1, mask="same")
    assert all(torch.equal(Mask.from_weights(same, names)[n], cticket.mask[n]) for n in names)
    with pytest.raises(TicketmarkError, match="unknown student mask"):
        distill(teacher, small, mask="half")


@pytest.mark.slow
def test_distill_recovers_accuracy(cticket, digits):
    from ticketmark.attacks import distill

    teacher = cticket.build()
    student = distill(teacher, digits, epochs=20)
    assert evaluate(student, digits.test)[0] > evaluate(teacher, digits.test)[0] - 5


# BatchNorm recalibration ------------------------------------------------------------------

def test_recalibrate_bn_changes_statistics_only(rticket, small):
    from ticketmark.attacks import recalibrate_bn

    model = prune(rticket.build(), 0.5, method="layer")
    out = recalibrate_bn(model, small, images=128)
    old, new = model.state_dict(), out.state_dict()
    for k in old:
        if k.endswith(("running_mean", "running_var")):
            assert not torch.equal(old[k], new[k]), k
        elif not k.endswith("num_batches_tracked"):
            assert torch.equal(old[k], new[k]), k
    assert not out.training


def test_apply_attack_recalibrates_unless_told_not_to(rticket, small):
    plain = apply_attack(rticket, "noise", {"sigma": 0.1, "recalibrate": 0}, small,
                         acc_before=0.0)
    recal = apply_attack(rticket, "noise", {"sigma": 0.1}, small, acc_before=0.0)
    assert recal.meta["history"][-1]["recalibrated"] is True
    assert recal.meta["history"][-1]["params"]["recalibrate"] == 1024
    assert "recalibrated" not in plain.meta["history"][-1]
    for k, v in rticket.state.items():  # recalibration touches statistics, never weights
        if k.endswith("running_mean"):
            assert torch.equal(plain.state[k], v) and not torch.equal(recal.state[k], v)
        elif k.endswith("weight"):
            assert torch.equal(plain.state[k], recal.state[k])


# plans ------------------------------------------------------------------------------------

def test_plan_expands_lists_and_rejects_mistakes(tmp_path):
    from ticketmark.attacks.sweep import load_plan

    plan = tmp_path / "plan.toml"
    plan.write_text('[[attack]]\nkind = "prune"\nmethod = ["global", "layer"]\n'
                    'ratio = [0.2, 0.5]\nnames = ["layer1.0.conv1.weight"]\n\n'
                    '[[attack]]\nkind = "permute"\nlabel = "perm"\n')
    rows = load_plan(plan)
    assert [(r.kind, r.params.get("method"), r.params.get("ratio")) for r in rows[:4]] == [
        ("prune", "global", 0.2), ("prune", "global", 0.5), ("prune", "layer", 0.2),
        ("prune", "layer", 0.5)]
    assert rows[0].params["names"] == ["layer1.0.conv1.weight"]  # a list param, not swept
    assert rows[4].label == "perm"
    bad = {"typo.toml": ('[[attack]]\nkind = "prune"\nration = [0.5]\n',
                         "has no parameter 'ration'"),
           "empty.json": ('{"attacks": []}', "expected a list of attacks"),
           "nokind.json": ('[{"ratio": 0.5}]', "has no 'kind'"),
           "broken.toml": ("[[attack]\n", "not a valid plan"),
           "plan.txt": ("", "must be .toml or .json")}
    for name, (text, needle) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TicketmarkError, match=needle):
            load_plan(tmp_path / name)
