"""The commands of `fer-service` for people who use the service: `classify`, `video`,
`transfer` and `frontalize`, in this process by default (the embedded gateway) or against a server
with `--url`, through the Python client (`service/client/`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

    from service.client import AsyncClient, JobCallback
    from service.schemas import ClassifyResponse, JobStatus, ModelInfo, ModelList

#: `argparse`'s private subparsers type, spelled out once.
Subparsers = Any


def _client(args: argparse.Namespace) -> AbstractAsyncContextManager[AsyncClient]:
    """The API: the gateway at `--url`, else one started in this process."""
    from service.client import AsyncClient, embedded

    return AsyncClient(args.url, timeout=args.timeout) if args.url else embedded()


def _add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        help="a running gateway, e.g. http://127.0.0.1:8000 (default: none, the models run "
        "in this process from FER_MODEL_STORE, as `serve` would run them)",
    )
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for an answer or a job"
    )


def _fail(message: str, code: int = 1) -> int:
    print(f"fer-service: {message}", file=sys.stderr)
    return code


def _draw_target(draw: Path, photo: Path, many: bool) -> Path:
    """Where the drawing of `photo` goes: `--draw` itself, or a PNG in that folder."""
    if not many:
        return draw
    draw.mkdir(parents=True, exist_ok=True)
    return draw / f"{photo.stem}.png"


def _describe(photo: Path, answer: ClassifyResponse) -> str:
    from service.drawing import label

    lines = [f"{photo}: {len(answer.faces)} face(s), {answer.model.name} {answer.model.version}"]
    for i, face in enumerate(answer.faces, 1):
        b = face.box
        lines.append(
            f"  {i:2d}  {label(face):14s} box {b.x:.0f},{b.y:.0f} {b.width:.0f}x{b.height:.0f}"
            + (f" (frontalized, yaw {face.yaw:+.0f})" if face.frontalized else "")
        )
    return "\n".join(lines)


async def _classify(args: argparse.Namespace) -> int:
    import httpx
    from PIL import Image
    from tqdm import tqdm

    from service.client import ServiceError
    from service.drawing import draw_faces

    many = len(args.photos) > 1
    failed = 0
    async with _client(args) as client:
        for photo in tqdm(args.photos, unit="photo", disable=not many, file=sys.stderr):
            try:
                answer = await client.classify(
                    photo,
                    model=args.model,
                    max_faces=args.max_faces,
                    neutral=args.neutral,
                    frontalize=args.frontalize or args.frontalize_min_yaw is not None,
                    frontalize_min_yaw=args.frontalize_min_yaw,
                )
            except (ServiceError, httpx.HTTPError, OSError) as exc:
                failed += 1
                tqdm.write(f"fer-service: {photo}: {exc}", file=sys.stderr)
                continue
            if args.json and many:
                print(json.dumps({"file": str(photo), **answer.model_dump(mode="json")}))
            elif args.json:
                print(answer.model_dump_json(indent=2))
            else:
                tqdm.write(_describe(photo, answer), file=sys.stdout)
            if args.draw:
                with Image.open(photo) as image:
                    draw_faces(image, answer.faces).save(_draw_target(args.draw, photo, many))
    return 1 if failed else 0


def cmd_classify(args: argparse.Namespace) -> int:
    """Classify the faces of photos, print them and optionally draw them."""
    return asyncio.run(_classify(args))


def add_classify(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "classify",
        help="every face of photos with its expression",
        description="Find every face of each photo and its expression (POST /classify), "
        "in this process by default or on the gateway at --url. Prints a line per face, or "
        "with --json the API's answer (one JSON document; JSON lines with a `file` key "
        "for several photos). A progress bar shows for several photos.",
    )
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    p.add_argument("--json", action="store_true", help="print the API's JSON answers")
    p.add_argument("--model", help="the classifier (default: the gateway's default model)")
    p.add_argument("--max-faces", type=int, help="classify at most this many faces, the largest")
    p.add_argument(
        "--neutral", action="store_true", help="DeRL only: also each face's neutral face"
    )
    p.add_argument(
        "--frontalize",
        action="store_true",
        help="classify the frontal view of turned faces (needs a frontalize model)",
    )
    p.add_argument(
        "--frontalize-min-yaw",
        type=float,
        metavar="DEG",
        help="frontalize the faces turned by at least this many degrees (implies "
        "--frontalize; default: the server's FER_FRONTALIZE_MIN_YAW)",
    )
    p.add_argument(
        "--draw",
        type=Path,
        metavar="OUT",
        help="draw boxes, landmarks and labels on the photo and save it as this PNG (a "
        "folder of PNGs, one per photo, for several photos)",
    )
    _add_client_options(p)
    p.set_defaults(func=cmd_classify)


def _model_of_kind(models: ModelList, kind: str) -> ModelInfo | None:
    return next((m for m in models.models if m.kind == kind), None)


def _progress(bar: tqdm[Any]) -> JobCallback:
    """A job callback that shows the job's status on `bar`."""

    def show(job: JobStatus) -> None:
        bar.set_postfix_str(f"{job.status}, attempt {job.attempts}")
        bar.update(0)

    return show


