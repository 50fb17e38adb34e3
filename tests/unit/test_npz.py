"""Uploaded .npz datasets (service/uploads/npz.py): every refusal names the array, the value and
the fix; nothing is unpickled, nothing is inflated past what the cap allows."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from service import jobspec as S
from service.uploads import datasets as U
from service.uploads import npz as N

CAP = 1_000_000


def npz(compressed: bool = False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def refused(content: bytes, cap: int = CAP) -> N.NpzError:
    with pytest.raises(N.NpzError) as exc:
        N.profile(content, cap)
    return exc.value


def xy(n=10, shape=(3,), y=None):
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(n, *shape)).astype("float32"),
            "y": np.arange(n) % 2 if y is None else y}


def test_profile_of_a_float_image_set_and_its_info():
    data = xy(12, (4, 4, 1), y=np.arange(12) % 3)
    prof = N.profile(npz(True, **data), CAP)
    assert prof["format"] == "npz" and prof["x"]["shape"] == [12, 4, 4, 1]
    assert prof["x"]["dtype"] == "float32"
    assert prof["x"]["min"] == pytest.approx(float(data["x"].min()))
    assert prof["y"]["classes"] == [0, 1, 2] and prof["y"]["mapped"] is False
    info = N.npz_info(prof, None)
    assert info == S.DatasetInfo(12, 16, "classification", 3, input_shape=(4, 4, 1),
                                 x_dtype="float32", x_max=None, streamable=True)
    assert N.npz_info(prof, "regression").task == "regression"


def test_integer_x_is_token_ids_and_other_classes_are_mapped():
    prof = N.profile(npz(x=np.array([[1, 5], [7, 0], [3, 3]], dtype="int64"),
                         y=np.array([10, 20, 10])), CAP)
    info = N.npz_info(prof, None)
    assert (info.x_dtype, info.x_max, info.input_shape, info.n_classes) == ("int32", 7, (2,), 2)
    assert prof["y"]["classes"] == [10, 20] and prof["y"]["mapped"] is True


def test_float_y_is_regression_and_cannot_be_classes():
    prof = N.profile(npz(**xy(y=np.linspace(0, 1, 10))), CAP)
    assert N.npz_info(prof, None).task == "regression"
    with pytest.raises(S.SpecError) as exc:
        N.npz_info(prof, "classification")
    assert exc.value.details[0].loc == "dataset.task" and "astype('int32')" in \
        exc.value.details[0].msg


def test_one_dimensional_x_is_one_feature():
    prof = N.profile(npz(x=np.arange(5.0), y=np.arange(5.0)), CAP)
    assert N.npz_info(prof, None).shape == (1,)


def test_not_a_zip():
    err = refused(b"PK\x03\x04 but not really a zip")
    assert err.loc == "file" and "not a valid .npz" in str(err) and "np.savez" in str(err)


def test_pickled_object_array_is_refused_by_its_header_without_unpickling(monkeypatch):
    import pickle

    def boom(*a, **k):
        raise AssertionError("unpickled")

    content = npz(x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    err = refused(content)
    assert err.loc == "x" and "object (pickled Python objects)" in str(err)


@pytest.mark.parametrize("arrays,words", [
    ({"x": np.zeros((3, 2))}, ["'y' missing"]),
    ({"y": np.zeros(3)}, ["'x' missing"]),
    ({"x": np.zeros((3, 2)), "y": np.zeros(3), "w": np.zeros(3)}, ["extra 'w'"]),
    ({"features": np.zeros((3, 2)), "target": np.zeros(3)}, ["'x', 'y' missing",
                                                            "extra 'features', 'target'"]),
])
def test_missing_and_extra_arrays(arrays, words):
    err = refused(npz(**arrays))
    assert err.loc == "file" and all(w in str(err) for w in words), str(err)
    assert "exactly the arrays 'x'" in str(err)


@pytest.mark.parametrize("x,y,loc,words", [
    (np.zeros((2, 1, 1, 1, 1, 1)), np.zeros(2), "x", ["rank 6", "at most 4"]),
    (np.zeros((3, 0)), np.zeros(3), "x", ["at least 1"]),
    (np.zeros((3, 2)), np.zeros((3, 1)), "y", ["must be 1-D", "reshape(-1)"]),
    (np.zeros((3, 2)), np.zeros(4), "y", ["x has 3 samples but y has 4"]),
    (np.zeros((1, 2)), np.zeros(1), "x", ["at least 2"]),
    (np.zeros((3, 2), dtype=bool), np.zeros(3), "x", ["dtype bool", "float32"]),
    (np.zeros((3, 2), dtype=complex), np.zeros(3), "x", ["complex128"]),
    (np.array([["a"], ["b"]]), np.zeros(2), "x", ["<U1"]),
    (np.zeros((3, 2)), np.array([True, False, True]), "y", ["dtype bool", "int32"]),
    (np.array([[1], [-2]]), np.zeros(2), "x", ["token ids", "-2"]),
    (np.array([[1], [2 ** 40]]), np.zeros(2), "x", ["token ids"]),
    (np.array([[1.0], [-1e300]]), np.zeros(2), "x", ["-1e+300", "float32's range"]),
    (np.zeros((2, 1)), np.array([0.0, 1e39]), "y", ["1e+39", "rescale"]),
])
def test_wrong_shapes_and_dtypes(x, y, loc, words):
    err = refused(npz(x=x, y=y))
    assert err.loc == loc and all(w in str(err) for w in words), str(err)


def test_non_finite_values_are_counted_with_the_first_index():
    x = np.ones((4, 3), dtype="float32")
    x[1, 2], x[3, 0] = np.nan, np.inf
    err = refused(npz(x=x, y=np.arange(4)))
    assert err.loc == "x" and "2 non-finite" in str(err) and "[1, 2]" in str(err)
    err = refused(npz(x=np.ones((2, 1)), y=np.array([1.0, np.nan])))
    assert err.loc == "y" and "[1]" in str(err)


def test_too_big_decompressed_is_refused_before_reading():
    content = npz(True, x=np.zeros((20000, 10)), y=np.zeros(20000))  # 1.6 MB inflated
    assert len(content) < 20000
    err = refused(content, cap=20000)  # arrays may take 8 x 20000 bytes
    assert err.loc == "x" and "160,000" in str(err) and "fewer samples" in str(err)


def _bomb(declared: int) -> bytes:
    """A stored x.npy member whose zip entry declares ``declared`` bytes (it holds 80)."""
    good = npz(x=np.zeros((5, 2)), y=np.zeros(5))
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        info = zf.getinfo("x.npy")
    out = bytearray(good)
    cd = out.rfind(b"PK\x01\x02", 0, out.rfind(b"PK\x01\x02"))  # x.npy's central entry
    assert out[cd + 46:cd + 46 + len(info.filename)] == b"x.npy"
    out[cd + 24:cd + 28] = struct.pack("<I", declared)
    return bytes(out)


def test_zip_bomb_declaring_a_huge_size_is_refused_on_the_declaration():
    err = refused(_bomb(4_000_000_000))
    assert err.loc == "x" and "4,000,000,000" in str(err)


def test_header_declaring_more_than_the_member_holds():
    x = np.lib.format.header_data_from_array_1_0(np.zeros((5, 2)))
    x["shape"] = (10 ** 7, 2)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, x)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", head.getvalue() + b"\0" * 80)
        zf.writestr("y.npy", npz_member(np.zeros(5)))
    err = refused(buf.getvalue())
    assert err.loc == "x" and "declares 160,000,000 bytes" in str(err)


def npz_member(a: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, a)
    return out.getvalue()


def test_duplicate_member_names():
    buf = io.BytesIO()
    with pytest.warns(UserWarning), zipfile.ZipFile(buf, "w") as zf:
        for name, a in (("x.npy", np.zeros((2, 1))), ("y.npy", np.zeros(2)),
                        ("x.npy", np.zeros((2, 1)))):
            zf.writestr(name, npz_member(a))
    assert "twice" in str(refused(buf.getvalue()))


def test_more_classes_than_a_classifier_takes():
    prof = N.profile(npz(x=np.zeros((200, 1)), y=np.arange(200)), CAP)
    with pytest.raises(S.SpecError) as exc:
        N.npz_info(prof, None)
    assert "200 distinct values" in exc.value.details[0].msg
    assert N.npz_info(prof, "regression").task == "regression"


def test_is_npz_and_the_csv_class_cap_agree():
    assert N.is_npz(b"PK\x03\x04...") and N.is_npz(b"a,b", "d.NPZ")
    assert N.is_npz(b"a,b", None, "application/x-npz") and not N.is_npz(b"a,b\n1,2\n")
    assert N.MAX_CLASSES == U.MAX_CLASSES


def test_the_client_sends_an_npz_by_its_suffix(tmp_path):
    from kerasyard.client import Client

    sent = {}
    client = Client("http://127.0.0.1:1")
    client.request = lambda method, path, **kw: sent.update(kw) or {}
    path = tmp_path / "arrays.NPZ"
    path.write_bytes(npz(**xy()))
    client.upload_dataset(path)
    assert b"Content-Type: application/x-npz\r\n" in sent["data"]
    assert b'filename="arrays.NPZ"' in sent["data"]
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    client.upload_dataset(path)
    assert b"Content-Type: text/csv\r\n" in sent["data"]
