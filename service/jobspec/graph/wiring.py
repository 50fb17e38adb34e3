"""How a spec's layers connect: names, inputs, cycles, layers nothing uses.

Pure bookkeeping over names; :mod:`.shapes` works out what flows along the edges.
"""

from __future__ import annotations

import difflib

from service.jobspec.errors import ErrorDetail
from service.jobspec.layers import INPUT, MERGE_TYPES


def where(i: int, layer) -> str:
    """``model.layers.1 (conv2d)``: how every message names its layer."""
    return f"model.layers.{i} ({layer.type})"


def layer_names(layers: list) -> list[str]:
    """Each layer's name: its own, else ``<type>_<index>`` (the worker names Keras's layers
    the same way)."""
    return [layer.name or f"{layer.type}_{i}" for i, layer in enumerate(layers)]


def layer_inputs(layers: list, names: list[str]) -> list[tuple[str, ...]]:
    """Each layer's inputs: its own, else the layer before it (the model's input for the first)."""
    return [tuple(layer.inputs) if layer.inputs else (names[i - 1] if i else INPUT,)
            for i, layer in enumerate(layers)]


def _duplicate_names(layers: list, names: list[str]) -> list[ErrorDetail]:
    errors, first = [], {}
    for i, name in enumerate(names):
        if name in first:
            j = first[name]
            errors.append(ErrorDetail(
                f"model.layers.{i}.name", f"{where(i, layers[i])}: {name!r} is also the name "
                f"of model.layers.{j} ({layers[j].type}); give each layer its own name", name))
        else:
            first[name] = i
    return errors


def _unknown_inputs(layers: list, names: list[str],
                    inputs: list[tuple[str, ...]]) -> list[ErrorDetail]:
    errors, known = [], (INPUT, *names)
    for i, ins in enumerate(inputs):
        for j, name in enumerate(ins):
            if name in known:
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            errors.append(ErrorDetail(
                f"model.layers.{i}.inputs.{j}", f"{where(i, layers[i])}: no layer is named "
                f"{name!r}; {hint}inputs name earlier layers (or 'input', the model's input); "
                f"the layers are: {', '.join(names)}", name))
    return errors


def _input_counts(layers: list, inputs: list[tuple[str, ...]]) -> list[ErrorDetail]:
    errors = []
    for i, (layer, ins) in enumerate(zip(layers, inputs)):
        shown = ", ".join(repr(n) for n in ins)
        if layer.type in MERGE_TYPES and len(ins) < 2:
            errors.append(ErrorDetail(
                f"model.layers.{i}.inputs", f"{where(i, layer)}: a merge layer takes at least 2 "
                f"inputs, got 1 ({shown}); list the layers it merges in its inputs",
                list(ins)))
        elif layer.type not in MERGE_TYPES and len(ins) != 1:
            errors.append(ErrorDetail(
                f"model.layers.{i}.inputs", f"{where(i, layer)}: takes 1 input, got {len(ins)} "
                f"({shown}); merge them first with an add, multiply, average or concatenate "
                "layer", list(ins)))
    return errors


def order(names: list[str], inputs: list[tuple[str, ...]]) -> tuple[list[int], list[list[int]]]:
    """The layers in an order where each comes after its inputs, and the cycles that keep the
    rest out (each a list of layer indices, in the order the edges run)."""
    index = {name: i for i, name in enumerate(names)}
    preds = [[index[n] for n in ins if n in index] for ins in inputs]
    waiting = [len(set(p)) for p in preds]
    users: list[list[int]] = [[] for _ in names]
    for i, p in enumerate(preds):
        for j in set(p):
            users[j].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    done: list[int] = []
    while ready:
        i = ready.pop(0)
        done.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    left, seen, cycles = set(range(len(names))) - set(done), set(), []
    for start in sorted(left):
        path, at = [], start
        while at not in path and at not in seen:  # every layer left has a predecessor left
            path.append(at)
            at = next(p for p in preds[at] if p in left)
        if at in path:
            cycle = path[path.index(at):][::-1]
            cycles.append(cycle)
        seen.update(path)
    return done, cycles


def _cycle_errors(layers: list, names: list[str], cycles: list[list[int]]) -> list[ErrorDetail]:
    errors = []
    for cycle in cycles:
        i = min(cycle)
        k = cycle.index(i)
        ring = cycle[k:] + cycle[:k]
        chain = " -> ".join(repr(names[j]) for j in [*ring, ring[0]])
        errors.append(ErrorDetail(
            f"model.layers.{i}.inputs", f"{where(i, layers[i])}: the layers {chain} form a "
            "cycle (each takes the one before it as input); a layer's inputs must come from "
            "'input' or from layers that do not depend on it", [names[j] for j in ring]))
    return errors


def _unused(layers: list, names: list[str], inputs: list[tuple[str, ...]]) -> list[ErrorDetail]:
    used = {n for ins in inputs for n in ins}
    errors = []
    for i in range(len(layers) - 1):
        if names[i] not in used:
            errors.append(ErrorDetail(
                f"model.layers.{i}", f"{where(i, layers[i])}: no layer takes its output "
                f"{names[i]!r}, and only the last layer is the model's output; name it in a "
                "later layer's inputs or remove it", names[i]))
    return errors


def wiring_errors(layers: list, names: list[str], inputs: list[tuple[str, ...]]
                  ) -> tuple[list[int], list[ErrorDetail]]:
    """The order to work the layers out in, and every problem with how they connect."""
    errors = _duplicate_names(layers, names) + _unknown_inputs(layers, names, inputs)
    errors += _input_counts(layers, inputs)
    done, cycles = order(names, inputs)
    errors += _cycle_errors(layers, names, cycles)
    if not cycles:
        errors += _unused(layers, names, inputs)
    return done, errors
