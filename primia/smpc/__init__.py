"""Encrypted inference: two-party additive secret sharing over Z_2^64 with a dealer of correlated randomness.

The data owner and the model owner each hold one additive share of every value; the dealer only hands out
correlated randomness (Beaver triples, binary AND triples, shared bits) ahead of time and never sees a share
of the image or of the weights. Pure torch on int64 tensors, whose arithmetic wraps mod 2^64.
"""
