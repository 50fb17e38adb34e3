"""The layers a job's model is made of, by Keras's own names.

A layer's ``type`` is the Keras class name in snake_case (``conv2d`` is ``keras.layers.Conv2D``)
and its fields are that constructor's argument names, with Keras's defaults, so a layer here is
``keras.layers.<Class>(**fields)`` in the worker (:func:`worker.training.model.build_model`).
Where Keras's default is ``None`` for "no activation", the field says ``"linear"``, the same
thing by its name.

Any layer may carry a ``name`` and ``inputs`` (the names of the layers it takes; ``"input"`` is
the model's input; the default is the layer before it). A spec with neither is a Sequential
stack; :mod:`.graph` checks the graph and works out each layer's output shape and parameters.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from service.jobspec.base import Activation, StrictModel

# A layer's name: Keras's layer names are free text; these are also MLflow- and path-safe.
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
INPUT = "input"  # the model's input, in a layer's inputs
MAX_INPUTS = 16
RECURRENT_ACTIVATIONS = Activation  # Keras takes any activation; its default is sigmoid


class LayerBase(StrictModel):
    name: str | None = Field(default=None, pattern=NAME_PATTERN, description=(
        "The layer's name, for other layers' inputs (and Keras's layer name)."))
    inputs: list[str] | None = Field(default=None, min_length=1, max_length=MAX_INPUTS,
                                     description="Names of the layers it takes ('input': the "
                                     "model's input); default: the layer before it.")

    @field_validator("name")
    @classmethod
    def _not_input(cls, name: str | None) -> str | None:
        if name == INPUT:
            raise ValueError(f"{INPUT!r} names the model's input; give the layer another name")
        return name


# --- core ---------------------------------------------------------------------------------------


class DenseLayer(LayerBase):
    type: Literal["dense"]
    units: int = Field(gt=0, description="Number of neurons.")
    activation: Activation = "linear"
    use_bias: bool = True


class DropoutLayer(LayerBase):
    type: Literal["dropout"]
    rate: float = Field(ge=0.0, lt=1.0, description="Fraction of inputs dropped in training.")


class BatchNormalizationLayer(LayerBase):
    type: Literal["batch_normalization"]


class LayerNormalizationLayer(LayerBase):
    type: Literal["layer_normalization"]
    epsilon: float = Field(default=0.001, gt=0.0, description="Added to the variance.")


class ActivationLayer(LayerBase):
    type: Literal["activation"]
    activation: Activation


class FlattenLayer(LayerBase):
    type: Literal["flatten"]


class ReshapeLayer(LayerBase):
    type: Literal["reshape"]
    target_shape: list[int] = Field(min_length=1, max_length=8, description=(
        "The shape of one sample after it; one entry may be -1 (worked out)."))


class EmbeddingLayer(LayerBase):
    type: Literal["embedding"]
    input_dim: int = Field(gt=0, description="Vocabulary size: token ids are 0..input_dim-1.")
    output_dim: int = Field(gt=0, description="Length of each token's vector.")


# --- convolution and pooling ----------------------------------------------------------------------

Padding = Literal["valid", "same"]
PADDING = ("'valid': no padding, the output shrinks by kernel_size - 1; 'same': zeros around "
           "the input, the output is input / strides (rounded up).")
KERNEL = "One number for every axis, or one per axis."
STRIDES = "The step between windows: one number, or one per axis."
Size = Annotated[int, Field(gt=0)]


def _sizes(rank: int, value, field: str):
    """An int, or a list of ``rank`` positive ints, as Keras takes ``kernel_size``."""
    if isinstance(value, list) and len(value) != rank:
        entries = "1 entry" if len(value) == 1 else f"{len(value)} entries"
        raise ValueError(f"{field} has {entries}; a {rank}-D layer takes {rank} "
                         f"(or one number for all)")
    return value


class _Windowed(LayerBase):
    """A layer over windows of ``RANK`` axes: each size an int, or a list of one per axis."""

    RANK: ClassVar[int] = 1

    @field_validator("kernel_size", "pool_size", "strides", check_fields=False)
    @classmethod
    def _rank(cls, value, info):
        return _sizes(cls.RANK, value, info.field_name)


class _Conv(_Windowed):
    filters: int = Field(gt=0, description="Number of output channels.")
    kernel_size: Size | list[Size] = Field(description="The window's size. " + KERNEL)
    strides: Size | list[Size] = Field(default=1, description=STRIDES)
    activation: Activation = Field(default="linear", description="Applied to the output.")
    use_bias: bool = Field(default=True, description="Whether the layer adds a bias.")
    padding: Padding = Field(default="valid", description=PADDING)


class Conv1DLayer(_Conv):
    type: Literal["conv1d"]


class Conv2DLayer(_Conv):
    type: Literal["conv2d"]
    RANK: ClassVar[int] = 2


class _Pool1D(_Windowed):
    pool_size: Size | list[Size] = Field(default=2, description="The window's size. " + KERNEL)
    strides: Size | list[Size] | None = Field(default=None, description="Default: pool_size.")
    padding: Padding = Field(default="valid", description=PADDING)


class _Pool2D(_Pool1D):
    RANK: ClassVar[int] = 2


class MaxPooling1DLayer(_Pool1D):
    type: Literal["max_pooling1d"]


class MaxPooling2DLayer(_Pool2D):
    type: Literal["max_pooling2d"]


class AveragePooling1DLayer(_Pool1D):
    type: Literal["average_pooling1d"]


class AveragePooling2DLayer(_Pool2D):
    type: Literal["average_pooling2d"]


class GlobalAveragePooling1DLayer(LayerBase):
    type: Literal["global_average_pooling1d"]


class GlobalAveragePooling2DLayer(LayerBase):
    type: Literal["global_average_pooling2d"]


class GlobalMaxPooling1DLayer(LayerBase):
    type: Literal["global_max_pooling1d"]


class GlobalMaxPooling2DLayer(LayerBase):
    type: Literal["global_max_pooling2d"]


class SpatialDropout1DLayer(LayerBase):
    type: Literal["spatial_dropout1d"]
    rate: float = Field(ge=0.0, lt=1.0, description="Fraction of channels dropped in training.")


class SpatialDropout2DLayer(LayerBase):
    type: Literal["spatial_dropout2d"]
    rate: float = Field(ge=0.0, lt=1.0, description="Fraction of channels dropped in training.")


# --- recurrent ------------------------------------------------------------------------------------


class _Recurrent(StrictModel):
    units: int = Field(gt=0, description="Size of the state (and of the output).")
    activation: Activation = Field(default="tanh", description="Of the state.")
    use_bias: bool = Field(default=True, description="Whether the layer adds biases.")
    return_sequences: bool = Field(default=False, description="Output every timestep "
                                   "(for another recurrent layer), not only the last.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Of the inputs.")


class SimpleRNNCell(_Recurrent):
    type: Literal["simple_rnn"]


class LSTMCell(_Recurrent):
    type: Literal["lstm"]
    recurrent_activation: RECURRENT_ACTIVATIONS = Field(default="sigmoid",
                                                         description="Of the gates.")


class GRUCell(_Recurrent):
    type: Literal["gru"]
    recurrent_activation: RECURRENT_ACTIVATIONS = Field(default="sigmoid",
                                                         description="Of the gates.")


# A recurrent layer inside ``bidirectional`` (no name or inputs of its own).
RecurrentSpec = Annotated[SimpleRNNCell | LSTMCell | GRUCell, Field(discriminator="type")]


class SimpleRNNLayer(LayerBase, SimpleRNNCell):
    type: Literal["simple_rnn"]


class LSTMLayer(LayerBase, LSTMCell):
    type: Literal["lstm"]


class GRULayer(LayerBase, GRUCell):
    type: Literal["gru"]


class BidirectionalLayer(LayerBase):
    type: Literal["bidirectional"]
    layer: RecurrentSpec = Field(description="The recurrent layer run forwards and backwards.")
    merge_mode: Literal["concat", "sum", "mul", "ave"] = Field(
        default="concat", description="How the two directions' outputs are joined.")


# --- merge ----------------------------------------------------------------------------------------


class AddLayer(LayerBase):
    type: Literal["add"]


class MultiplyLayer(LayerBase):
    type: Literal["multiply"]


class AverageLayer(LayerBase):
    type: Literal["average"]


class ConcatenateLayer(LayerBase):
    type: Literal["concatenate"]
    axis: int = Field(default=-1, description="The axis joined (of a sample; -1: the last).")


LAYER_CLASSES = (
    DenseLayer, DropoutLayer, BatchNormalizationLayer, LayerNormalizationLayer,
    ActivationLayer, FlattenLayer, ReshapeLayer, EmbeddingLayer, Conv1DLayer, Conv2DLayer,
    MaxPooling1DLayer, MaxPooling2DLayer, AveragePooling1DLayer, AveragePooling2DLayer,
    GlobalAveragePooling1DLayer, GlobalAveragePooling2DLayer, GlobalMaxPooling1DLayer,
    GlobalMaxPooling2DLayer, SpatialDropout1DLayer, SpatialDropout2DLayer, SimpleRNNLayer,
    LSTMLayer, GRULayer, BidirectionalLayer, AddLayer, MultiplyLayer, AverageLayer,
    ConcatenateLayer,
)
# Every layer type, by its spec name.
LAYER_TYPES: dict[str, type[LayerBase]] = {
    c.model_fields["type"].annotation.__args__[0]: c for c in LAYER_CLASSES}
MERGE_TYPES = ("add", "multiply", "average", "concatenate")
RECURRENT_TYPES = ("simple_rnn", "lstm", "gru")

Layer = Annotated[
    DenseLayer | DropoutLayer | BatchNormalizationLayer | LayerNormalizationLayer
    | ActivationLayer | FlattenLayer | ReshapeLayer | EmbeddingLayer | Conv1DLayer
    | Conv2DLayer | MaxPooling1DLayer | MaxPooling2DLayer | AveragePooling1DLayer
    | AveragePooling2DLayer | GlobalAveragePooling1DLayer | GlobalAveragePooling2DLayer
    | GlobalMaxPooling1DLayer | GlobalMaxPooling2DLayer | SpatialDropout1DLayer
    | SpatialDropout2DLayer | SimpleRNNLayer | LSTMLayer | GRULayer | BidirectionalLayer
    | AddLayer | MultiplyLayer | AverageLayer | ConcatenateLayer,
    Field(discriminator="type"),
]
