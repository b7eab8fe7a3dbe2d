"""A model exported to ONNX the usual ways verifies like the ticket it came from.

``torch.onnx.export(..., dynamo=False)`` folds BatchNorm into the convolutions (a per-channel
rescaling) and names them ``onnx::Conv_NNN``; the default (dynamo) exporter keeps the
names. The signature is found by shape and content (``--search``), never by name.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_cli
from ticketmark.io import load_ticket
from ticketmark.ownership.claims import save_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature.embed import EmbedOptions, embed_signature

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def signed(resnet_ticket, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_signed")
    key = keygen(out / "owner")[0]
    res = embed_signature(load_ticket(resnet_ticket), load_private_key(key), "ACME",
                          EmbedOptions(epochs=1, progress=False, hidden_bits=0))
    return res.ticket, save_claim(out / "claim.json", res.claim), out


@pytest.mark.parametrize("dynamo", [False, True])
def test_both_exporters_verify_owned_with_search(signed, dynamo):
    ticket, claim, out = signed
    if dynamo:
        pytest.importorskip("onnxscript")
    model = ticket.build().eval()
    x = torch.randn(1, ticket.in_channels, ticket.image_size, ticket.image_size)
    path = out / f"model_{'dynamo' if dynamo else 'legacy'}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo)
    names = [i.name for i in onnx.load(str(path)).graph.initializer]
    if not dynamo:  # BatchNorm folded: the conv weights lost their names
        assert any(n.startswith("onnx::Conv") for n in names)
    res = run_cli("verify", "--suspect", path, "--claim", claim, "--search")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OWNED" in res.stdout and "NOT OWNED" not in res.stdout
