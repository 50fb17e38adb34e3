"""The model the door's rules look at: the spec's layers, or an uploaded model's."""

from __future__ import annotations

from service.jobspec.errors import ErrorDetail
from service.jobspec.graph.infer import GraphInfo, infer
from service.jobspec.graph.shapes import show
from service.jobspec.models import JobSpec
from service.jobspec.shapes import DatasetInfo, ModelResolver, UploadedModel


def model_layers(spec: JobSpec, info: DatasetInfo, resolve_model: ModelResolver | None,
                 errors: list[ErrorDetail]) -> UploadedModel | None:
    """The model's layers and input as the rules see them: the spec's, or the uploaded
    model's (problems with the upload are appended to ``errors``)."""
    m = spec.model
    if m.uploaded is None:
        return UploadedModel(layers=m.layers, input_shape=info.shape)
    if resolve_model is None:
        errors.append(ErrorDetail("model.uploaded", "uploaded models cannot be resolved here",
                                  m.uploaded))
        return None
    model = resolve_model(m.uploaded)
    if model is None:
        errors.append(ErrorDetail("model.uploaded", f"no uploaded model with id "
                                  f"{m.uploaded!r}; upload a .keras file to POST "
                                  "/api/v1/models and use the id it answers", m.uploaded))
    elif tuple(model.input_shape) != info.shape:
        errors.append(ErrorDetail("model.uploaded", f"the uploaded model takes samples of shape "
                                  f"{show(tuple(model.input_shape))} but the dataset's are "
                                  f"{show(info.shape)}; upload a model whose input is "
                                  f"{show(info.shape)} or pick a dataset that fits it",
                                  m.uploaded))
        return None
    return model


def _uploaded_detail(d: ErrorDetail) -> ErrorDetail:
    """A graph error of an uploaded model, named at ``model.uploaded``."""
    return ErrorDetail("model.uploaded", d.msg.replace("model.layers.", "the uploaded "
                       "model's layer ", 1), d.value)


def graph_of(spec: JobSpec, info: DatasetInfo, resolve_model: ModelResolver | None = None
             ) -> tuple[GraphInfo | None, list[ErrorDetail]]:
    """The model's graph on the dataset's samples, or None and the errors (an uploaded
    model's are named at ``model.uploaded``)."""
    errors: list[ErrorDetail] = []
    model = model_layers(spec, info, resolve_model, errors)
    if model is None:
        return None, errors
    graph, graph_errors = infer(model.layers, info.shape, info.x_dtype, info.x_max)
    if spec.model.uploaded is not None:
        graph_errors = [_uploaded_detail(d) for d in graph_errors]
    return graph, errors + graph_errors
