"""vi_gen: generative models as variational inference (Su 2018) in JAX/Flax.

The public API is `vi_gen.losses` (and `vi_gen.gmm`); `python -m
vi_gen.main` trains, evaluates and samples. README.md has the layout.
"""
