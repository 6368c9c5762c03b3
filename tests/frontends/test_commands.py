"""`fer-service classify / transfer / frontalize`: in this process by default (the
models of the repository's model store), on the tests' gateway with `--url` (whose
default model, `compact`, tells it apart from the in-process `derl`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from served import DATA, GATEWAY_DEFAULT, Gateway

from service.cli import main
from service.client import Client
from service.drawing import COLOURS

pytestmark = pytest.mark.integration  # a real gateway, in a process of its own

MULTI = DATA / "multi_face.jpg"


def test_classify_json_runs_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", str(MULTI), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["faces"]) == 5 and answer["model"]["name"] == "derl"


def test_classify_json_uses_the_url(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", str(MULTI), "--json", "--url", gateway.url]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["faces"]) == 5 and answer["model"]["name"] == GATEWAY_DEFAULT


def test_many_photos_give_json_lines(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    photos = [DATA / n for n in ("astronaut.jpg", "multi_face.jpg", "no_face.jpg")]
    argv = ["classify", *map(str, photos), "--json", "--model", "derl", "--url", gateway.url]
    assert main(argv) == 0
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [(d["file"], len(d["faces"])) for d in lines] == [
        (str(photos[0]), 1),
        (str(photos[1]), 5),
        (str(photos[2]), 0),
    ]
    assert all(d["model"]["name"] == "derl" for d in lines)
    assert "3/3" in out.err  # the progress bar


def test_draw_boxes_each_face(gateway: Gateway, tmp_path: Path) -> None:
    out = tmp_path / "drawn.png"
    assert main(["classify", str(MULTI), "--draw", str(out), "--url", gateway.url]) == 0
    with Client(gateway.url) as client:
        faces = client.classify(MULTI).faces
    drawn = Image.open(out).convert("RGB")
    assert drawn.size == Image.open(MULTI).size
    for face in faces:
        colour = tuple(int(COLOURS[face.expression][i : i + 2], 16) for i in (1, 3, 5))
        b = face.box  # the box's outline is drawn inside it, in the expression's colour
        assert drawn.getpixel((round(b.x + b.width / 2), int(b.y + b.height) - 1)) == colour


def test_text_output_and_errors(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    assert main(["classify", str(MULTI), str(broken), "--url", gateway.url]) == 1
    out = capsys.readouterr()
    assert f"{MULTI}: 5 face(s), {GATEWAY_DEFAULT}" in out.out
    assert f"{broken}: Not an image in a supported format" in out.err
    assert main(["classify", str(MULTI), "--model", "resnet", "--url", gateway.url]) == 1
    assert "No such model: no model 'resnet'" in capsys.readouterr().err


def test_classify_frontalized(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["classify", str(MULTI), "--frontalize-min-yaw", "0", "--url", gateway.url]
    assert main(argv) == 0
    assert capsys.readouterr().out.count("(frontalized, yaw") == 5
    assert main(["classify", str(MULTI), "--frontalize", "--url", gateway.url]) == 0
    assert "(frontalized" not in capsys.readouterr().out  # yaws of -8 to +16, under 20


def test_transfer_writes_the_png(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.png"
    face, expression = str(DATA / "astronaut.jpg"), str(DATA / "grace_hopper.jpg")
    assert main(["transfer", face, expression, "-o", str(out), "--url", gateway.url]) == 0
    assert Image.open(out).size == (64, 64)
    assert "succeeded" in capsys.readouterr().err
    no_face = str(DATA / "no_face.jpg")
    assert main(["transfer", face, no_face, "-o", str(out), "--url", gateway.url]) == 1
    assert "No such face in the image" in capsys.readouterr().err


def test_frontalize_and_without_the_model_it_says_so(
    gateway: Gateway, busy_gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "front.png"
    # the gateway's store has the tiny test frontalizer: the frontal crop comes back
    assert main(["frontalize", str(MULTI), "-o", str(out), "--url", gateway.url]) == 0
    assert Image.open(out).size == (48, 48)
    out.unlink()
    # the busy gateway's store has none
    assert main(["frontalize", str(MULTI), "-o", str(out), "--url", busy_gateway.url]) == 2
    assert "has no frontalization model" in capsys.readouterr().err
    assert not out.exists()


def test_video_prints_tracks_and_draws_the_timeline(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip, timeline = DATA / "single_face.mp4", tmp_path / "timeline.png"
    argv = ["video", str(clip), "--timeline", str(timeline), "--url", gateway.url]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "12 frames sampled at 5/s, 1 track(s)" in out and "track  1" in out
    assert Image.open(timeline).width == 900

    assert main(["video", str(clip), "--json", "--fps", "2", "--url", gateway.url]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["frames"]) == 5 and answer["model"]["name"] == GATEWAY_DEFAULT
