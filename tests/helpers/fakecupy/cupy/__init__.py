"""A stand-in 'cupy' for checking numcnn's array-module seam on a machine without a GPU.

tests/test_backend.py runs tests/test_cupy.py with this folder on PYTHONPATH (on a machine
with real CuPy and a GPU, test_cupy.py runs against the real thing).  It computes with NumPy, so
it checks that every array goes through the right module, not GPU numerics.

Arrays are a wrapper type (module 'cupy') around a numpy array, behaving like real CuPy where
it matters for portability:
* np.asarray / np.array / implicit __array__ conversion  -> TypeError (as CuPy)
* mixing with numpy.ndarray in ufuncs / operators         -> TypeError (as CuPy)
* reductions return 0-d device arrays (not numpy scalars) -> float()/int()/bool() are syncs
* numpy functions called on fake arrays dispatch via __array_function__ (as CuPy's NEP-18)
Counters record device->host syncs and host->device transfers, with call sites.
"""
import collections, sys, traceback
import numpy as _np
import numpy.lib.mixins as _mix

STATS = collections.Counter()
SITES = collections.Counter()
STRICT_SETITEM = False

def _site(kind):
    STATS[kind] += 1
    for fr in reversed(traceback.extract_stack()[:-2]):
        if "numcnn" in fr.filename:
            SITES[(kind, fr.filename.split("src/")[-1], fr.lineno, fr.line)] += 1
            break

class ndarray(_mix.NDArrayOperatorsMixin):
    __slots__ = ("_a",)
    __array_priority__ = 100
    def __init__(self, a):
        if isinstance(a, ndarray):
            a = a._a
        object.__setattr__(self, "_a", a)
    # ---- conversions CuPy forbids / syncs
    def __array__(self, *a, **k):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly.")
    def get(self, *a, **k):
        _site("d2h_get")
        return self._a.copy()
    def __float__(self): _site("sync_float"); return float(self._a)
    def __int__(self): _site("sync_int"); return int(self._a)
    def __index__(self): _site("sync_index"); return self._a.__index__()
    def __bool__(self): _site("sync_bool"); return bool(self._a)
    def item(self): _site("sync_item"); return self._a.item()
    def tolist(self): _site("sync_tolist"); return self._a.tolist()
    def __len__(self): return len(self._a)
    def __iter__(self):
        _site("iter")
        for v in self._a: yield _wrap(v, force=True)
    def __repr__(self): return "fakecupy." + repr(self._a)
    # ---- attributes
    shape = property(lambda s: s._a.shape)
    dtype = property(lambda s: s._a.dtype)
    ndim = property(lambda s: s._a.ndim)
    size = property(lambda s: s._a.size)
    itemsize = property(lambda s: s._a.itemsize)
    nbytes = property(lambda s: s._a.nbytes)
    strides = property(lambda s: s._a.strides)
    flags = property(lambda s: s._a.flags)
    T = property(lambda s: ndarray(s._a.T))
    base = property(lambda s: None)
    device = property(lambda s: "fakegpu")
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            def meth(*args, **kw):
                return _wrap(attr(*_unwrap(args, name), **_unwrap(kw, name)), force=True)
            return meth
        return attr
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, "getitem")], force=True)
    def __setitem__(self, key, value):
        if isinstance(value, _np.ndarray) and value.ndim > 0:
            _site("h2d_setitem")
        self._a[_unwrap(key, "setitem")] = _unwrap(value, "setitem")
    # ---- numpy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        for v in list(inputs) + list(kw.get("out", ()) or ()):
            if isinstance(v, _np.ndarray):
                raise TypeError(f"fakecupy: Unsupported type {type(v)} in ufunc {ufunc.__name__} (real CuPy refuses numpy arrays)")
        ins = [_unwrap(v, ufunc.__name__) for v in inputs]
        if "out" in kw:
            kw["out"] = tuple(_unwrap(o, ufunc.__name__) for o in kw["out"])
        if "where" in kw:
            kw["where"] = _unwrap(kw["where"], ufunc.__name__)
        res = getattr(ufunc, method)(*ins, **kw)
        if "out" in kw and res is not None:
            outs = kw["out"]
            if isinstance(res, tuple):
                return tuple(ndarray(o) for o in outs)
            return ndarray(outs[0]) if len(outs) == 1 else res
        return _wrap(res, force=True)
    def __array_function__(self, func, types, args, kwargs):
        _site("np_func_dispatch:" + func.__name__)
        return _wrap(func(*_unwrap(args, func.__name__), **_unwrap(kwargs, func.__name__)), force=True)

