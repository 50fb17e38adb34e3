"""The model as a graph at the door: shapes, parameters, activations and the errors."""

from __future__ import annotations

import pytest

from service.jobspec import SpecError, validate_job
from service.jobspec.graph import infer
from service.jobspec.models import ModelSpec
from service.jobspec.shapes import DatasetInfo, UploadedModel

DIGITS = {"kind": "sklearn", "name": "digits"}
TOKENS = {"kind": "sklearn", "name": "digits", "standardize": False}  # integers 0..16
OUT = {"type": "dense", "units": 10, "activation": "softmax"}


def job(layers: list, dataset: dict = DIGITS, **model) -> dict:
    return {"name": "g", "dataset": dataset, "model": {"layers": layers, **model},
            "compile": {"loss": "sparse_categorical_crossentropy", "optimizer": "adam"},
            "fit": {"epochs": 1, "batch_size": 32}}


def errors_of(spec: dict, **kw) -> list:
    with pytest.raises(SpecError) as exc:
        validate_job(spec, **kw)
    return exc.value.details


def only(spec: dict, loc: str, **kw):
    """The one error at ``loc`` (there is exactly one)."""
    found = [d for d in errors_of(spec, **kw) if d.loc == loc]
    assert len(found) == 1, errors_of(spec, **kw)
    return found[0]


def layers_of(layers: list) -> list:
    return ModelSpec.model_validate({"layers": layers}).layers


# --- how the layers connect ---------------------------------------------------------------


def test_a_cycle_names_its_layers():
    d = only(job([{"type": "dense", "units": 8, "name": "a", "inputs": ["c"]},
                  {"type": "dense", "units": 8, "name": "b"},
                  {"type": "dense", "units": 8, "name": "c"}, OUT]), "model.layers.0.inputs")
    assert d.msg.startswith("model.layers.0 (dense): ")
    assert "'a' -> 'b' -> 'c' -> 'a' form a cycle" in d.msg and d.value == ["a", "b", "c"]


def test_a_layer_taking_itself_is_a_cycle():
    d = only(job([{"type": "dense", "units": 8, "name": "a"},
                  {"type": "dense", "units": 8, "name": "s", "inputs": ["s"]}, OUT]),
             "model.layers.1.inputs")
    assert "'s' -> 's' form a cycle" in d.msg


def test_an_unknown_name_gets_a_did_you_mean():
    d = only(job([{"type": "dense", "units": 8}, {"type": "dense", "units": 10,
                  "activation": "softmax", "inputs": ["dens_0"]}]), "model.layers.1.inputs.0")
    assert "no layer is named 'dens_0'; did you mean 'dense_0'?" in d.msg
    assert d.msg.startswith("model.layers.1 (dense): ")


def test_a_layer_nothing_uses_is_named():
    d = only(job([{"type": "dense", "units": 8, "name": "lost"},
                  {"type": "dense", "units": 8, "inputs": ["input"]}, OUT]), "model.layers.0")
    assert d.msg.startswith("model.layers.0 (dense): no layer takes its output 'lost'")


def test_duplicate_names():
    d = only(job([{"type": "dense", "units": 8, "name": "h"},
                  {"type": "dense", "units": 10, "activation": "softmax", "name": "h"}]),
             "model.layers.1.name")
    assert "also the name of model.layers.0 (dense)" in d.msg


def test_a_merge_needs_two_inputs():
    d = only(job([{"type": "dense", "units": 8}, {"type": "add"}, OUT]), "model.layers.1.inputs")
    assert d.msg.startswith("model.layers.1 (add): a merge layer takes at least 2 inputs")


def test_a_plain_layer_takes_one_input():
    d = only(job([{"type": "dense", "units": 8, "name": "a"},
                  {"type": "dense", "units": 8, "name": "b", "inputs": ["input"]},
                  {**OUT, "inputs": ["a", "b"]}]), "model.layers.2.inputs")
    assert "takes 1 input, got 2 ('a', 'b'); merge them first" in d.msg


