"""Privacy attack audits (pure torch): gradient inversion against what the coordinator could see,
with the leakage metrics of reconstructions."""
