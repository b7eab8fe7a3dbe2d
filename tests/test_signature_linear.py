"""The QR signature in a linear layer (an MLP's; a transformer's projections are the same
shape): one weight per module, as in a 1x1 convolution (``embed.as_kernels``)."""

from __future__ import annotations

import pytest

from ticketmark.finding import FindConfig, run_imp
from ticketmark.io import load_ticket, save_ticket
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.signature.embed import EmbedOptions, embed_signature
from ticketmark.ownership.signature.verify import verify_claim
from ticketmark.ownership.verdict import NOT_OWNED, OWNED, VerifyOptions
from ticketmark.training import TrainConfig


def _mlp(out, seed: int):
    cfg = FindConfig(model="lenet300", dataset="digits", rounds=1, rate=0.6, rewind_epoch=1,
                     train=TrainConfig(epochs=3, batch_size=64, seed=seed))
    run_imp(cfg, out, progress=False)
    return load_ticket(out / "ticket.safetensors")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return _mlp(tmp_path_factory.mktemp("mlp"), 0), _mlp(tmp_path_factory.mktemp("mlp2"), 5)


def test_a_linear_layer_holds_the_code(mlp, tmp_path):
    ticket, stranger = mlp
    with pytest.raises(Exception, match="layers that fit|1x1|entries|linear|no conv"):
        embed_signature(ticket, load_private_key(keygen(tmp_path / "k0")[0]), "m",
                        EmbedOptions(epochs=0, progress=False, hidden_bits=0))
    res = embed_signature(ticket, load_private_key(keygen(tmp_path / "k")[0]), "mlp owner",
                          EmbedOptions(epochs=1, min_entries=1, progress=False))
    layer = res.claim.params["layer"]
    assert res.ticket.state[layer].dim() == 2  # a Linear weight
    signed = save_ticket(tmp_path / "signed", res.ticket)
    v = verify_claim(str(signed), res.claim, VerifyOptions())
    assert v.status == OWNED and v.evidence["tag_decoded"], v.reason
    other = save_ticket(tmp_path / "stranger", stranger)
    for search in (False, True):
        n = verify_claim(str(other), res.claim, VerifyOptions(search=search))
        assert n.status == NOT_OWNED and n.p_value > 1e-3, n.reason