def _unwrap(v, where=""):
    if isinstance(v, ndarray):
        return v._a
    if isinstance(v, tuple):
        return tuple(_unwrap(u, where) for u in v)
    if isinstance(v, list):
        return [_unwrap(u, where) for u in v]
    if isinstance(v, dict):
        return {k: _unwrap(u, where) for k, u in v.items()}
    return v

def _wrap(v, force=False):
    if isinstance(v, _np.ndarray):
        return ndarray(v)
    if force and isinstance(v, _np.generic) and not isinstance(v, (_np.str_, _np.bytes_)):
        return ndarray(_np.asarray(v))            # CuPy reductions give 0-d device arrays
    if isinstance(v, tuple):
        return tuple(_wrap(u, force) for u in v)
    if isinstance(v, list):
        return [_wrap(u, force) for u in v]
    return v

def _from_host(a, **kw):
    if isinstance(a, ndarray):
        return ndarray(_np.asarray(a._a, **kw)) if kw else a
    if isinstance(a, _np.ndarray) or isinstance(a, (list, tuple)):
        _site("h2d_asarray")
    return ndarray(_np.array(_unwrap(a), **kw) if not isinstance(a, _np.ndarray) else _np.array(a, **kw))

def asarray(a, dtype=None, order=None, **kw):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == _np.dtype(dtype) else ndarray(a._a.astype(dtype))
    _site("h2d_asarray")
    return ndarray(_np.array(_unwrap(a), dtype=dtype, order=order))

def array(a, dtype=None, copy=True, **kw):
    if isinstance(a, ndarray):
        return ndarray(_np.array(a._a, dtype=dtype, copy=copy))
    _site("h2d_array")
    return ndarray(_np.array(a, dtype=dtype, copy=copy))

def asnumpy(a, *args, **kw):
    if isinstance(a, ndarray):
        _site("d2h_asnumpy")
        return a._a.copy()
    return _np.asarray(a)

def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np

ascontiguousarray = lambda a, dtype=None: ndarray(_np.ascontiguousarray(_unwrap(a), dtype=dtype)) if isinstance(a, ndarray) else asarray(a, dtype)

def _wrap_func(fn, name):
    def f(*args, **kw):
        for v in list(args) + list(kw.values()):
            if isinstance(v, _np.ndarray) and v.ndim > 0:
                raise TypeError(f"fakecupy.{name}: got a numpy.ndarray argument (real CuPy refuses)")
        return _wrap(fn(*_unwrap(args, name), **_unwrap(kw, name)), force=True)
    f.__name__ = name
    return f

class _Lib:
    class stride_tricks:
        @staticmethod
        def as_strided(x, shape=None, strides=None):
            if not isinstance(x, ndarray):
                raise TypeError("fakecupy.lib.stride_tricks.as_strided needs a cupy array")
            return ndarray(_np.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides))
lib = _Lib()

class _Runtime:
    @staticmethod
    def getDeviceCount(): return 1
class cuda:
    runtime = _Runtime()
    class Device:
        def __init__(self, i=0): self.id = i
        def __enter__(self): return self
        def __exit__(self, *a): pass
        def synchronize(self): pass

class random:
    @staticmethod
    def default_rng(seed=None):
        raise NotImplementedError

def __getattr__(name):
    obj = getattr(_np, name)
    if isinstance(obj, _np.ufunc):
        return obj                  # dispatches to ndarray.__array_ufunc__ for fake arrays
    if callable(obj) and not isinstance(obj, type):
        return _wrap_func(obj, name)
    return obj                      # dtypes, scalar types, constants (inf, pi, newaxis)
