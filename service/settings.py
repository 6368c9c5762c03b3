"""The gateway's one configuration object: environment variables with the prefix `FER_`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, RedisDsn, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository's model store, the default when FER_MODEL_STORE is not set.
DEFAULT_MODEL_STORE = Path(__file__).resolve().parent.parent / "model_store"


class Settings(BaseSettings):
    """Every setting of the gateway; each one is read from `FER_<NAME>` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="FER_", extra="ignore")

    backend: Literal["local", "torchserve", "oip"] = Field(
        default="local",
        description="where models run: `local` (in the gateway process, from the .mar "
        "files), `torchserve` (over HTTP) or `oip` (an Open Inference Protocol v2 server "
        "such as MLServer, Triton or KServe, at FER_OIP_URL)",
    )
    model_store: Path = Field(
        default=DEFAULT_MODEL_STORE,
        description="folder of the .mar archives (metadata in both modes)",
    )
    models: list[str] | None = Field(
        default=None,
        description="names of the archives to serve (JSON list); default: every .mar in the "
        "model store",
    )
    default_model: str | None = Field(
        default=None,
        description="model for /classify without `model=`; default: derl if present, else "
        "compact, else the first classifier",
    )
    torchserve_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8080"), description="TorchServe inference API"
    )
    torchserve_management_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8081"), description="TorchServe management API"
    )
    oip_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8080"),
        description="the OIP v2 server's REST API (FER_BACKEND=oip); its timeouts and "
        "connections are the FER_TORCHSERVE_* ones",
    )
    torchserve_timeout: float = Field(
        default=30.0, gt=0, description="seconds to wait for one TorchServe prediction"
    )
    torchserve_connect_timeout: float = Field(
        default=2.0, gt=0, description="seconds to wait for a connection to TorchServe"
    )
    torchserve_max_connections: int = Field(
        default=64, ge=1, description="connections the gateway keeps open to TorchServe"
    )
    retry_after: int = Field(
        default=5, ge=1, description="seconds put in Retry-After when a backend is unavailable"
    )
    max_upload_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="largest accepted image file, in bytes"
    )
    max_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="largest accepted image, in pixels (width x height, read from the "
        "header before decoding; larger ones get 413)",
    )
    max_faces: int = Field(
        default=50, ge=1, description="most faces classified per image (the largest are kept)"
    )
    frontalize_min_yaw: float = Field(
        default=20.0,
        ge=0,
        le=90,
        description="/classify?frontalize=true: faces whose estimated |yaw| is at least this "
        "many degrees are frontalized before they are classified (the request's "
        "`frontalize_min_yaw` overrides it)",
    )
    detector_score_threshold: float = Field(
        default=0.8, gt=0, lt=1, description="face detector confidence threshold"
    )
    detector_min_face: int = Field(
        default=48,
        ge=8,
        description="smallest face to find (box width in pixels of the image) unless a "
        "request asks for smaller (`/classify?min_face=`): images are shrunk for detection "
        "only as far as such a face stays detectable; 48 halves photos up to 1920 px (4x "
        "faster than 24-47, which detect at full size); `python -m bench.detector` measures "
        "recall and speed per value",
    )
    detector_max_side: int = Field(
        default=1920,
        ge=64,
        description="longest side the detector sees: larger images are shrunk further, "
        "which bounds the cost of large photos (their smallest faces may then be missed)",
    )
    decode_min_side: int = Field(
        default=1280,
        ge=64,
        description="JPEGs over twice this longer side are decoded at a reduced DCT scale "
        "that keeps at least this longer side (much faster for camera photos)",
    )
    detector_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime threads of a detection that runs alone (0: one per core); "
        "one that starts while another runs uses one thread",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="where the embedded backend runs the models: `auto` is the first GPU "
        "when torch sees one, else the CPU (TorchServe places its workers itself)",
    )
    model_runtime: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description="where the classifiers' networks run: `auto` is ONNX Runtime on the CPU "
        "when `onnx` and `onnxruntime` are installed (2-3x faster for a few faces), PyTorch "
        "on a GPU or otherwise; TorchServe's workers read the same variable",
    )
    model_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime threads of each classifier (0: one per core)",
    )
    torch_threads: int = Field(
        default=1,
        ge=0,
        description="PyTorch intra-op threads of the embedded backend's process (0: "
        "PyTorch's default, one per core). 1 by default: the classifiers run in ONNX "
        "Runtime with threads of their own, and idle PyTorch threads would spin on the "
        "cores the detector and ONNX Runtime use; what runs in PyTorch (generators of "
        "queued jobs, classifiers without ONNX Runtime) then uses one core",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # -- videos (/classify/video): service/video.py --------------------------------------------
    max_video_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="largest accepted video file, in bytes"
    )
    max_video_seconds: float = Field(
        default=300.0, gt=0, description="longest accepted video, in seconds"
    )
    max_video_pixels: int = Field(
        default=3840 * 2160,
        ge=1,
        description="largest accepted video frame, in pixels (width x height, from the "
        "container before decoding)",
    )
    video_max_fps: float = Field(
        default=30.0, gt=0, le=120, description="highest sampling rate `fps` a video job may ask"
    )
    video_batch: int = Field(
        default=16, ge=1, description="sampled frames whose faces are classified in one batch"
    )

    # -- abuse limits, auth, URLs (service/api/guard.py, service/api/uploads.py) ---------------
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys (JSON list); when set, every path but `open_paths` needs one, "
        "as `Authorization: Bearer <key>` or `X-API-Key: <key>`, and each key sees only its "
        "own jobs",
    )
    open_paths: list[str] = Field(
        default_factory=lambda: ["/healthz", "/readyz", "/metrics"],
        description="paths answered without an API key (exact paths)",
    )
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="requests per second allowed to each caller (API key, or client address "
        "without keys), with bursts of `rate_burst`; then 429 with Retry-After. Unset: no limit",
    )
    rate_burst: int = Field(default=20, ge=1, description="requests a caller may send at once")
    concurrency_limit: int | None = Field(
        default=None,
        ge=1,
        description="requests of one caller in progress at once; then 429. Unset: no limit",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins browsers may call the API from (JSON list; `*` for any); "
        "none: no CORS headers",
    )
    public_url: AnyHttpUrl | None = Field(
        default=None,
        description="the gateway's public base URL, for `Location` and job URLs; unset: "
        "those are relative (`/jobs/<id>`)",
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="seconds a client may take to send its whole request body (then 408)",
    )
    decode_budget_pixels: int | None = Field(
        default=None,
        ge=1,
        description="pixels of uploads being decoded and analysed at once, across requests "
        "(a request waits for room, up to `decode_wait`, then 503); default: twice max_pixels",
    )
    decode_wait: float = Field(
        default=10.0,
        gt=0,
        description="seconds a request waits for room in the decode budget (then 503)",
    )

    # -- jobs (/transfer, /frontalize): service/jobs/ -----------------------------------------
    jobs: Literal["local", "celery"] = Field(
        default="local",
        description="where queued jobs run: `local` (a bounded pool in the gateway process) "
        "or `celery` (worker processes, Redis broker and results)",
    )
    redis_url: RedisDsn = Field(
        default=RedisDsn("redis://127.0.0.1:6379/0"),
        description="Redis of the job queue (broker, job records, inputs and results)",
    )
    redis_prefix: str = Field(
        default="fer:", description="prefix of every Redis key fer-service writes"
    )
    redis_timeout: float = Field(
        default=0.5,
        gt=0,
        description="seconds to wait for Redis (connect, each command, a whole job call)",
    )
    job_ttl: int = Field(
        default=3600,
        ge=1,
        description="seconds a job is kept: its uploaded images until it finishes (then they "
        "are deleted), its status and result from when it finishes",
    )
    job_timeout: float = Field(
        default=120.0, gt=0, description="seconds one run of a job may take (then it fails)"
    )
    job_retries: int = Field(
        default=3,
        ge=0,
        description="retries of a job whose inference backend is unavailable, not ready or "
        "timed out",
    )
    job_retry_backoff: float = Field(
        default=2.0,
        gt=0,
        description="seconds before the first retry; doubled for each further one (at most 60 s)",
    )
    job_visibility_timeout: int = Field(
        default=600,
        ge=1,
        description="seconds after which a job taken by a worker that died is delivered "
        "again; must exceed the longest job (job_timeout plus the longest retry delay)",
    )
    job_queue_size: int = Field(
        default=64, ge=1, description="local jobs: most jobs queued or running at once"
    )
    job_workers: int = Field(
        default=1, ge=1, description="local jobs: jobs run at the same time in the gateway"
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Celery workers: serve Prometheus metrics (job durations and outcomes) "
        "on this port, plus the pool process' index; unset: none",
    )

    @model_validator(mode="after")
    def _visibility_outlasts_jobs(self) -> Settings:
        longest = self.job_timeout + self.retry_delay(self.job_retries)
        if self.job_visibility_timeout <= longest:
            raise ValueError(
                f"job_visibility_timeout ({self.job_visibility_timeout} s) must exceed the "
                f"longest job: job_timeout + the longest retry delay = {longest:g} s"
            )
        return self

    @model_validator(mode="after")
    def _budget_holds_an_image(self) -> Settings:
        if self.decode_budget_pixels is not None and self.decode_budget_pixels < self.max_pixels:
            raise ValueError(
                f"decode_budget_pixels ({self.decode_budget_pixels}) must hold one image of "
                f"max_pixels ({self.max_pixels})"
            )
        return self

    @property
    def decode_budget(self) -> int:
        """Pixels of uploads in flight at once (`decode_budget_pixels`, or 2 x max_pixels)."""
        return self.decode_budget_pixels or 2 * self.max_pixels

    def retry_delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 = the first) of a job."""
        if retry <= 0:
            return 0.0
        return float(min(60.0, self.job_retry_backoff * 2 ** (retry - 1)))
