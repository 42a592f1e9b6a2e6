"""PyTorch ``state_dict`` names <-> a numcnn model's weights, with no PyTorch and no unpickling.

Naming (what ``model.state_dict()`` writes, as PyTorch's ``nn.Sequential`` does): layer ``i``'s
tensors are ``{i}.weight``, ``{i}.bias``, and for batch norm also ``{i}.running_mean``,
``{i}.running_var`` and ``{i}.num_batches_tracked`` (an int64 scalar; numcnn does not count
batches, so it writes 0 and ignores the value it reads - PyTorch uses it only when
``momentum=None``).  Layers with no parameters (ReLU, pooling, Flatten...) have no names, but
keep their index, exactly as in ``nn.Sequential``.

``load_state_dict(mapping)`` takes ``{name: array}`` as ``safetensors.numpy.load_file`` returns
it.  That function sorts the names, so the file's order says nothing; names are matched:

1. through ``name_map`` when given: ``{"conv1": "0", "fc3.bias": "10.bias"}`` (a module prefix or a
   whole name, mapped to numcnn's);
2. directly, when the module prefix is one of the model's (``0``, ``3``...);
3. otherwise (``conv1.weight``, ``fc3.bias``, ``features.0.weight``) by *families*: prefixes that
   differ only in their numbers (``conv1``, ``conv2``) are ordered naturally (``conv2`` <
   ``conv10``); how different families (``conv*`` and ``fc*``) interleave cannot be known from
   the names, so every interleaving is tried against the model's layers in order, comparing
   tensor names and shapes.  Exactly one must fit; otherwise the error lists what doesn't fit,
   or asks for ``name_map=`` when several orders would.
"""
from __future__ import annotations

import collections
import collections.abc
import functools
import os
import re

import numpy as np

from ..backend import get_array_module, to_numpy
from ..errors import DTypeError, ModelFileError
from ..files import as_path, read_file

COUNTER = "num_batches_tracked"
#: file suffixes PyTorch's pickle-based ``torch.save`` writes; numcnn never unpickles
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
CONVERT_HINT = ('convert it once, in Python with PyTorch: `from safetensors.torch import '
                'save_file; save_file(model.state_dict(), "weights.safetensors")`, then load '
                'that file')

IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class StateDictError(ModelFileError):
    """Weights that do not fit a model; ``problems`` lists each name that doesn't fit."""

    def __init__(self, problems, advice=""):
        self.problems = list(problems)
        self.advice = advice
        text = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"load_state_dict: {len(self.problems)} problem(s):\n{text}"
                         + (f"\n{advice}" if advice else ""))


# -- the model's side ---------------------------------------------------------------------------
def _slots(model):
    """``{name: (kind, owner, attr)}`` in PyTorch's order (module by module, nested ones too:
    parameters, then buffers, then the batch counter); kind is "param", "buffer" or "counter"."""
    slots = {}
    for i, layer in enumerate(model.layers):
        entries = [(n, ("param", p, None)) for n, p in layer.named_parameters().items()]
        for name in layer.buffers():
            entries.append((name, ("buffer", layer, name)))
            if name.endswith("running_var"):
                entries.append((f"{name[:-len('running_var')]}{COUNTER}", ("counter", None, None)))
        first = {}
        for n, _ in entries:
            first.setdefault(n.rpartition(".")[0], len(first))
        rank = {"param": 0, "buffer": 1, "counter": 2}
        order = sorted(range(len(entries)), key=lambda k: (
            first[entries[k][0].rpartition(".")[0]], rank[entries[k][1][0]], k))
        for k in order:
            slots[f"{i}.{entries[k][0]}"] = entries[k][1]
    return slots


def _slot_array(slot):
    kind, owner, attr = slot
    if kind == "param":
        return owner.value
    if kind == "buffer":
        return owner.buffers()[attr]
    return np.zeros((), np.int64)


