"""Fixtures shared by every test folder.

`transfer_store(delay)` is a model store holding `tdgan.mar`: a tiny transfer network
(tests/nets/tiny_transfer.py, untrained weights) exported with `training.export` exactly as
a real TDGAN archive is, and served by the real generator handler. The `tdgan` archive
does not exist yet; this one lets the transfer job pipeline (decode, detect, align,
InferenceBackend.generate, PNG) and the job queues run for real without it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

NETS = Path(__file__).resolve().parent / "nets"

#: The input crop of the test archive (RGB, FER2013 framing).
TRANSFER_INPUT = {
    "size": 64,
    "channels": 3,
    "color": "rgb",
    "mean": 0.5,
    "std": 0.5,
    "framing": "fer2013",
}


def export_tiny_transfer(store: Path, delay: float = 0.0) -> Path:
    """Write `store/tdgan.mar` from an untrained tiny transfer network."""
    import torch

    import training.export
    from service.handlers.base import load_module
    from training.train import checkpoint

    torch.manual_seed(0)
    kwargs = {"channels": 3, "delay": delay}
    net = load_module(str(NETS / "tiny_transfer.py"), "tiny_transfer").build(**kwargs)
    meta = {
        "kind": "transfer",
        "classes": [],
        "input": TRANSFER_INPUT,
        "inputs": ["face", "expression"],
        "net": {"module": "tiny_transfer", "file": "tiny_transfer.py", "kwargs": kwargs},
    }
    ckpt = store.parent / f"tiny-transfer-{delay:g}.pt"
    checkpoint.save({"model": net.state_dict(), "metadata": meta}, ckpt)
    # The network's source comes from tests/nets instead of training/nets.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.export, "NETS", NETS)
        return training.export.export(ckpt, "tdgan", "0.0-test", store)


@pytest.fixture(scope="session")
def transfer_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[[float], Path]:
    """A model store with a test `tdgan.mar` whose network sleeps `delay` s per call
    (built once per delay and session)."""
    stores: dict[float, Path] = {}

    def make(delay: float = 0.0) -> Path:
        if delay not in stores:
            store = tmp_path_factory.mktemp(f"transfer-store-{delay:g}") / "store"
            export_tiny_transfer(store, delay)
            stores[delay] = store
        return stores[delay]

    return make


def export_tiny_derl(store: Path) -> Path:
    """Write `store/derl.mar`: the real DeRL network (training/nets/derl.py) at tiny widths
    with untrained weights, exported as a real DeRL archive. For plumbing tests of the
    neutral-face path only; accuracy is `fer-train evaluate`'s business."""
    import torch

    from training.export import export
    from training.nets import build_net
    from training.train import checkpoint
    from training.train.classifier import ClassifierConfig, metadata

    torch.manual_seed(0)
    cfg = ClassifierConfig(
        net="derl",
        net_kwargs={"widths": [8, 8, 16, 16], "code": 16, "local_width": 8, "local_fc": 16},
        mean=0.5,
        std=0.5,
    )
    meta = metadata(cfg, 48)
    meta["net"]["kwargs"] = {**cfg.net_kwargs, "input_size": 48}
    net = build_net("derl", meta["net"]["kwargs"])
    ckpt = store.parent / "tiny-derl.pt"
    checkpoint.save({"model": net.state_dict(), "metadata": meta}, ckpt)
    return export(ckpt, "derl", "0.0-test", store)


@pytest.fixture(scope="session")
def derl_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding a tiny test `derl.mar` (see `export_tiny_derl`)."""
    store = tmp_path_factory.mktemp("derl-store") / "store"
    export_tiny_derl(store)
    return store


def export_tiny_frontalize(store: Path) -> Path:
    """Write `store/frontalize.mar`: the real frontalization network
    (training/nets/frontalize.py) at tiny widths with untrained weights, exported as a
    real frontalizer archive. For plumbing tests of `/frontalize` only; quality is
    `fer-train frontalize`'s business."""
    import torch

    from training.export import export
    from training.nets.frontalize import Frontalizer
    from training.train import checkpoint
    from training.train.frontalize import FrontalizeConfig, metadata

    torch.manual_seed(0)
    cfg = FrontalizeConfig(widths=(4, 4, 8, 8), code=8, noise=2)
    meta = metadata(cfg, 48)
    net = Frontalizer(**meta["net"]["kwargs"])
    ckpt = store.parent / "tiny-frontalize.pt"
    checkpoint.save({"model": net.state_dict(), "metadata": meta}, ckpt)
    return export(ckpt, "frontalize", "0.0-test", store)


