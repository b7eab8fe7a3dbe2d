"""Query a suspect served over the Open Inference Protocol (KServe v2 REST).

Triton, KServe, Seldon MLServer and TorchServe answer ``POST /v2/models/{name}/infer``;
a thief deploying a stolen model most likely uses one of them, not ticketmark's own
protocol. Requests and answers use ``ticketmark.serving.oip`` (the same code the server
uses): JSON tensors by default, or the binary-data extension both ways when the adapter
says ``binary = true``; an answer in binary tensors is read whichever was asked. Transport,
retries, the deadline and the response size cap are the client's (``client.run_batches``).
Every answer is distrusted: wrong shapes, types, counts, binary sizes or labels out of range
are an ``EndpointError``, which the verifier reports as COULD NOT VERIFY.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

import numpy as np

from ticketmark.ownership.trigger.adapter import InputAdapter
from ticketmark.serving import oip

if TYPE_CHECKING:
    from ticketmark.ownership.trigger.client import ClientOptions, Endpoint
    from ticketmark.transport import Reply


def query_answers_v2(endpoint: Endpoint, x: np.ndarray, classes: int, opts: ClientOptions,
                     adapter: InputAdapter) -> np.ndarray:
    """Scores (N, classes) or top-1 labels (N,) for ``x`` (owner's N, C, H, W inputs).

    Asked ``opts.batch_size`` at a time; every batch must answer in the same form.
    """
    from ticketmark.ownership.trigger.adapter import V2_PATH
    from ticketmark.ownership.trigger.client import EndpointError, run_batches

    if not V2_PATH.match(urllib.parse.urlsplit(endpoint.url).path):
        raise EndpointError(f"a KServe v2 endpoint is http://HOST:PORT/v2/models/NAME/infer, "
                            f"not {endpoint.url}")
    output = adapter.output or None

    def encode(batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
        return oip.encode_request(adapter.apply(batch), adapter.input_name, adapter.datatype,
                                  output, binary=adapter.binary)

    def decode(reply: Reply, n: int) -> np.ndarray:
        try:
            return oip.read_response(reply.body, reply.header(oip.BINARY_HEADER), n, classes,
                                     output)
        except ValueError as exc:
            raise EndpointError(f"endpoint (KServe v2) {exc}") from None

    return run_batches(endpoint, x, opts, encode, decode, "endpoint (KServe v2)")
