"""The frame-to-sequence model: its data, network, `fer-train sequence` in the shared loop,
and the exported `sequence.mar` served by its handler. Smoke-sized: a CK+-shaped npz of
synthetic faces and a few synthetic onsets; the real figures are in the model card."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.archive import open_archive
from service.wire import crops_tensor
from training.__main__ import main
from training.data.ckplus import load_ckplus
from training.data.sequences import ckplus_sequences, synthetic_sequences
from training.data.synthetic import make_dataset, write_ckplus_npz
from training.nets.sequence import FrameToSequence

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckplus_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckplus") / "ckplus.npz"
    write_ckplus_npz(path, make_dataset(36, identities=9, seed=2))
    return path


def test_sequences_of_the_data(ckplus_npz: Path) -> None:
    data = load_ckplus(ckplus_npz)
    made = ckplus_sequences(data, steps=5)
    sources = set(made.sources)
    assert {"ckplus", "interpolated"} <= sources
    for i, seq in enumerate(made.sequences):
        frames = [made.frames[j] for j in seq]
        if made.sources[i] == "interpolated":
            assert len(frames) == 5
            # an onset: from the neutral frame to the peak frame, exactly
            assert not np.array_equal(frames[0], frames[-1])
        if made.sources[i] == "ckplus":
            assert len(frames) >= 2
    onsets = synthetic_sequences(14, steps=4, seed=1)
    assert len(onsets) == 14 and set(onsets.labels) == set(range(7))
    assert onsets.pool().shape == (56, 48, 48)


def test_padding_does_not_change_the_answer() -> None:
    torch.manual_seed(0)
    net = FrameToSequence(backbone={"widths": (8, 8), "fc": 16}, hidden=8).eval()
    feats = torch.randn(1, 3, net.feature_size)
    padded = torch.cat([feats, torch.randn(1, 2, net.feature_size)], dim=1)
    alone = net.classify_features(feats, torch.tensor([3]))
    assert torch.allclose(alone, net.classify_features(padded, torch.tensor([3])), atol=1e-6)
    crops = torch.randn(2, 4, 1, 48, 48)
    assert net(crops, torch.tensor([4, 2])).shape == (2, 7)


def test_train_export_and_serve(ckplus_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [
        "sequence",
        "--ckplus",
        str(ckplus_npz),
        "--backbone",
        str(REPO / "model_store" / "compact.mar"),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--synthetic",
        "14",
        "--holdout-folds",
        "0",
        "--threads",
        "1",
        "--quiet",
    ]
    assert main(argv) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and "val_acc" in history[-1]
    assert (out / "export.pt").exists() and (out / "curves.png").exists()

    assert (
        main(
            [
                "export",
                str(out / "export.pt"),
                "--name",
                "sequence",
                "--to",
                str(tmp_path),
                "--fp16",
            ]
        )
        == 0
    )
    archive = tmp_path / "sequence.mar"
    assert archive.stat().st_size < 20e6
    loaded = open_archive(archive)
    assert loaded.metadata.kind == "sequence" and loaded.metadata.net.files == ["compact.py"]
    handler = loaded.handler
    crops = load_ckplus(ckplus_npz).images[:4]
    probs = handler.predict_sequences([crops, crops[:1]])
    assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    (answer,) = handler.handle([{"body": crops_tensor(list(crops))}], loaded.context)
    assert answer["label"] in answer["probabilities"]
    assert np.allclose(list(answer["probabilities"].values()), probs[0], atol=1e-4)
    truncated = crops_tensor([crops[0]])[:-100]
    floats = io.BytesIO()
    np.save(floats, crops.astype(np.float32))
    for bad in (b"{}", b"not a tensor", floats.getvalue(), truncated):
        with pytest.raises(Exception) as caught:
            handler.handle([{"body": bad}], loaded.context)
        assert getattr(caught.value, "error_code", None) == 400