@pytest.fixture(scope="session")
def frontalize_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding a tiny test `frontalize.mar` (see `export_tiny_frontalize`) and
    the shipped `compact.mar`."""
    import shutil

    store = tmp_path_factory.mktemp("frontalize-store") / "store"
    export_tiny_frontalize(store)
    # and the shipped compact classifier, so that the app has a default model
    shutil.copy(Path(__file__).resolve().parents[1] / "model_store" / "compact.mar", store)
    return store


DATA = Path(__file__).resolve().parent / "data"

#: FFmpeg muxer and encoder of each container the clip fixture writes.
CLIP_FORMATS = {"mp4": ("mp4", "libx264"), "webm": ("webm", "libvpx"), "avi": ("avi", "mpeg4")}


def encode_clip(
    photos: list[str], seconds: float = 1.0, rate: int = 10, container: str = "mp4"
) -> bytes:
    """A real clip made with PyAV: each photo of tests/data (or `"blank"`, a grey frame)
    shown for `seconds` in turn, at `rate` frames a second, 320x240 (photos letterboxed)."""
    import io

    import av
    from PIL import Image, ImageOps

    size = (320, 240)
    frames = []
    for name in photos:
        if name == "blank":
            frames.append(Image.new("RGB", size, (110, 110, 110)))
        else:
            with Image.open(DATA / name) as photo:
                frames.append(ImageOps.pad(photo.convert("RGB"), size, color=(0, 0, 0)))
    muxer, codec = CLIP_FORMATS[container]
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for _ in range(round(seconds * rate)):
                for packet in stream.encode(av.VideoFrame.from_image(frame)):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="session")
def clip() -> Callable[..., bytes]:
    """`encode_clip`: a real small clip of test photos, encoded now (cached per session)."""
    made: dict[tuple[object, ...], bytes] = {}

    def make(
        photos: list[str], seconds: float = 1.0, rate: int = 10, container: str = "mp4"
    ) -> bytes:
        key = (tuple(photos), seconds, rate, container)
        if key not in made:
            made[key] = encode_clip(photos, seconds, rate, container)
        return made[key]

    return make


def export_untrained_sequence(store: Path) -> Path:
    """Write `store/sequence.mar`: the frame-to-sequence network (training/nets/sequence.py)
    over the shipped compact classifier's backbone, its GRU head untrained, exported as a
    real sequence archive (the handler, both network sources, fp16 weights). For plumbing
    tests only; `fer-train sequence` trains the real one."""
    import torch

    from training.evaluate import load_handler
    from training.export import export
    from training.nets.sequence import FrameToSequence
    from training.train import checkpoint
    from training.train.sequence import SequenceConfig, metadata

    torch.manual_seed(0)
    frame = load_handler(REPO_STORE / "compact.mar")
    meta = metadata(SequenceConfig(), frame.metadata)
    net = FrameToSequence(**meta["net"]["kwargs"])
    net.backbone.load_state_dict(frame.model.state_dict())
    ckpt = store.parent / "untrained-sequence.pt"
    checkpoint.save({"model": net.state_dict(), "metadata": meta, "parameters": 1}, ckpt)
    return export(ckpt, "sequence", "0.0-test", store, fp16=True)


REPO_STORE = Path(__file__).resolve().parents[1] / "model_store"


@pytest.fixture(scope="session")
def sequence_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with the shipped `compact.mar` and an untrained test `sequence.mar`
    (see `export_untrained_sequence`)."""
    import shutil

    store = tmp_path_factory.mktemp("sequence-store") / "store"
    export_untrained_sequence(store)
    shutil.copy(REPO_STORE / "compact.mar", store)
    return store
