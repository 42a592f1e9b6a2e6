"""The version of numcnn (one place; the package, model files and run records read it)."""
__version__ = "0.1.0"
