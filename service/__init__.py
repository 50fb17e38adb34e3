"""kerasyard control plane: spec, storage, REST API, queueing. Never imports TensorFlow/Keras."""

__version__ = "0.1.0"