def test_merge_shapes_must_meet():
    d = only(job([{"type": "dense", "units": 8, "name": "a"},
                  {"type": "dense", "units": 4, "name": "b", "inputs": ["input"]},
                  {"type": "add", "inputs": ["a", "b"]}, OUT]), "model.layers.2")
    assert d.msg.startswith("model.layers.2 (add): add needs inputs of one shape, got "
                            "'a' (8,), 'b' (4,)")


def test_concatenate_joins_along_its_axis_and_checks_the_others():
    two = [{"type": "reshape", "target_shape": [8, 8], "name": "r"},
           {"type": "dense", "units": 3, "name": "d"}]
    graph, errors = infer(layers_of([*two, {"type": "concatenate", "inputs": ["r", "d"]}]),
                          (64,))
    assert errors == [] and graph.output_shape == (8, 11)
    graph, errors = infer(layers_of([*two, {"type": "concatenate", "axis": 0,
                                            "inputs": ["r", "d"]}]), (64,))
    assert graph is None and [e.loc for e in errors] == ["model.layers.2"]
    assert "'r' (8, 8), 'd' (8, 3)" in errors[0].msg


# --- shapes ---------------------------------------------------------------------------------


def test_a_kernel_too_big_for_its_input():
    d = only(job([{"type": "reshape", "target_shape": [8, 8, 1]},
                  {"type": "conv2d", "filters": 4, "kernel_size": 9},
                  {"type": "flatten"}, OUT]), "model.layers.1")
    assert d.msg == ("model.layers.1 (conv2d): a 9×9 kernel with padding 'valid' does not fit "
                     "its 8×8 input; use padding 'same' or kernel_size at most 8")


def test_conv2d_on_a_flat_input_says_how_to_reshape():
    d = only(job([{"type": "conv2d", "filters": 4, "kernel_size": 3}, {"type": "flatten"},
                  OUT]), "model.layers.0")
    assert d.msg.startswith("model.layers.0 (conv2d): takes (height, width, channels)")
    assert "(64,)" in d.msg and "target_shape [8, 8, 1]" in d.msg


def test_lstm_on_a_flat_input():
    d = only(job([{"type": "lstm", "units": 4}, OUT]), "model.layers.0")
    assert d.msg.startswith("model.layers.0 (lstm): takes (timesteps, features)")
    assert "target_shape [64, 1]" in d.msg


def test_reshape_says_both_sizes():
    d = only(job([{"type": "reshape", "target_shape": [8, 9]}, {"type": "flatten"}, OUT]),
             "model.layers.0")
    assert "holds 72 values but its input (64,) holds 64" in d.msg


def test_an_embedding_needs_integer_input():
    d = only(job([{"type": "embedding", "input_dim": 17, "output_dim": 4},
                  {"type": "flatten"}, OUT]), "model.layers.0")
    assert d.msg.startswith("model.layers.0 (embedding): an embedding reads integer token ids")


def test_an_embedding_covers_the_datasets_token_ids():
    d = only(job([{"type": "embedding", "input_dim": 10, "output_dim": 4},
                  {"type": "flatten"}, OUT], TOKENS), "model.layers.0.input_dim")
    assert "go up to 16; set input_dim to at least 17" in d.msg


def test_the_output_is_one_vector_per_sample():
    d = only(job([{"type": "reshape", "target_shape": [8, 8, 1]},
                  {"type": "conv2d", "filters": 4, "kernel_size": 3}, OUT]), "model.layers.2")
    assert "(6, 6, 10) per sample" in d.msg
    assert "end with flatten or a global pooling layer, then dense" in d.msg


def test_a_residual_mlp():
    _, plan = validate_job(job([{"type": "dense", "units": 16, "name": "h1",
                                 "activation": "relu"},
                                {"type": "dense", "units": 16, "activation": "relu"},
                                {"type": "add", "inputs": ["h1", "dense_1"]}, OUT]))
    assert plan.layers == [
        {"name": "h1", "type": "dense", "output_shape": [16], "params": 64 * 16 + 16},
        {"name": "dense_1", "type": "dense", "output_shape": [16], "params": 16 * 16 + 16},
        {"name": "add_2", "type": "add", "output_shape": [16], "params": 0},
        {"name": "dense_3", "type": "dense", "output_shape": [10], "params": 16 * 10 + 10}]
    assert plan.total_params == 1040 + 272 + 170
    assert plan.input_shape == [64] and plan.input_dim == 64
    assert plan.output_units == 10 and plan.output_activation == "softmax"


