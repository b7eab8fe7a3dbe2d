"""Query a suspect served over the Open Inference Protocol (KServe v2 REST).

Triton, KServe, Seldon MLServer and TorchServe answer ``POST /v2/models/{name}/infer``;
a thief deploying a stolen model most likely uses one of them, not ticketmark's own
protocol. Requests and answers use ``ticketmark.serving.oip`` (the same code the server
uses); transport, retries and the response size cap are the client's (``client``). Every
answer is distrusted: wrong shapes, types, counts or labels out of range are an
``EndpointError``, which the verifier reports as COULD NOT VERIFY.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from ticketmark.ownership.trigger.adapter import InputAdapter
from ticketmark.serving import oip

if TYPE_CHECKING:
    from ticketmark.ownership.trigger.client import ClientOptions


def query_answers_v2(url: str, x: np.ndarray, classes: int, opts: ClientOptions,
                     adapter: InputAdapter) -> np.ndarray:
    """Scores (N, classes) or top-1 labels (N,) for ``x`` (owner's N, C, H, W inputs).

    Asked ``opts.batch_size`` at a time; every batch must answer in the same form.
    """
    import urllib.parse

    from ticketmark.ownership.trigger.adapter import V2_PATH
    from ticketmark.ownership.trigger.client import (
        EndpointError,
        _Deadline,
        _post_with_retries,
        join_answers,
        parse_endpoint,
    )

    if not V2_PATH.match(urllib.parse.urlsplit(url).path):
        raise EndpointError(f"a KServe v2 endpoint is http://HOST:PORT/v2/models/NAME/infer, "
                            f"not {url}")
    endpoint = parse_endpoint(url)
    deadline = _Deadline(opts.deadline)  # the same total deadline and no-redirect rule
    answers = []
    for start in range(0, len(x), opts.batch_size):
        batch = adapter.apply(x[start : start + opts.batch_size])
        body = json.dumps(oip.encode_request(batch, adapter.input_name, adapter.datatype,
                                             adapter.output or None)).encode()
        answer = _post_with_retries(endpoint, body, opts, deadline)
        try:
            obj = json.loads(answer)
        except RecursionError:
            raise EndpointError("endpoint answered JSON nested too deeply") from None
        except (ValueError, UnicodeDecodeError):
            raise EndpointError("endpoint answered malformed JSON") from None
        try:
            answers.append(oip.answers_from_response(obj, len(batch), classes,
                                                     adapter.output or None))
        except ValueError as exc:
            raise EndpointError(f"endpoint (KServe v2) {exc}") from None
    return join_answers(answers, "endpoint (KServe v2)")