def state_dict(model) -> dict:
    """``{name: numpy array}`` (copies) in ``nn.Sequential`` naming; see the module docstring."""
    return {name: np.array(to_numpy(_slot_array(slot)), copy=True)
            for name, slot in _slots(model).items()}


def _split(name):
    prefix, _, local = name.rpartition(".")
    return prefix, local


def _groups(names):
    """``{prefix: [local names]}`` keeping first-seen order of prefixes."""
    out = {}
    for n in names:
        p, local = _split(n)
        out.setdefault(p, []).append(local)
    return out


# -- the file's side ----------------------------------------------------------------------------
def _check_value(name, value):
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise DTypeError(f"load_state_dict: {name!r} is a {type(value).__name__}, not an array; "
                         "pass {name: numpy array} as safetensors.numpy.load_file returns it")
    if not isinstance(value.dtype, np.dtype):
        raise DTypeError(f"load_state_dict: {name!r} is a {type(value).__module__}."
                         f"{type(value).__name__}; pass NumPy arrays (safetensors.numpy.load_file"
                         ", or tensor.numpy())")


def _natural_key(prefix):
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", prefix))


def _family(prefix):
    return re.sub(r"\d+", "#", prefix)


def _apply_name_map(mapping, name_map, model_prefixes, problems):
    if name_map is None:
        return dict(mapping)
    if not isinstance(name_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in name_map.items()):
        raise StateDictError([f"name_map must map file names (or module prefixes) to numcnn "
                              f"names, as strings, e.g. {{'conv1': '0'}}; got {name_map!r}"])
    out = {}
    used = set()
    for name, value in mapping.items():
        prefix, local = _split(name)
        if name in name_map:
            new = name_map[name]
            used.add(name)
        elif prefix in name_map:
            new = f"{name_map[prefix]}.{local}"
            used.add(prefix)
        else:
            new = name
        if new in out:
            problems.append(f"name_map sends two names to {new!r}")
        out[new] = value
    for src, dst in name_map.items():
        if src not in used:
            problems.append(f"name_map names {src!r}, which is not in the weights")
        elif _split(dst)[0] not in model_prefixes and dst not in model_prefixes:
            problems.append(f"name_map maps {src!r} to {dst!r}, which is not a layer of the model "
                            f"(its layers with weights: {', '.join(sorted(model_prefixes, key=_natural_key))})")
    return out


def _signature(shapes):
    """A group's kind: its tensor names except the batch counter."""
    return frozenset(k for k in shapes if k != COUNTER)


def _fits(src, dst, with_shapes=True, same_depth=False):
    """Source group ``src`` fits model group ``dst`` (each ``(prefix, {local: shape})``): the same
    tensor names with the same shapes (or, ``with_shapes=False``, the same ranks: the same kind
    of layer, to say which shapes differ); ``same_depth``: and prefixes nested as deep
    (``layer1.0.bn1`` and ``3.body.1``; ``bn1`` and ``1``)."""
    if same_depth and src[0].count(".") != dst[0].count("."):
        return False
    src, dst = src[1], dst[1]
    if _signature(src) != _signature(dst) or (COUNTER in src and COUNTER not in dst):
        return False
    same = (lambda a, b: tuple(a) == tuple(b)) if with_shapes else (lambda a, b: len(a) == len(b))
    return all(same(src[k], dst[k]) for k in src if k != COUNTER)


