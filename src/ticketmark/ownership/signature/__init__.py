"""Scheme 2: a signed QR code drawn into a ticket's channel connectivity.

``embed.embed_signature`` draws and retrains, ``verify.verify_claim`` checks a suspect;
``qr`` (codes and decoding), ``placement`` (vectorised position search), ``existing``
(codes already in a ticket, whose layers embedding leaves alone), ``extract``
(connectivity from weights, channel re-alignment) and ``stats`` (exact chance p-values) are
the parts they share.
"""

from ticketmark.ownership.signature.embed import EmbedOptions, EmbedResult, embed_signature
from ticketmark.ownership.signature.verify import verify_claim

__all__ = ["EmbedOptions", "EmbedResult", "embed_signature", "verify_claim"]