async def _run_job(args: argparse.Namespace, kind: str, what: str, inputs: list[Path]) -> int:
    """Queue a job of `kind` on `inputs`, show its progress and save its PNG to `--out`."""
    import httpx
    from tqdm import tqdm

    from service.client import JobTimeoutError, ServiceError

    async with _client(args) as client:
        try:
            if _model_of_kind(await client.models(), kind) is None:
                return _fail(f"this gateway's model store has no {what} model (kind {kind!r})", 2)
            with tqdm(desc=what, bar_format="{desc}: {elapsed} {postfix}", file=sys.stderr) as bar:
                if kind == "transfer":
                    png = await client.transfer(
                        *inputs,
                        face_index=args.face_index,
                        expression_index=args.expression_index,
                        timeout=args.timeout,
                        on_update=_progress(bar),
                    )
                else:
                    png = await client.frontalize(
                        *inputs,
                        face_index=args.face_index,
                        timeout=args.timeout,
                        on_update=_progress(bar),
                    )
        except (ServiceError, JobTimeoutError, httpx.HTTPError, OSError) as exc:
            return _fail(str(exc))
    args.out.write_bytes(png)
    print(f"{args.out}: {what} of {', '.join(map(str, inputs))}", file=sys.stderr)
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    """Put the expression of one photo's face on another's; save the PNG."""
    return asyncio.run(
        _run_job(args, "transfer", "expression transfer", [args.face, args.expression])
    )


def add_transfer(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "transfer",
        help="the face of FACE wearing the expression of EXPRESSION (a PNG)",
        description="Queue an expression transfer (POST /transfer, the tdgan model), wait "
        "for it and save the generated face.",
    )
    p.add_argument("face", type=Path, metavar="FACE", help="the photo whose person is kept")
    p.add_argument(
        "expression", type=Path, metavar="EXPRESSION", help="the photo whose expression is taken"
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--face-index", type=int, default=0, help="which face of FACE (0 = largest)")
    p.add_argument(
        "--expression-index", type=int, default=0, help="which face of EXPRESSION (0 = largest)"
    )
    _add_client_options(p)
    p.set_defaults(func=cmd_transfer)


def cmd_frontalize(args: argparse.Namespace) -> int:
    """The frontal view of a photo's face; save the PNG."""
    return asyncio.run(_run_job(args, "frontalizer", "frontalization", [args.photo]))


def add_frontalize(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "frontalize",
        help="the frontal view of a face (a PNG), once a frontalizer model exists",
        description="Queue a frontalization (POST /frontalize), wait for it and save the "
        "frontal face. Needs a model of kind `frontalizer` in the model store; without one "
        "it says so and exits with status 2.",
    )
    p.add_argument("photo", type=Path, metavar="PHOTO")
    p.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--face-index", type=int, default=0, help="which face (0 = the largest)")
    _add_client_options(p)
    p.set_defaults(func=cmd_frontalize)


async def _video(args: argparse.Namespace) -> int:
    import httpx
    from tqdm import tqdm

    from service.client import JobTimeoutError, ServiceError
    from service.timeline import timeline_png

    async with _client(args) as client:
        try:
            with tqdm(desc="video", unit="frame", file=sys.stderr) as bar:

                def show(job: JobStatus) -> None:
                    if job.progress is not None:
                        bar.total = job.progress.total
                        bar.n = job.progress.done
                    bar.set_postfix_str(job.status)
                    bar.refresh()

                answer = await client.classify_video(
                    args.clip,
                    fps=args.fps,
                    model=args.model,
                    max_faces=args.max_faces,
                    timeout=args.timeout,
                    on_update=show,
                )
        except (ServiceError, JobTimeoutError, httpx.HTTPError, OSError) as exc:
            return _fail(str(exc))
    if args.json:
        print(answer.model_dump_json(indent=2))
    else:
        info = answer.video
        print(
            f"{args.clip}: {info.width}x{info.height}, {info.duration or 0:.1f} s, "
            f"{len(answer.frames)} frames sampled at {answer.fps:g}/s, "
            f"{len(answer.tracks)} track(s); labels by {answer.label_source}"
        )
        for track in answer.tracks:
            score = track.probabilities[track.expression]
            print(
                f"  track {track.id:2d}  {track.start:6.1f}-{track.end:6.1f} s  "
                f"{len(track.frames):4d} frames  {track.expression} {score:.2f}"
            )
    if args.timeline:
        args.timeline.write_bytes(timeline_png(answer))
        print(f"{args.timeline}: the timeline of each track", file=sys.stderr)
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    """The face tracks of a clip and their expressions; optionally their timeline."""
    return asyncio.run(_video(args))


def add_video(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "video",
        help="every face of a clip followed over time, with its expressions",
        description="Queue a clip (POST /classify/video), show its progress, and print "
        "each face track with its label (or with --json the API's answer); --timeline "
        "draws each track's expressions over time as a PNG.",
    )
    p.add_argument("clip", type=Path, metavar="CLIP", help="an MP4, MOV, WebM or AVI file")
    p.add_argument("--fps", type=float, default=5.0, help="frames sampled per second")
    p.add_argument("--model", help="the frame classifier (default: the gateway's default)")
    p.add_argument("--max-faces", type=int, default=5, help="faces followed per frame")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    p.add_argument("--timeline", type=Path, metavar="OUT", help="write the timeline PNG here")
    _add_client_options(p)
    p.set_defaults(func=cmd_video, timeout=600.0)
