"""Micro-benchmarks of the engine's own kernels; their results logs sit beside them."""
