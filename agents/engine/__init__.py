"""The local inference engine: continuous batching, a prefix cache, constrained decoding and packed
linear layers for Hugging Face models on a CPU (see README.md in this folder).

The rest of the project reaches it through model specs (``embedded``, a model folder), which
:mod:`mentalarena.agents.models` turns into a :class:`LocalChatModel`; these names are its whole
public surface.
"""

from mentalarena.agents.engine.generator import LocalChatModel, LocalGenerator, local_generator
from mentalarena.agents.engine.packed_linear import pack_linear_layers

__all__ = ["LocalChatModel", "LocalGenerator", "local_generator", "pack_linear_layers"]
