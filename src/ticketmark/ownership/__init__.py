"""Ownership credentials: owner keys and signed claims, and the three schemes.

``keys`` and ``claims`` are shared by every scheme: a claim binds an Ed25519 public key to a
ticket fingerprint and scheme parameters, and is signed.
"""
