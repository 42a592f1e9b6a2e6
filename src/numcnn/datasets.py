"""``numcnn.datasets``: the public name of :mod:`numcnn.data.datasets` (Keras's ``datasets``).

The code lives in :mod:`numcnn.data.datasets`; this module is that same module object, so
``numcnn.datasets.load("mnist-5k")`` and ``from numcnn.datasets import load`` work as in Keras.
"""
import sys

from .data import datasets as _datasets

sys.modules[__name__] = _datasets
