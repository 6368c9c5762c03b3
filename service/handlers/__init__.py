"""TorchServe handlers, copied into `.mar` archives and run by TorchServe and by the
in-process LocalBackend alike: `base.py` (loading, TorchServe's entry point, shared
helpers) and `layout.py` (the archive's file names) ship in every archive, beside the one
handler of its kind (`classifier.py` or `generator.py`). They need torch, numpy and Pillow
only."""
