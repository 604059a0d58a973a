"""Differential privacy: the accountants, the noise and the budgets (pure functions and small objects).

- `accounting`: a hospital's sample-level account (Opacus' PRV or RDP accountant over DP-SGD steps),
  bound to its federation and hospital, with noise planning from a budget;
- `skellam`: the distributed Skellam mechanism for client-level DP under secure aggregation - its
  quantization, noise shares and RDP accounting (Agarwal, Kairouz, Liu, NeurIPS 2021);
- `budget`: the checks that make a budget fail closed.
"""