def _count_orders(families, model_groups, fits, strict):
    """How many ways (capped at 2) the families' groups, each family in natural order, can be
    interleaved onto ``model_groups`` in order; returns (count, one assignment)."""
    fams = list(families.values())
    states = len(model_groups) + 1
    for f in fams:
        states *= len(f) + 1
    if states > 2_000_000 or len(model_groups) > 400:
        raise StateDictError([f"{sum(map(len, fams))} named modules in {len(fams)} families onto "
                              f"{len(model_groups)} layers: too many orders to try"],
                             "pass name_map= (module prefix -> numcnn layer index)")

    @functools.lru_cache(maxsize=None)
    def ways(j, pos):
        if all(p == len(f) for p, f in zip(pos, fams)):
            # what is left of the model stays unloaded: allowed only when not strict
            return (1, ()) if j == len(model_groups) or not strict else (0, ())
        if j == len(model_groups):
            return 0, ()
        total, best = 0, None
        for fi, f in enumerate(fams):
            if pos[fi] < len(f) and fits(f[pos[fi]], model_groups[j]):
                n, rest = ways(j + 1, pos[:fi] + (pos[fi] + 1,) + pos[fi + 1:])
                if n and best is None:
                    best = ((f[pos[fi]][0], model_groups[j][0]),) + rest
                total += n
        if not strict:
            n, rest = ways(j + 1, pos)
            if n and best is None:
                best = rest
            total += n
        return min(total, 2), best or ()

    return ways(0, tuple(0 for _ in fams))


def _describe(shapes):
    return ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())


