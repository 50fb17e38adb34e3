"""service/uploads/keras_file.py: real .keras files saved by Keras, read without it; every
refusal (code, custom objects, options kerasyard does not model, damaged archives) names where."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from service.jobspec.layers import LAYER_TYPES
from service.uploads import keras_layers
from service.uploads.keras_file import KerasFileError, layers_from_json, read_keras_file

keras = pytest.importorskip("keras")

CAP = 10 * 1024 * 1024


def _save(model, tmp_path, name: str) -> bytes:
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path.read_bytes()


def _refusal(content: bytes, cap: int = CAP) -> list[dict]:
    with pytest.raises(KerasFileError) as info:
        read_keras_file(content, cap)
    return info.value.details


def _rezip(content: bytes, mutate=None, members: dict | None = None,
           compression=zipfile.ZIP_STORED) -> bytes:
    """The archive again, its config.json changed by ``mutate`` and ``members`` added/replaced."""
    src = zipfile.ZipFile(io.BytesIO(content))
    files = {i.filename: src.read(i.filename) for i in src.infolist()}
    if mutate:
        config = json.loads(files["config.json"])
        mutate(config)
        files["config.json"] = json.dumps(config).encode()
    files.update(members or {})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, data in files.items():
            if data is not None:
                zf.writestr(name, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def iris_mlp(tmp_path_factory):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.1),
                              keras.layers.Dense(3, activation="softmax")])
    return model, _save(model, tmp_path_factory.mktemp("k"), "iris")


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    x = keras.Input((8,), name="features")
    h = keras.layers.Dense(16, activation="relu", name="d1")(x)
    r = keras.layers.Dense(16, name="d2")(h)
    r = keras.layers.BatchNormalization(name="bn")(r)
    s = keras.layers.Add(name="skip")([h, r])
    s = keras.layers.Activation("relu", name="act")(s)
    out = keras.layers.Dense(1, activation="sigmoid", name="out")(s)
    model = keras.Model(x, out)
    return model, _save(model, tmp_path_factory.mktemp("k"), "residual")


def test_a_sequential_model_becomes_its_layer_specs(iris_mlp):
    model, content = iris_mlp
    got = read_keras_file(content, CAP)
    names = [layer.name for layer in model.layers]
    assert got.layers_json == [
        {"name": names[0], "type": "dense", "units": 8, "activation": "relu", "use_bias": True},
        {"name": names[1], "type": "dropout", "rate": 0.1},
        {"name": names[2], "type": "dense", "units": 3, "activation": "softmax",
         "use_bias": True}]
    assert got.model.input_shape == (4,) and got.model.input_dtype == "float32"
    assert got.n_params == model.count_params()
    assert got.keras_version == keras.__version__
    assert [type(layer).__name__ for layer in got.model.layers] == [
        "DenseLayer", "DropoutLayer", "DenseLayer"]


def test_a_functional_residual_block_keeps_its_wiring(residual):
    model, content = residual
    got = read_keras_file(content, CAP)
    wiring = [(s["name"], s["type"], s["inputs"]) for s in got.layers_json]
    assert wiring == [("d1", "dense", ["input"]), ("d2", "dense", ["d1"]),
                      ("bn", "batch_normalization", ["d2"]), ("skip", "add", ["d1", "bn"]),
                      ("act", "activation", ["skip"]), ("out", "dense", ["act"])]
    assert got.layers_json[-1]["activation"] == "sigmoid"
    assert got.n_params == model.count_params()
    assert layers_from_json(got.layers_json) == got.model.layers


def test_a_lambda_layer_is_refused_as_code(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2),
                              keras.layers.Dense(1)])
    details = _refusal(_save(model, tmp_path, "lambda"))
    assert details[0]["loc"] == "config.layers.1"
    assert "Lambda layer" in details[0]["msg"]
    assert "runs arbitrary Python code" in details[0]["msg"]
    assert "replace it with a built-in layer" in details[0]["msg"]


def test_a_registered_custom_layer_is_refused(tmp_path):
    @keras.saving.register_keras_serializable(package="tests_kf")
    class Doubler(keras.layers.Layer):
        def call(self, t):
            return t * 2

    model = keras.Sequential([keras.Input((4,)), Doubler(), keras.layers.Dense(1)])
    details = _refusal(_save(model, tmp_path, "custom"))
    assert details[0]["loc"] == "config.layers.1"
    assert "custom object 'Doubler'" in details[0]["msg"] and "tests_kf>Doubler" in \
        details[0]["msg"]


def test_a_custom_activation_function_is_refused(tmp_path):
    def my_relu(t):
        return keras.ops.relu(t)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation=my_relu)])
    details = _refusal(_save(model, tmp_path, "act"))
    assert details[0]["loc"] == "config.layers.1.config.activation"
    assert "'my_relu'" in details[0]["msg"] and "Python code" in details[0]["msg"]


def test_a_custom_initializer_anywhere_is_refused_by_its_path(iris_mlp):
    def mutate(config):
        config["config"]["layers"][1]["config"]["kernel_initializer"] = {
            "module": "mine.inits", "class_name": "MyInit", "config": {},
            "registered_name": "mine>MyInit"}

    details = _refusal(_rezip(iris_mlp[1], mutate))
    assert details[0]["loc"] == "config.layers.1.config.kernel_initializer"
    assert "'MyInit'" in details[0]["msg"]


def test_a_nested_model_is_refused_clearly(tmp_path):
    inner = keras.Sequential([keras.layers.Dense(3)], name="inner")
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(1)(inner(x)))
    details = _refusal(_save(model, tmp_path, "nested"))
    assert "'inner' (Sequential) is a model inside the model" in details[0]["msg"]


@pytest.mark.parametrize("layer,option", [
    (lambda: keras.layers.Conv1D(2, 3, dilation_rate=2), "dilation_rate"),
    (lambda: keras.layers.Conv1D(4, 3, groups=2), "groups"),
    (lambda: keras.layers.MaxPooling1D(2, data_format="channels_first"), "data_format"),
    (lambda: keras.layers.LSTM(2, go_backwards=True), "go_backwards"),
    (lambda: keras.layers.GlobalAveragePooling1D(keepdims=True), "keepdims"),
    (lambda: keras.layers.LayerNormalization(center=False), "center"),
])
def test_options_kerasyard_does_not_model_are_refused_naming_layer_and_option(
        tmp_path, layer, option):
    built = layer()
    model = keras.Sequential([keras.Input((6, 4)), built, keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    details = _refusal(_save(model, tmp_path, option))
    assert details[0]["loc"] == f"config.layers.1.config.{option}"
    assert f"layer {built.name!r}" in details[0]["msg"] and f"{option}=" in details[0]["msg"]


def test_masking_an_embedding_is_refused(tmp_path):
    model = keras.Sequential([keras.Input((5,), dtype="int32"),
                              keras.layers.Embedding(10, 3, mask_zero=True),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    details = _refusal(_save(model, tmp_path, "mask"))
    assert [d["loc"] for d in details] == ["config.layers.1.config.mask_zero"]


def test_an_embedding_model_takes_int32_tokens(tmp_path):
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 3),
                              keras.layers.LSTM(4), keras.layers.Dense(1)])
    got = read_keras_file(_save(model, tmp_path, "emb"), CAP)
    assert got.model.input_dtype == "int32" and got.model.input_shape == (5,)
    assert got.n_params == model.count_params()


def test_concatenating_on_the_batch_axis_is_refused(residual):
    def mutate(config):
        config["config"]["layers"][4] = {**config["config"]["layers"][4],
                                         "class_name": "Concatenate"}
        config["config"]["layers"][4]["config"]["axis"] = 0

    details = _refusal(_rezip(residual[1], mutate))
    assert any(d["loc"] == "config.layers.4.config.axis" and "batch axis" in d["msg"]
               for d in details), details


def test_every_catalogued_layer_with_kerass_defaults_converts():
    """Each spec type's Keras class, as Keras serializes it with its defaults: no option is
    unknown to the converter, and the spec's fields are Keras's."""
    args = {"dense": (2,), "dropout": (0.1,), "activation": ("relu",), "reshape": ((2,),),
            "embedding": (5, 2), "conv1d": (2, 3), "conv2d": (2, 3), "average_pooling1d": (2,),
            "average_pooling2d": (2,), "spatial_dropout1d": (0.1,), "spatial_dropout2d": (0.1,),
            "simple_rnn": (2,), "lstm": (2,), "gru": (2,),
            "bidirectional": (keras.layers.GRU(2),)}
    for layer_type in LAYER_TYPES:
        cls = getattr(keras.layers, keras_layers.class_name(layer_type))
        entry = json.loads(json.dumps(  # as config.json holds it: tuples are lists
            keras.saving.serialize_keras_object(cls(*args.get(layer_type, ())))))
        errors: list[dict] = []
        spec = keras_layers._spec_of(entry, "x", errors)
        assert errors == [], (layer_type, errors)
        assert spec["type"] == layer_type


def test_zip_bomb_is_refused_before_it_is_unpacked(iris_mlp):
    bomb = _rezip(iris_mlp[1], members={"model.weights.h5": b"\x89HDF\r\n\x1a\n" + bytes(50 << 20)},
                  compression=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 1 << 20
    details = _refusal(bomb, cap=1 << 20)
    assert details[0]["loc"] == "file" and "unpacks to" in details[0]["msg"]


def test_a_config_that_lies_about_its_size_is_refused_when_read(iris_mlp):
    big = _rezip(iris_mlp[1], members={"config.json": b" " * (3 << 20)},
                 compression=zipfile.ZIP_DEFLATED)
    details = _refusal(big)
    assert details[0]["loc"] == "config.json" and "unpacks to more than" in details[0]["msg"]


@pytest.mark.parametrize("content,needle", [
    (b"just some text, not a zip", "not a zip archive"),
    (b"", "not a zip archive"),
])
def test_not_a_zip_is_refused(content, needle):
    assert needle in _refusal(content)[0]["msg"]


def test_a_truncated_file_is_refused(iris_mlp):
    content = iris_mlp[1]
    for cut in (len(content) // 2, len(content) - 10):
        details = _refusal(content[:cut])
        assert details[0]["loc"] == "file", details


def test_other_members_and_missing_weights_are_refused(iris_mlp):
    extra = _refusal(_rezip(iris_mlp[1], members={"evil.py": b"import os"}))
    assert extra[0]["loc"] == "evil.py" and "unexpected member" in extra[0]["msg"]
    missing = _refusal(_rezip(iris_mlp[1], members={"model.weights.h5": None}))
    assert "no model.weights.h5" in missing[0]["msg"]
    not_h5 = _refusal(_rezip(iris_mlp[1], members={"model.weights.h5": b"PK not hdf5"}))
    assert not_h5[0]["loc"] == "model.weights.h5"


def test_deeply_nested_config_is_refused(iris_mlp):
    deep = b"[" * 5000 + b"]" * 5000
    details = _refusal(_rezip(iris_mlp[1], members={"config.json": deep}))
    assert details[0]["loc"] == "config.json" and "nested" in details[0]["msg"]


def test_a_subclassed_model_is_refused(iris_mlp):
    def mutate(config):
        config.update(class_name="MyModel", module="mine", registered_name="mine>MyModel")

    details = _refusal(_rezip(iris_mlp[1], mutate))
    assert details[0]["loc"] == "(config)" and "custom object 'MyModel'" in details[0]["msg"]


def test_the_module_imports_no_keras():
    import subprocess
    import sys

    code = ("import sys, service.uploads.keras_file, service.api.models; "
            "print(any(m.split('.')[0] in ('keras', 'tensorflow') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
