"""The TorchServe launcher: `config` (what a local TorchServe serves, where it listens, its
`config.properties`) and `process` (start it, wait for its workers, stop it and every
process it started). `fer-service torchserve` and the integration tests use it; the
gateway talks to a running TorchServe through service/inference.py instead."""
