"""Scheme 3: trigger sets derived from a secret with HMAC-SHA256, verified black-box.

``generate`` draws the set, ``folder`` reads the classic image-folder set, ``commitment``
binds it to the claim, ``embed`` trains it into a ticket, ``client`` queries endpoints,
``stats`` is the binomial test and ``verify`` puts them together into a ``Verdict``.
"""