def load_state_dict(model, mapping, strict=True, name_map=None):
    """Load ``{name: array}`` (PyTorch names) into ``model``; see the module docstring.

    Everything is checked before anything changes: on any problem the model is untouched and a
    :class:`StateDictError` lists every name that doesn't fit (missing, unexpected, shape or
    dtype mismatch).  ``strict=False`` lets names be missing or unexpected (never mismatched).
    Returns ``IncompatibleKeys(missing_keys, unexpected_keys)`` as PyTorch does.
    """
    if not isinstance(mapping, collections.abc.Mapping):
        raise StateDictError([f"expected a mapping of name -> array (safetensors.numpy.load_file"
                              f"(path)), got {type(mapping).__name__}"])
    for name, value in mapping.items():
        if not isinstance(name, str):
            raise StateDictError([f"names must be strings, got {name!r}"])
        _check_value(name, value)
    slots = _slots(model)
    model_shapes = {n: tuple(_slot_array(s).shape) for n, s in slots.items()}
    model_groups = _groups(slots)                              # prefix -> locals, model order
    problems = []
    mapping = _apply_name_map(mapping, name_map, set(model_groups), problems)

    # 1. direct: prefixes the model has (numeric Sequential names, or mapped ones)
    src_groups = _groups(mapping)
    direct = {p: p for p in src_groups if p in model_groups}
    named = {p: loc for p, loc in src_groups.items() if p not in model_groups}
    # 2. named families onto the layers nobody claimed, when no name is numeric-only
    numeric = [p for p in named if re.fullmatch(r"\d+(\.\d+)*", p)]
    left = [(p, {k: model_shapes[f"{p}.{k}"] for k in loc}) for p, loc in model_groups.items()
            if p not in direct]
    if named and not numeric:
        families = {}
        for p in sorted(named, key=_natural_key):
            families.setdefault(_family(p), []).append(
                (p, {k: tuple(mapping[f"{p}.{k}"].shape) for k in named[p]}))
        n, assignment = _count_orders(families, left, _fits, strict)
        if n > 1:
            # several orders fit the shapes: the one whose modules are nested as deep as
            # numcnn's (a top-level bn1 and a block's layer1.0.bn1 look alike otherwise)
            k, deep = _count_orders(families, left, functools.partial(_fits, same_depth=True),
                                    strict)
            if k == 1:
                n, assignment = k, deep
        if n == 1:
            direct.update(dict(assignment))
            named = {p: loc for p, loc in named.items() if p not in direct}
        elif n > 1:
            raise StateDictError(
                [f"several orders of the module names fit the model's layers: "
                 f"{', '.join(sorted(named, key=_natural_key))} onto numcnn layers "
                 f"{', '.join(p for p, _ in left)}"],
                "the names alone do not say which goes where; pass name_map= (e.g. "
                f"name_map={{{', '.join(repr(p) + ': ' + repr(q) for p, (q, _) in zip(sorted(named, key=_natural_key), left))}}})")
        else:
            # no order fits: pair by kind alone (names and ranks), if that is unique, to say
            # exactly which shapes differ
            k, pairing = _count_orders(families, left, functools.partial(_fits, with_shapes=False),
                                       strict)
            if k == 1:
                direct.update(dict(pairing))
                named = {p: loc for p, loc in named.items() if p not in direct}
    # 3. everything that is now paired is checked name by name
    unexpected, missing, renamed = [], [], {}
    for src, dst in direct.items():
        for local in src_groups[src]:
            renamed[f"{dst}.{local}"] = f"{src}.{local}"
    for p, locals_ in named.items():
        for local in locals_:
            unexpected.append(f"{p}.{local}")
    for name in slots:
        if name not in renamed and slots[name][0] != "counter":
            missing.append(name)
    for name, src in renamed.items():
        if name not in slots:
            unexpected.append(src)
    mism = []
    for name, src in renamed.items():
        if name not in slots:
            continue
        v = mapping[src]
        label = src if src == name else f"{src} (-> {name})"
        if slots[name][0] == "counter":
            if v.shape not in ((), (1,)) or v.dtype.kind not in "iu":
                mism.append(f"shape/dtype mismatch: {label}: file {v.dtype} {tuple(v.shape)}, "
                            f"expected an integer scalar")
            continue
        if tuple(v.shape) != model_shapes[name]:
            mism.append(f"shape mismatch: {label}: file {tuple(v.shape)}, model "
                        f"{model_shapes[name]}")
        elif v.dtype.kind != "f":
            mism.append(f"dtype mismatch: {label}: file {v.dtype}, expected floats")
        elif not np.all(np.isfinite(v)):
            mism.append(f"non-finite values: {label} holds NaN or inf")
    problems += mism
    if strict:
        problems += [f"missing: {n} (model shape {model_shapes[n]})" for n in missing]
        problems += [f"unexpected: {n} (file shape {tuple(mapping[n].shape)})"
                     for n in sorted(unexpected, key=_natural_key)]
    if problems:
        advice = ""
        if named or any(p.startswith(("missing", "unexpected")) for p in problems):
            advice = ("numcnn names are nn.Sequential's: " + ", ".join(
                f"{p} ({_describe({k: model_shapes[f'{p}.{k}'] for k in loc})})"
                for p, loc in model_groups.items()) + "; pass name_map= for other names")
        raise StateDictError(problems, advice)
    dtype = model.dtype
    for name, src in renamed.items():
        if name not in slots or slots[name][0] == "counter":
            continue
        kind, owner, attr = slots[name]
        old = _slot_array(slots[name])
        value = get_array_module(old).asarray(np.asarray(mapping[src], dtype=dtype))
        if kind == "param":
            owner.value = value
            owner.grad = None
        else:
            owner.set_buffer(attr, value)
    return IncompatibleKeys(missing, sorted(unexpected, key=_natural_key))


def _refuse_pickle(path, data=None):
    if path.lower().endswith(PICKLE_SUFFIXES) or (data is not None and (
            data[:4] == b"PK\x03\x04" or data[:1] == b"\x80")):
        raise ModelFileError(f"{path}: this looks like a PyTorch pickle (torch.save) file; numcnn "
                             f"never unpickles files (they can run any code). {CONVERT_HINT}")


def load_torch_weights(model, path, strict=True, name_map=None):
    """Load a PyTorch ``state_dict`` saved with ``safetensors.torch.save_file`` into ``model``.

    Read with numcnn's own safetensors reader (sizes checked before anything is allocated);
    ``.pth``/``.pt`` pickles are refused with the one line that converts them.
    """
    from ..io import decode_safetensors
    path = as_path(path, "load_torch_weights")
    _refuse_pickle(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"weights file {path!r} does not exist")
    data = read_file(path, "weights file")
    _refuse_pickle(path, data)
    tensors, _ = decode_safetensors(data, where=path)
    try:
        return load_state_dict(model, tensors, strict=strict, name_map=name_map)
    except StateDictError as exc:
        raise StateDictError(exc.problems, f"{exc.advice} (weights file {path})".strip()) from None
