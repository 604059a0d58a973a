"""Secure aggregation (SecAgg, Bonawitz et al. 2017, with the SecAgg+ neighbour graph of Bell et al.
2020): the coordinator learns the sum of the hospitals' vectors and nothing about any one of them.

Pure functions and a small state machine; `transport` carries its messages through the object store.
"""
