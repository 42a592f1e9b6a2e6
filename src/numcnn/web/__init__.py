"""``numcnn serve``: a local web app in which every number shown is computed by numcnn.

Pages (plain HTML/CSS/JavaScript in ``static/``, no build step, nothing from a CDN):

1. ``/``          watch a convolution (the deck's "toggle movement" figure),
2. ``/kernels``   what a kernel highlights in a picture,
3. ``/model``     look inside a model: draw a digit, see every layer and a saliency map,
4. ``/train``     train live, with curves, filters and a confusion matrix,
5. ``/summary``   a model's layers, output shapes, parameters and FLOPs.

The JSON API the pages use is documented in ``docs/web-api.md``.  Modules:

* :mod:`.server`       the Starlette app (routes) and the uvicorn runner,
* :mod:`.security`     Host/Origin checks, the token, bounded request bodies, JSON errors,
* :mod:`.conv_api`     the convolution and kernel pages' numbers (from :mod:`numcnn.viz.convdemo`),
* :mod:`.lookinside`   activations layer by layer, saliency, filters and the summary table,
* :mod:`.model_store`  the list of models a browser may choose from (by id, never by path),
* :mod:`.training_job` one training run in a background thread (adapter to the library's run),
* :mod:`.command`      the ``numcnn serve`` subcommand.

Nothing below this package imports it.
"""
__all__ = ["create_app", "serve"]


def __getattr__(name):
    # Starlette and uvicorn are imported when the server is wanted, not by `numcnn --help`
    if name in __all__:
        from . import server
        return getattr(server, name)
    raise AttributeError(f"module 'numcnn.web' has no attribute {name!r}")
