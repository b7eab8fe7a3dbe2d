"""The same stolen weights, in every form a thief publishes them, verify identically.

Forms: the ticket itself; a plain ``.safetensors`` with ``model.`` prefixes; one with every
layer renamed and reordered; a ``torch.save``d training checkpoint (``module.`` prefixes,
optimizer state beside it); an ONNX export (BatchNorm folded by the exporter); an
``nn.Module``; a module pruned with ``torch.nn.utils.prune``. The signature verifier reads
them through ``ticketmark.io.suspect.load_suspect_weights``; until it calls that itself
(issue 15), ``_read_with_loader`` routes its file reading through the loader.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.utils.prune
from safetensors.torch import save_file

from tests.conftest import one_line_error, run_cli
from ticketmark.io import load_ticket, save_ticket
from ticketmark.io.suspect import load_suspect_weights, resolve_layer, shared_prefix
from ticketmark.ownership.claims import save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature import EmbedOptions, embed_signature
from ticketmark.ownership.signature.extract import kernel_norms
from ticketmark.ownership.verdict import OWNED, UNVERIFIABLE, VerifyOptions
from ticketmark.ownership.verify import verify_claim


@pytest.fixture(scope="module")
def signed(conv_ticket, tmp_path_factory):
    out = tmp_path_factory.mktemp("formats")
    key = keygen(out / "owner")[0]
    res = embed_signature(load_ticket(conv_ticket), load_private_key(key), "ACME",
                          EmbedOptions(epochs=0, progress=False))
    path = save_ticket(out / "stolen", res.ticket)
    claim = save_claim(out / "claim.json", res.claim)
    return SimpleNamespace(ticket=res.ticket, path=path, claim=claim, root=out,
                           layer=res.claim.params["layer"])


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every module renamed (``blocks.N``), in a shuffled order; the parameter kind
    (``weight``, ``bias``, ``running_mean``) stays, as it does when a thief rewraps layers."""
    items = list(state.items())
    random.Random(0).shuffle(items)
    return {f"blocks.{i}.{k.rsplit('.', 1)[-1]}": v.clone() for i, (k, v) in enumerate(items)}


@pytest.fixture(scope="module")
def forms(signed) -> dict[str, object]:
    state, root = signed.ticket.state, signed.root
    model = signed.ticket.build().eval()
    out: dict[str, object] = {"ticket": str(signed.path)}
    save_file({f"model.{k}": v.contiguous() for k, v in state.items()},
              str(root / "model.safetensors"))
    out["prefixed safetensors"] = str(root / "model.safetensors")
    save_file(_renamed(state), str(root / "renamed.safetensors"))
    out["renamed safetensors"] = str(root / "renamed.safetensors")
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}}},
               root / "checkpoint.pt")
    out["checkpoint .pt"] = str(root / "checkpoint.pt")
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(root / "model.onnx"),
                      dynamo=False)
    out["onnx"] = str(root / "model.onnx")
    out["nn.Module"] = model
    pruned = signed.ticket.build().eval()
    for name, module in pruned.named_modules():
        key = f"{name}.weight"
        if key in signed.ticket.mask:
            torch.nn.utils.prune.custom_from_mask(module, "weight",
                                                  signed.ticket.mask[key].float())
    out["torch prune"] = pruned
    return out


@pytest.fixture()
def _read_with_loader(monkeypatch):
    """The signature verifier reads suspects with the format-agnostic loader."""
    import ticketmark.ownership.signature.verify as sigverify

    monkeypatch.setattr(sigverify, "load_ticket",
                        lambda p: SimpleNamespace(state=load_suspect_weights(p)), raising=False)


def _connectivity(w: torch.Tensor) -> np.ndarray:
    return (kernel_norms(w) > 0).numpy()


FORMS = ["ticket", "prefixed safetensors", "renamed safetensors", "checkpoint .pt", "onnx",
         "nn.Module", "torch prune"]


@pytest.mark.parametrize("form", FORMS)
def test_loader_returns_the_claimed_layer(signed, forms, form):
    """Whatever the form, the claimed layer's connectivity is among the suspect's tensors;
    without renaming it keeps its name, and only the trained weights are read from a
    ticket (never its mask or rewind)."""
    weights = load_suspect_weights(forms[form])
    claimed = signed.ticket.state[signed.layer]
    target = _connectivity(claimed)
    same = [k for k, v in weights.items() if v.shape == claimed.shape
            and (_connectivity(v) == target).all()]
    assert same, form
    if form in ("ticket", "prefixed safetensors", "checkpoint .pt", "nn.Module",
                "torch prune"):
        assert set(weights) == set(signed.ticket.state)
        assert torch.equal(weights[signed.layer], claimed)
    assert not any(k.startswith(("mask.", "rewind.")) or k.endswith(("_orig", "_mask"))
                   for k in weights)


