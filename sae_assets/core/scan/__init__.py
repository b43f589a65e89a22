"""The activation scan: one LM + SAE pass (a fused, checked SAE encoder) giving feature stats, top and quantile
examples, co-occurrence over k-token windows and activation profiles, with its memory estimate."""
