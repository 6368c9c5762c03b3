"""Pydantic models at the gateway's boundaries: HTTP responses (the OpenAPI schema comes
from these) and the answers of model handlers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Base64Bytes, BaseModel, ConfigDict, Field

from service.archive import InputSpec

CLASSES_EXAMPLE: list[Any] = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
PROBABILITIES_EXAMPLE: dict[str, Any] = {
    "angry": 0.02,
    "disgust": 0.001,
    "fear": 0.019,
    "happy": 0.91,
    "sad": 0.01,
    "surprise": 0.02,
    "neutral": 0.02,
}


class Problem(BaseModel):
    """An error (RFC 9457 problem details), served as `application/problem+json`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="stable identifier of the kind of error (a URN)")
    title: str = Field(description="short summary of the kind of error")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request, for a human")
    instance: str | None = Field(None, description="the request path")


class Prediction(BaseModel):
    """One handler answer for one face crop (the TorchServe handler's JSON)."""

    probabilities: dict[str, float]
    label: str
    neutral: str | None = None  # DeRL only, on request: the de-expressed face, base64 PNG


class Point(BaseModel):
    """A point in image pixel coordinates (x to the right, y down)."""

    x: float
    y: float


class Box(BaseModel):
    """A face box in image pixel coordinates (top-left corner and size)."""

    x: float
    y: float
    width: float
    height: float


class Landmarks(BaseModel):
    """The 5 face landmarks; left and right as seen in the image (not the subject's)."""

    eye_left: Point
    eye_right: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


class Face(BaseModel):
    """One detected face and its expression."""

    box: Box
    landmarks: Landmarks
    score: float = Field(ge=0, le=1, description="face detection confidence")
    yaw: float = Field(
        ge=-90,
        le=90,
        description="head yaw in degrees estimated from the 5 landmarks (positive: the face "
        "turns towards the image's right), clamped to +-75",
    )
    frontalized: bool = Field(
        default=False,
        description="with `frontalize=true`: whether this face, turned by at least the "
        "threshold, was classified from its generated frontal view (always false otherwise)",
    )
    expression: str = Field(description="the most probable expression")
    probabilities: dict[str, float] = Field(
        description="probability of every expression class (they sum to 1)",
        examples=[PROBABILITIES_EXAMPLE],
    )
    neutral_face: str | None = Field(
        default=None,
        description="with `neutral=true` (DeRL): the generated neutral face of this person, "
        "a base64 PNG of the model's aligned crop",
    )


class ImageInfo(BaseModel):
    """The decoded image, after its EXIF orientation was applied."""

    width: int
    height: int
    format: str = Field(description="the container format Pillow read, e.g. JPEG or PNG")


class ModelRef(BaseModel):
    """The model that classified the faces."""

    name: str
    version: str


class ClassifyResponse(BaseModel):
    """Every face found in the image, largest first, with its expression."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image": {"width": 512, "height": 512, "format": "PNG"},
                    "model": {"name": "compact", "version": "1.0"},
                    "faces": [
                        {
                            "box": {"x": 178.2, "y": 57.4, "width": 95.1, "height": 119.8},
                            "landmarks": {
                                "eye_left": {"x": 204.8, "y": 100.8},
                                "eye_right": {"x": 247.4, "y": 103.4},
                                "nose": {"x": 223.6, "y": 129.2},
                                "mouth_left": {"x": 202.5, "y": 138.1},
                                "mouth_right": {"x": 244.2, "y": 140.6},
                            },
                            "score": 0.9993,
                            "yaw": -2.1,
                            "frontalized": False,
                            "expression": "happy",
                            "probabilities": PROBABILITIES_EXAMPLE,
                            "neutral_face": None,
                        }
                    ],
                    "frontalizer": None,
                },
                {
                    "image": {"width": 640, "height": 480, "format": "JPEG"},
                    "model": {"name": "compact", "version": "1.0"},
                    "faces": [
                        {
                            "box": {"x": 301.5, "y": 122.0, "width": 118.4, "height": 150.2},
                            "landmarks": {
                                "eye_left": {"x": 333.0, "y": 176.9},
                                "eye_right": {"x": 376.1, "y": 174.2},
                                "nose": {"x": 367.0, "y": 207.5},
                                "mouth_left": {"x": 335.2, "y": 235.6},
                                "mouth_right": {"x": 370.9, "y": 233.8},
                            },
                            "score": 0.9987,
                            "yaw": 37.3,
                            "frontalized": True,
                            "expression": "happy",
                            "probabilities": PROBABILITIES_EXAMPLE,
                            "neutral_face": None,
                        }
                    ],
                    "frontalizer": {"name": "frontalize", "version": "1.0"},
                },
            ]
        }
    )

    image: ImageInfo
    model: ModelRef
    faces: list[Face]
    frontalizer: ModelRef | None = Field(
        default=None,
        description="with `frontalize=true`: the model that generated the frontal views",
    )


class ModelInfo(BaseModel):
    """A model of the model store."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "compact",
                    "version": "1.0",
                    "kind": "classifier",
                    "classes": CLASSES_EXAMPLE,
                    "input": {
                        "size": 48,
                        "channels": 1,
                        "color": "gray",
                        "mean": 0.5,
                        "std": 0.25,
                        "framing": "fer2013",
                    },
                    "ready": True,
                    "default": True,
                }
            ]
        }
    )

    name: str
    version: str
    kind: Literal["classifier", "derl", "transfer", "frontalizer", "sequence"]
    classes: list[str]
    input: InputSpec = Field(description="the aligned face crop the model takes")
    ready: bool = Field(description="loaded and able to answer now")
    default: bool = Field(description="used by /classify when no model is named")


