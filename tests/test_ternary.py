"""Ternary tickets: the 2-bit format, the QAT step, ``ternarize``/``unpack`` end to end, and
(slow) both credentials on the ternary ticket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tests.conftest import one_line_error, run_cli


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


def test_pack_unpack_round_trip_every_code_and_odd_lengths():
    from ticketmark.io.ternary import pack_codes, packed_length, unpack_codes

    g = torch.Generator().manual_seed(0)
    for shape in [(1,), (3,), (5, 7), (4, 3, 3, 3), (2, 2, 1, 1)]:
        codes = torch.randint(0, 4, shape, generator=g, dtype=torch.uint8)
        packed = pack_codes(codes)
        assert packed.dtype == torch.uint8 and len(packed) == packed_length(codes.numel())
        assert torch.equal(unpack_codes(packed, shape), codes)
    # first code in the lowest bits: [1, 2, 3, 0] -> 0b00_11_10_01
    assert pack_codes(torch.tensor([1, 2, 3, 0], dtype=torch.uint8)).tolist() == [0b00111001]


def test_qat_rounding_is_the_thiefs_twn_rule():
    from ticketmark.attacks.quantize import _ternary
    from ticketmark.finding.ternary import ternary_values

    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 8, 3, 3, generator=g) * (torch.rand(16, 8, 3, 3, generator=g) > 0.7)
    for t in (0.3, 0.7, 1.2):
        ours, theirs = ternary_values(w, t), _ternary(w, t)
        assert torch.equal(ours, theirs)
        assert len(ours.abs().unique()) == 2  # {0, a}
    assert torch.equal(ternary_values(torch.zeros(3, 3), 0.7), torch.zeros(3, 3))


def test_encode_refuses_what_it_would_lose():
    from ticketmark.errors import TicketmarkError
    from ticketmark.io.ternary import KEPT_ZERO, MINUS, PLUS, PRUNED, encode_layer

    w = torch.tensor([0.5, -0.5, 0.0, 0.0])
    mask = torch.tensor([True, True, True, False])
    layer = encode_layer(w, mask, "x")
    assert layer.codes.tolist() == [PLUS, MINUS, KEPT_ZERO, PRUNED]
    assert _bits(layer.decode()) == _bits(torch.tensor([0.5, -0.5, 0.0, 0.0]))
    with pytest.raises(TicketmarkError, match="not ternary"):
        encode_layer(torch.tensor([0.5, -0.25]), None, "x")
    with pytest.raises(TicketmarkError, match="mask prunes"):
        encode_layer(torch.tensor([0.5, 0.5]), torch.tensor([True, False]), "x")


def test_ste_step_trains_the_latent_weights_through_the_rounding():
    from ticketmark.finding.ternary import TernaryStep, ternary_values

    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    latent = net.weight.detach().clone()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    TernaryStep([net.weight], 0.7)(net, x, y)
    assert torch.equal(net.weight.detach(), latent)  # latent weights put back
    # the gradient is the one at the ternary weights, not at the latent ones (STE)
    ref = nn.Linear(6, 3)
    with torch.no_grad():
        ref.weight.copy_(ternary_values(latent, 0.7))
        ref.bias.copy_(net.bias)
    nn.functional.cross_entropy(ref(x), y).backward()
    assert torch.allclose(net.weight.grad, ref.weight.grad)
    plain = nn.Linear(6, 3)
    with torch.no_grad():
        plain.weight.copy_(latent)
        plain.bias.copy_(net.bias)
    nn.functional.cross_entropy(plain(x), y).backward()
    assert not torch.allclose(net.weight.grad, plain.weight.grad)


@pytest.fixture(scope="module")
def small_ticket(tmp_path_factory) -> Path:
    """An untrained conv2 on digits with a 60% random mask (no training: the format and the
    command are under test here, not accuracy)."""
    from ticketmark.data import load_dataset
    from ticketmark.io import Ticket, save_ticket
    from ticketmark.io.ticket import state_of
    from ticketmark.models import build_model
    from ticketmark.sparsity import Mask, random_prune

    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("conv2", data.in_channels, data.num_classes, data.image_size)
    mask = random_prune(Mask.ones(model), 0.6, seed=0)
    mask.apply(model)
    ticket = Ticket("conv2", "digits", data.in_channels, data.num_classes, data.image_size,
                    state_of(model), mask, state_of(model),
                    {"metrics": [{"test_acc": 10.0}], "train": {"epochs": 1}})
    return save_ticket(tmp_path_factory.mktemp("tern") / "small.safetensors", ticket)


def test_ternarize_and_unpack_end_to_end(small_ticket: Path, tmp_path: Path):
    from ticketmark.io import load_ticket
    from ticketmark.io.ternary import load_ternary

    out = tmp_path / "t3"
    res = run_cli("ternarize", "--ticket", small_ticket, "--out", out, "--epochs", "1",
                  "--batch-size", "256", "-q")
    assert res.returncode == 0, res.stderr
    assert "compact" in res.stderr and "bytes on disk" in res.stderr
    src, t3 = load_ticket(small_ticket), load_ticket(out)
    tern = out.with_suffix(".tern")
    assert tern.stat().st_size * 10 < small_ticket.stat().st_size  # 2 bits vs 32 (+ rewind)
    # every Conv/Linear weight is {-a, 0, +a}, the mask and the fingerprint are kept
    for name in t3.meta["ternary"]["layers"]:
        values = t3.state[name].abs().unique()
        assert len(values) <= 2 and float(values[0]) == 0.0
    assert all(torch.equal(src.mask[k], t3.mask[k]) for k in src.mask)
    assert t3.fingerprint() == src.fingerprint()
    assert t3.meta["history"][-1]["kind"] == "ternarize"
    assert t3.meta["metrics"][-1]["phase"] == "ternary"
    assert not any(torch.equal(src.state[k], t3.state[k]) for k in t3.meta["ternary"]["layers"])
    # the compact file reads back bit for bit, by API and through `unpack`
    back = load_ternary(tern)
    res = run_cli("unpack", "--in", tern, "--out", tmp_path / "back")
    assert res.returncode == 0, res.stderr
    again = load_ticket(tmp_path / "back")
    for t in (back, again):
        assert list(t.state) == list(t3.state)
        assert all(_bits(t.state[k]) == _bits(t3.state[k]) for k in t3.state)
        assert all(torch.equal(t.mask[k], t3.mask[k]) for k in t3.mask) and len(t.mask) == len(
            t3.mask)
    # outputs are never overwritten silently
    line = one_line_error(run_cli("ternarize", "--ticket", small_ticket, "--out", out))
    assert "exists" in line and "--force" in line


def test_bad_input_is_one_error_line(small_ticket: Path, tmp_path: Path):
    cases = [
        (("ternarize", "--ticket", small_ticket, "--out", tmp_path / "a", "--threshold", "0"),
         "threshold"),
        (("ternarize", "--ticket", small_ticket, "--out", tmp_path / "a", "--trigger-claim",
          small_ticket), "go together"),
        (("ternarize", "--ticket", small_ticket, "--out", small_ticket), "input ticket"),
        (("ternarize", "--ticket", tmp_path / "none", "--out", tmp_path / "a"), "no ticket"),
        (("unpack", "--in", small_ticket, "--out", tmp_path / "b"), "not a compact ternary"),
        (("unpack", "--in", tmp_path / "none.tern", "--out", tmp_path / "b"), "no compact"),
    ]
    for args, words in cases:
        assert words in one_line_error(run_cli(*args)), args


def _compact(tmp_path: Path, small_ticket: Path) -> Path:
    from ticketmark.finding.ternary import round_model, ternary_layers
    from ticketmark.io import load_ticket
    from ticketmark.io.ternary import save_ternary

    ticket = load_ticket(small_ticket)
    model, _ = round_model(ticket.build(), ternary_layers(ticket.build()), 0.7, ticket.mask)
    t3 = ticket.with_model(model)
    return save_ternary(tmp_path / "c", t3, ternary_layers(model))


def test_hostile_compact_files_are_refused(small_ticket: Path, tmp_path: Path):
    from ticketmark.errors import TicketmarkError
    from ticketmark.io.ternary import FORMAT, load_ternary

    path = _compact(tmp_path, small_ticket)
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    header = json.loads(meta["ticket"])
    layer = next(iter(header["layers"]))

    def variant(name: str, tensors: dict, header: dict, fmt: str = FORMAT) -> Path:
        p = tmp_path / f"{name}.tern"
        save_file(tensors, str(p), metadata={"format": fmt, "ticket": json.dumps(header)})
        return p

    short = dict(tensors, **{f"codes.{layer}": tensors[f"codes.{layer}"][:-1]})
    negative = dict(tensors, **{f"scale.{layer}": torch.tensor(-1.0)})
    extra = dict(tensors, evil=torch.zeros(1))
    cases = {
        variant("short", short, header): "do not fit",
        variant("neg", negative, header): "scale",
        variant("extra", extra, header): "unexpected tensor",
        variant("model", tensors, {**header, "model": "nope"}): "unknown model",
        variant("dims", tensors, {**header, "num_classes": 10**9}): "num_classes",
        variant("fmt", tensors, header, "other/1"): "not a compact ternary",
        variant("shape", tensors, {**header, "layers": {layer: {"shape": [1], "masked": 1}}}):
            "has shape",
    }
    for p, words in cases.items():
        with pytest.raises(TicketmarkError, match=words):
            load_ternary(p)
    torn = tmp_path / "torn.tern"
    torn.write_bytes(path.read_bytes()[:100])
    with pytest.raises(TicketmarkError):
        load_ternary(torn)


@pytest.mark.slow
def test_both_credentials_verify_on_the_ternary_ticket(conv_ticket: Path, tmp_path: Path):
    """The owner's flow: embed, trigger embed, ternarize keeping the trigger set; the
    signature claim made before ternarisation and the trigger claim both read OWNED."""
    def ok(*args: str) -> str:
        res = run_cli(*args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr + res.stdout
        return res.stdout

    ok("keygen", "--out", "owner")
    ok("embed", "--ticket", conv_ticket, "--key", "owner.pem", "--message", "ACME", "--out",
       "signed.safetensors", "--claim", "sig.claim.json", "-q")
    ok("trigger", "embed", "--ticket", "signed.safetensors", "--key", "owner.pem", "--out",
       "release", "--claim-out", "trig.claim.json", "--reveal-out", "trig.reveal.json", "-q")
    ok("ternarize", "--ticket", "release", "--out", "t3", "--epochs", "3", "-q",
       "--trigger-claim", "trig.claim.json", "--trigger-reveal", "trig.reveal.json")
    sig = ok("verify", "--suspect", "t3.safetensors", "--claim", "sig.claim.json", "--reveal",
             "signed.signature.reveal.json")
    assert sig.startswith("signature: OWNED"), sig
    trig = ok("verify", "--suspect", "t3.safetensors", "--claim", "trig.claim.json",
              "--reveal", "trig.reveal.json")
    assert trig.startswith("trigger: OWNED"), trig
    # the compact file, unpacked, is the same model: the same verdicts
    ok("unpack", "--in", "t3.tern", "--out", "back")
    assert ok("verify", "--suspect", "back.safetensors", "--claim", "sig.claim.json",
              "--reveal", "signed.signature.reveal.json").startswith("signature: OWNED")
