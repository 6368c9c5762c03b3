"""Where a handler's network runs: PyTorch, or ONNX Runtime on the CPU. Shipped in every
archive beside `base.py`.

On a CPU, ONNX Runtime runs these small convnets at the batch sizes a request has (1-10
faces, doubled by flip averaging) 2-3x faster than eager PyTorch, whose per-operator
overhead dominates there. The archive keeps one format (a state_dict and the network
source): the handler exports the loaded network to ONNX in memory when it starts, so there
is one archive, one handler and one set of weights, and the two runtimes cannot drift
apart. A stock TorchServe without `onnx` / `onnxruntime`, a GPU, or an export that fails
runs the network in PyTorch, as before.

The choice is `auto` (ONNX Runtime on the CPU when it is installed, else PyTorch), `torch`
or `onnx` (fail to load without it): the gateway passes its FER_MODEL_RUNTIME and
FER_MODEL_THREADS settings in the handler context; TorchServe's workers read the same
environment variables.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")

#: A network as the handlers call it: a normalised batch in, logits out (on the CPU for
#: ONNX Runtime, on the handler's device for PyTorch).
Runner = Callable[[torch.Tensor], torch.Tensor]


def torch_runner(model: torch.nn.Module) -> Runner:
    """The network in PyTorch, without autograd."""

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out: torch.Tensor = model(x)
        return out

    return run


def onnx_runner(model: torch.nn.Module, example: torch.Tensor, threads: int = 0) -> Runner:
    """The network exported to ONNX (batch dimension dynamic) and run by ONNX Runtime on
    the CPU with `threads` intra-op threads (0: ONNX Runtime's default, every core).

    Raises ImportError without `onnx` / `onnxruntime`, and the exporter's error for a
    network it cannot export."""
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(
            model,
            (example,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to a file object
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: the gateway's detector and other requests
    # share these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to("cpu", torch.float32).contiguous()
        (logits,) = session.run(None, {"x": x.numpy()})
        return torch.from_numpy(logits)

    return run


def choose(
    model: torch.nn.Module,
    example: torch.Tensor,
    device: torch.device,
    properties: dict[str, Any] | None = None,
) -> tuple[str, Runner]:
    """The runtime the context's properties (`fer_runtime`, `fer_threads`) or the
    environment (FER_MODEL_RUNTIME, FER_MODEL_THREADS) ask for, and its runner."""
    props = properties or {}
    name = str(props.get("fer_runtime") or os.environ.get("FER_MODEL_RUNTIME") or "auto")
    if name not in RUNTIMES:
        raise ValueError(f"model runtime must be one of {RUNTIMES}, got {name!r}")
    threads = int(props.get("fer_threads") or os.environ.get("FER_MODEL_THREADS") or 0)
    if name == "torch" or (name == "auto" and device.type != "cpu"):
        return "torch", torch_runner(model)
    if name == "onnx" and device.type != "cpu":
        raise ValueError("the onnx runtime runs on the CPU only")
    try:
        runner = onnx_runner(model, example, threads)
    except ImportError:
        if name == "onnx":
            raise
        log.info("onnx / onnxruntime not installed: the network runs in PyTorch")
    except Exception:  # noqa: BLE001 - a network the exporter cannot take still serves
        if name == "onnx":
            raise
        log.warning("ONNX export failed: the network runs in PyTorch", exc_info=True)
    else:
        # A model server's worker (TorchServe) that runs its network in ONNX Runtime uses
        # PyTorch only for trivial tensor work: FER_TORCH_THREADS=1 keeps PyTorch's idle
        # OpenMP threads from spinning on ONNX Runtime's cores (as the gateway does).
        torch_threads = int(os.environ.get("FER_TORCH_THREADS") or 0)
        if torch_threads:
            torch.set_num_threads(torch_threads)
        return "onnx", runner
    return "torch", torch_runner(model)