class ModelList(BaseModel):
    """The models of the model store."""

    default: str | None = Field(description="the default classifier (none if there is none)")
    models: list[ModelInfo]


class Health(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"] = "ok"


class Check(BaseModel):
    """One readiness check."""

    ok: bool
    detail: str


#: What /readyz says of the gateway as a whole.
ReadyState = Literal["ready", "degraded", "not-ready"]


class Readiness(BaseModel):
    """Readiness by capability: ready while /classify answers, with the capabilities that
    cannot answer named in `degraded`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "degraded",
                    "capabilities": {
                        "classify": {"ok": True, "detail": "default model 'compact': loaded"},
                        "jobs": {"ok": True, "detail": "in-process: 0 running, 0 waiting"},
                        "transfer": {
                            "ok": False,
                            "detail": "the model store has no 'tdgan' archive",
                        },
                        "frontalize": {
                            "ok": False,
                            "detail": "the model store has no 'frontalize' archive",
                        },
                    },
                    "degraded": ["frontalize", "transfer"],
                    "checks": {"model:compact": {"ok": True, "detail": "loaded"}},
                }
            ]
        }
    )

    status: ReadyState = Field(
        description="`ready`: every capability works; `degraded`: /classify works, the "
        "capabilities in `degraded` do not; `not-ready`: /classify cannot answer (503)"
    )
    capabilities: dict[str, Check] = Field(
        description="`classify`, `transfer`, `frontalize` and `jobs`: whether each works"
    )
    degraded: list[str] = Field(description="the capabilities that do not work now")
    checks: dict[str, Check] = Field(description="every model, and the job queue")


# -- queued jobs (/transfer, /jobs) ---------------------------------------------------------

#: The life of a job: queued -> running -> succeeded | failed (running -> queued again when
#: it waits for a retry, or when its worker died and the job is delivered again).
JobState = Literal["queued", "running", "succeeded", "failed"]

JOB_EXAMPLE: dict[str, Any] = {
    "id": "5f0c1a7e9b2d4c3e8a6f1b0d2c4e6a8b",
    "kind": "transfer",
    "status": "succeeded",
    "created_at": "2026-01-05T10:00:00.120000Z",
    "started_at": "2026-01-05T10:00:00.180000Z",
    "finished_at": "2026-01-05T10:00:00.410000Z",
    "expires_at": "2026-01-05T11:00:00.410000Z",
    "attempts": 1,
    "params": {"face_index": 0, "expression_index": 0},
    "error": None,
    "url": "/jobs/5f0c1a7e9b2d4c3e8a6f1b0d2c4e6a8b",
    "result_url": "/jobs/5f0c1a7e9b2d4c3e8a6f1b0d2c4e6a8b/result",
}


class Generation(BaseModel):
    """A handler's answer for an image-generating model (transfer, frontalization)."""

    model_config = ConfigDict(extra="allow")

    image: Base64Bytes = Field(description="the generated face, a PNG file (base64 in JSON)")
    probabilities: dict[str, float] | None = Field(
        default=None,
        description="tdgan: the expression probabilities its expression branch reads from "
        "the expression crop",
    )


class SourceFace(BaseModel):
    """The face of an uploaded image that a job used."""

    image: ImageInfo
    faces_found: int = Field(ge=0, description="faces detected in the image")
    index: int = Field(ge=0, description="which of them was used (0 = the largest)")
    box: Box
    landmarks: Landmarks
    score: float = Field(ge=0, le=1, description="face detection confidence")


class JobProgress(BaseModel):
    """How far a running job is (video jobs: sampled frames analysed so far)."""

    done: int = Field(ge=0)
    total: int | None = Field(description="what there is to do, when known in advance")
    unit: str = Field(default="frames", description="what `done` and `total` count")


class JobStatus(BaseModel):
    """A queued job: what it is, where it stands, and where its result will be."""

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})

    id: str
    kind: str = Field(description="what the job does, e.g. `transfer`")
    status: JobState
    created_at: datetime
    started_at: datetime | None = Field(description="when a worker last started it")
    finished_at: datetime | None
    expires_at: datetime = Field(
        description="when the job, its uploaded images and its result are deleted (a job "
        "that has not finished by then is dropped)"
    )
    attempts: int = Field(ge=0, description="how many times a worker started it")
    params: dict[str, Any] = Field(description="the job's parameters")
    error: Problem | None = Field(description="why it failed (status `failed` only)")
    progress: JobProgress | None = Field(
        default=None, description="how far it is, for jobs that report it (video)"
    )
    url: str = Field(
        description="this document: a path, or an absolute URL under FER_PUBLIC_URL when set"
    )
    result_url: str | None = Field(description="the result, once `succeeded` (like `url`)")


class ResultImage(BaseModel):
    """The image a job produced."""

    width: int
    height: int
    media_type: Literal["image/png"] = "image/png"
    url: str = Field(description="the PNG itself")


class JobResult(BaseModel):
    """The result of a finished job, as JSON: the image's address and how it was made."""

    id: str
    kind: str
    model: ModelRef
    image: ResultImage
    inputs: dict[str, SourceFace] = Field(
        description="the face used from each uploaded image, by form field"
    )
    created_at: datetime
    finished_at: datetime