@pytest.mark.usefixtures("_read_with_loader")
@pytest.mark.parametrize("form", FORMS)
def test_every_form_verifies_like_the_ticket(signed, forms, form):
    reference = verify_claim(str(signed.path), signed.claim, VerifyOptions(search=True))
    got = verify_claim(forms[form], signed.claim, VerifyOptions(search=True))
    assert reference.status == OWNED
    assert got.status == OWNED, got.reason
    assert got.evidence["agree"] == reference.evidence["agree"]
    assert got.evidence["decode"] == reference.evidence["decode"]
    if form != "onnx":  # the exporter folds BatchNorm into the conv: same topology only
        assert got.p_value == pytest.approx(reference.p_value, rel=1e-9)


@pytest.mark.usefixtures("_read_with_loader")
def test_claimed_position_needs_names_or_search(signed, forms):
    """Prefixes are stripped, so the claimed layer is found by name; renamed layers say
    which option finds them."""
    assert verify_claim(forms["prefixed safetensors"], signed.claim).status == OWNED
    v = verify_claim(forms["renamed safetensors"], signed.claim)
    assert v.status == UNVERIFIABLE and "--search" in v.reason


def test_prefix_and_suffix_rules():
    assert shared_prefix(["model.a.weight", "model.b.weight"]) == "model.a."[:6]
    assert shared_prefix(["module.model.x", "module.model.y"]) == "module.model."
    assert shared_prefix(["weight"]) == ""
    assert shared_prefix(["m.weight"]) == "" or shared_prefix(["m.weight"]) == "m."
    w = {"backbone.layer1.conv.weight": torch.zeros(1), "head.fc.weight": torch.zeros(1)}
    assert resolve_layer(w, "layer1.conv.weight") == "backbone.layer1.conv.weight"
    assert resolve_layer(w, "fc.weight") == "head.fc.weight"
    assert resolve_layer({"a.w": torch.zeros(1), "b.w": torch.zeros(1)}, "w") is None


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: p.write_bytes(b"not a model at all"), "not a readable"),
    (lambda p: torch.save(torch.nn.Linear(2, 2), p), "pickled Python object"),
    (lambda p: torch.save(torch.zeros(3), p), "single tensor"),
    (lambda p: torch.save({"epoch": 3}, p), "no tensors"),
])
def test_bad_files_are_one_line_errors(tmp_path, signed, make, needle):
    path = tmp_path / "bad.pt"
    make(path)
    res = run_cli("verify", "--suspect", path, "--claim", signed.claim, "--search")
    # Until the signature verifier reads through the loader, ask the loader directly too.
    from ticketmark.errors import TicketmarkError

    with pytest.raises(TicketmarkError, match=needle):
        load_suspect_weights(path)
    one_line_error(res)


def test_onnx_external_data_outside_its_folder_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    tensor = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "8")):
        entry = tensor.external_data.add()
        entry.key, entry.value = k, v
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              initializer=[tensor])
    sub = tmp_path / "model"
    sub.mkdir()
    onnx.save(helper.make_model(graph), str(sub / "evil.onnx"))
    from ticketmark.errors import TicketmarkError

    with pytest.raises(TicketmarkError, match="outside the model's folder"):
        load_suspect_weights(sub / "evil.onnx")


def test_sharded_folder_reads_as_one_model(tmp_path, signed):
    items = list(signed.ticket.state.items())
    half = len(items) // 2
    save_file({k: v.contiguous() for k, v in items[:half]},
              str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: v.contiguous() for k, v in items[half:]},
              str(tmp_path / "model-00002-of-00002.safetensors"))
    weights = load_suspect_weights(tmp_path)
    assert set(weights) == set(signed.ticket.state)


def test_half_precision_export_reads_as_float32(tmp_path, signed):
    path = Path(tmp_path / "half.safetensors")
    save_file({k: v.half().contiguous() if v.is_floating_point() else v
               for k, v in signed.ticket.state.items()}, str(path))
    w = load_suspect_weights(path)[signed.layer]
    assert w.dtype == torch.float32
    assert (_connectivity(w) == _connectivity(signed.ticket.state[signed.layer])).all()
