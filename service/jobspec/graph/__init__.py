"""A spec's layers as a graph, worked out without TensorFlow.

:func:`infer` checks how the layers connect (:mod:`.wiring`: names, inputs, cycles, layers
nothing uses) and works out each layer's output shape, parameters and the activations it keeps
(:mod:`.shapes`, Keras 3's arithmetic), returning a :class:`GraphInfo` or the errors, each
naming its layer (``model.layers.1 (conv2d): …``), the shapes and the fix.
"""

from service.jobspec.graph.infer import GraphInfo, LayerInfo, activations_per_sample, infer

__all__ = ["GraphInfo", "LayerInfo", "activations_per_sample", "infer"]
