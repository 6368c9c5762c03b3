"""TorchServe handlers. Each module is self-contained (torch, numpy, Pillow only): it is
copied into `.mar` archives and run by TorchServe and by the in-process LocalBackend alike."""