def test_tokens_through_an_embedding_and_recurrent_layers():
    _, plan = validate_job(job([{"type": "embedding", "input_dim": 17, "output_dim": 4},
                                {"type": "lstm", "units": 8, "return_sequences": True},
                                {"type": "bidirectional", "layer": {"type": "gru", "units": 3}},
                                OUT], TOKENS))
    assert plan.input_dtype == "int32"
    assert [la["output_shape"] for la in plan.layers] == [[64, 4], [64, 8], [6], [10]]
    assert [la["params"] for la in plan.layers] == [
        17 * 4, 4 * 8 * (4 + 8) + 4 * 8, 2 * (3 * 3 * (8 + 3) + 6 * 3), 6 * 10 + 10]
    # Kept per sample: the input, each output, and the recurrent gates at every timestep.
    assert plan.activations == 64 + 64 * 4 + (64 * 8 + 64 * 4 * 8) + (6 + 2 * 64 * 3 * 3) + 10


def test_recurrent_activations_raise_the_memory_estimate():
    def memory(units):
        spec = job([{"type": "reshape", "target_shape": [64, 1]},
                    {"type": "lstm", "units": units}, OUT])
        spec["fit"]["batch_size"] = 1000
        return validate_job(spec)[1].memory_mb
    assert memory(64) > memory(8)


def test_the_output_activation_walks_back_through_activation_and_dropout():
    graph, _ = infer(layers_of([{"type": "dense", "units": 3},
                                {"type": "activation", "activation": "softmax"},
                                {"type": "dropout", "rate": 0.1}]), (4,))
    assert graph.output_activation == "softmax" and graph.units_index == 0
    assert graph.activation_index == 1 and graph.sequential


def test_a_non_flat_dataset_and_input_dim():
    info = DatasetInfo(100, 64, "classification", 10, input_shape=(8, 8, 1))
    spec = job([{"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same"},
                {"type": "global_average_pooling2d"}, OUT],
               {"kind": "upload", "id": "u"}, input_dim=64)
    d = only(spec, "model.input_dim", resolve_upload=lambda _: info)
    assert "(8, 8, 1)" in d.msg and "input_shape to [8, 8, 1]" in d.msg
    spec["model"] = {"layers": spec["model"]["layers"], "input_shape": [8, 8, 1]}
    _, plan = validate_job(spec, resolve_upload=lambda _: info)
    assert plan.input_shape == [8, 8, 1] and plan.layers[0]["output_shape"] == [8, 8, 4]
    spec["model"]["input_shape"] = [64]
    assert "[8, 8, 1]" in only(spec, "model.input_shape", resolve_upload=lambda _: info).msg


# --- uploaded models ----------------------------------------------------------------------


def uploaded_job() -> dict:
    spec = job([])
    spec["model"] = {"uploaded": "m1"}
    return spec


def test_an_unknown_uploaded_model():
    d = only(uploaded_job(), "model.uploaded", resolve_model=lambda _: None)
    assert "no uploaded model with id 'm1'" in d.msg and "POST /api/v1/models" in d.msg


def test_an_uploaded_model_of_another_input_shape():
    model = UploadedModel(layers_of([OUT]), (8, 8, 1))
    d = only(uploaded_job(), "model.uploaded", resolve_model=lambda _: model)
    assert "(8, 8, 1)" in d.msg and "(64,)" in d.msg


def test_an_uploaded_model_is_checked_like_layers():
    model = UploadedModel(layers_of([{"type": "dense", "units": 7, "activation": "softmax"}]),
                          (64,))
    d = only(uploaded_job(), "model.uploaded", resolve_model=lambda _: model)
    assert "7 units but the dataset has 10 classes" in d.msg
    good = UploadedModel(layers_of([OUT]), (64,))
    _, plan = validate_job(uploaded_job(), resolve_model=lambda _: good)
    assert plan.total_params == 650 and plan.layers[0]["name"] == "dense_0"
