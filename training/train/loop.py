"""The one training loop. Every method (classifiers, DeRL stage 1, identity, TDGAN) plugs in.

A method (a `Method` subclass, one module per method, like pix2pix's `*_model.py`) owns its
networks, optimisers, data and one training step. The loop owns everything else, the same
for all of them:

- the device (`auto|cpu|cuda`) and the precision (bfloat16 autocast on CUDA and on CPUs
  that compute bfloat16 natively, float32 elsewhere), both in a `Context` that the method
  is built with, so its data sits on the device and is augmented there;
- the one random generator (on the device) that every draw of the method comes from;
- epochs of `steps_per_epoch` steps counted over the whole run, so a run can stop and
  resume anywhere, mid-epoch included;
- losses kept on the device and averaged there: the host waits for the device only when a
  history row is written (every `log_every` steps and at each epoch's end), never per step;
- progress, `history.json`, `last.pt` (everything needed to continue exactly: networks,
  optimisers, random states, the position in the epoch, the running sums), `best.pt` on a
  better validation accuracy, and the method's PNG reports;
- the time budget: with `time_budget` the run stops *before* it, from measured step, save
  and evaluation times, with a resumable `last.pt` and `export.pt` (the servable weights in
  float16 with their metadata: what `fer-train export` turns into a `.mar`). A run resumed
  from that checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from training.train import checkpoint, precision

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
COMPILE_MODES: tuple[str, ...] = ("none", "default", "reduce-overhead", "max-autotune")

#: The servable part of a method's state: what `export.pt` keeps (weights in float16).
EXPORT = "export.pt"
SERVABLE_KEYS = ("model", "metadata", "parameters", "generator", "net_kwargs", "subjects")


@dataclass
class RunOptions:
    """How a run is executed, as opposed to what it learns (the method's config). They are
    the caller's on every resume, never taken from the checkpoint."""

    device: Device = "auto"
    precision: Precision = "auto"
    threads: int = 0  # torch CPU threads (0: torch's default)
    time_budget: float = 0.0  # seconds; >0: stop cleanly before it, resumable
    # When the budget started (time.monotonic()): the command's start, so loading data
    # counts too; None: when `fit` starts.
    started: float | None = None
    max_steps: int = 0  # >0: stop this invocation after that many steps (smoke runs)
    compile: str = "none"  # torch.compile mode for the networks (see COMPILE_MODES)
    log_every: int = 0  # steps per history row (0: one row per epoch)
    save_every: int = 0  # steps between checkpoints (0: at epoch ends and when stopping)
    export: bool = True  # write `export.pt` whenever the run stops or ends
    progress: bool = True


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when a GPU is present, else the CPU."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast_dtype(device: torch.device, wanted: str) -> torch.dtype | None:
    """bfloat16 where it is fast, else None (float32). `auto`: bfloat16 on CUDA GPUs that
    have it and on CPUs that compute it natively (elsewhere oneDNN emulates it and training
    is ~10x slower, see `precision.native_bf16`); `bf16` forces it, `fp32` turns it off."""
    if wanted not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {wanted!r}")
    if wanted == "fp32":
        return None
    if wanted == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if precision.native_bf16() else None


class Context:
    """What a method is built with: the device, the autocast precision, the random
    generator every draw comes from, and how to compile a network."""

    def __init__(self, opts: RunOptions, seed: int) -> None:
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.device = resolve_device(opts.device)
        self.amp = autocast_dtype(self.device, opts.precision)
        if self.device.type == "cuda":
            # cuDNN picks the fastest kernels for the fixed batch shapes; TF32 for what
            # runs in float32.
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(seed)  # network initialisation and the global (dropout) RNG
        self.gen = torch.Generator(self.device).manual_seed(seed)
        self.compile_mode = opts.compile
        if opts.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {opts.compile!r}")

    @property
    def fused(self) -> bool:
        """Fused optimiser kernels (one launch for all parameters) where they exist."""
        return self.device.type == "cuda"

    def autocast(self) -> AbstractContextManager[Any]:
        if self.amp is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def compile(self, *modules: nn.Module) -> None:
        """Compile the networks in place (their state_dict keys stay as they are)."""
        if self.compile_mode == "none":
            return
        mode = None if self.compile_mode == "default" else self.compile_mode
        for m in modules:
            m.compile(mode=mode)

    def rng_state(self) -> dict[str, torch.Tensor]:
        """Every random state a step draws from: the loop's generator and torch's global
        ones (dropout, the decoder's noise)."""
        state = {"gen": self.gen.get_state(), "cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["cpu"])
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)


class Method:
    """A training method, as the loop sees it. Subclasses set `name`, `epochs` and
    `steps_per_epoch` and implement `stateful` and `step`; the rest has
    defaults. Every random draw comes from `ctx.gen` (or torch's global RNG)."""

    name = "method"
    epochs: int
    steps_per_epoch: int
    #: `extra_state` keys a checkpoint must hold unchanged to be resumed by this run (e.g.
    #: the identities a discriminator's classes stand for).
    must_match: tuple[str, ...] = ()

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- what the loop checkpoints ---------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The run's definition as plain data (saved as `config`)."""
        return {}

    def stateful(self) -> dict[str, Any]:
        """What evolves, by checkpoint key: networks, optimisers and schedules (anything
        with `state_dict` and `load_state_dict`); the served network is `model`."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Plain data saved beside it for serving and the other tools (e.g. `metadata`,
        `parameters`)."""
        return {}

    def state(self) -> dict[str, Any]:
        """The checkpoint's payload: every `stateful` object's `state_dict` under its key,
        plus `extra_state`."""
        return {
            **{k: v.state_dict() for k, v in self.stateful().items()},
            **self.extra_state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Continue from `state()` as saved; refuses a checkpoint whose `must_match`
        entries differ from this run's."""
        mine = self.extra_state()
        for k in self.must_match:
            if state.get(k) != mine[k]:
                raise ValueError(f"the checkpoint's {k} differ from this run's data")
        for k, v in self.stateful().items():
            v.load_state_dict(state[k])

    def networks(self) -> list[nn.Module]:
        """The networks that learn (for train/eval mode)."""
        return []

    # -- what the loop calls ---------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        """Draw what the epoch needs (e.g. its order of samples) from `ctx.gen`."""

    def step(self, step: int, index: int) -> dict[str, torch.Tensor]:
        """One optimisation step: `step` counts over the run, `index` within the epoch.
        Returns detached 0-d tensors to average into the history (absent: not computed);
        never `.item()`, which would make the host wait for the device every step."""
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> dict[str, Any] | None:
        """Validation after epoch `epoch` (1-based): a summary whose `accuracy` selects
        `best.pt`, or None."""
        return None

    def row_extras(self) -> dict[str, float]:
        """Figures added to every history row (e.g. the learning rate)."""
        return {}

    def reports(self, out: Path, step: int, history: list[dict[str, Any]]) -> None:
        """PNG reports written with each checkpoint (curves, sample grids)."""

    def improved(self, out: Path, summary: dict[str, Any], epoch: int) -> None:
        """Called when `summary` is a new best (e.g. to draw its confusion matrix)."""


@dataclass
class _Clock:
    """Measured durations that decide whether the next unit of work fits the budget."""

    step: float = 0.0  # one training step (from the last measured window)
    save: float = 0.0  # one checkpoint with its reports
    end: float = 0.0  # one end-of-epoch evaluation (0: not measured yet)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def saved_config(out: Path, resume: bool) -> dict[str, Any] | None:
    """The configuration a resumed run continues with (`out/last.pt`'s), or None for a new
    run: a run's definition comes from its checkpoint, only its length from the caller."""
    last = out / checkpoint.LAST
    return checkpoint.load(last)["config"] if resume and last.exists() else None


def servable(state: dict[str, Any]) -> dict[str, Any]:
    """The servable part of a checkpoint: weights in float16, with what reads them."""
    out = {k: state[k] for k in SERVABLE_KEYS if k in state}
    out["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    for k in ("step", "epoch", "history", "best"):
        if k in state:
            out[k] = state[k]
    return out


def fit(method: Method, opts: RunOptions, out: Path, resume: bool = False) -> dict[str, Any]:
    """Train `method` into `out` (continuing from `out/last.pt` with `resume`) until its
    last epoch, `opts.max_steps` steps or the time budget. Returns the step reached, the
    total, why it stopped (`done`, `max_steps`, `time_budget`), the history and the best
    validation summary."""
    started = time.monotonic()
    budget_from = started if opts.started is None else opts.started
    deadline = budget_from + opts.time_budget if opts.time_budget > 0 else math.inf
    out.mkdir(parents=True, exist_ok=True)
    ctx = method.ctx
    per_epoch = method.steps_per_epoch
    total = method.epochs * per_epoch  # a resumed run's length is the caller's
    step, history, best = 0, [], {"accuracy": -1.0}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    window = [0, 0.0]  # steps and seconds since the last history row
    rng_epoch: dict[str, torch.Tensor] | None = None
    pending_end = False  # the last step of an epoch ran, its evaluation did not

    if resume and (out / checkpoint.LAST).exists():
        state = checkpoint.load(out / checkpoint.LAST)
        method.load(state)
        loop = state["loop"]
        step, history, best = int(state["step"]), state["history"], state["best"]
        sums = {k: v.to(ctx.device) for k, v in loop["sums"].items()}
        counts, window = dict(loop["counts"]), list(loop["window"])
        pending_end = bool(loop["pending_end"])
        rng_epoch = loop["rng_epoch"]
        if step % per_epoch or pending_end:
            # Mid-epoch: redraw the epoch's order from the state it was drawn from, then
            # carry on from the random state at the stop.
            assert rng_epoch is not None
            ctx.set_rng_state(rng_epoch)
            method.begin_epoch(step // per_epoch - (1 if pending_end else 0))
        ctx.set_rng_state(loop["rng"])
        log.info("resuming %s from step %d of %d", out, step, total)
    stop_at = min(total, step + opts.max_steps) if opts.max_steps else total

    clock = _Clock(save=0.2 + _tensor_bytes(method.state()) / 100e6)  # until measured
    margin = 1.0 + 0.02 * opts.time_budget

    def fits(seconds: float) -> bool:
        """Whether `seconds` of work, then a checkpoint and the export, end before the
        deadline (with a margin for what is not measured)."""
        return time.monotonic() + seconds + 2 * clock.save + margin < deadline

    def save(name: str = checkpoint.LAST) -> dict[str, Any]:
        t0 = time.monotonic()
        state = {
            **method.state(),
            "step": step,
            "epoch": step / per_epoch,
            "config": method.config(),
            "history": history,
            "best": best,
            "loop": {
                "sums": {k: v.detach().cpu() for k, v in sums.items()},
                "counts": counts,
                "window": window,
                "pending_end": pending_end,
                "rng_epoch": rng_epoch,
                "rng": ctx.rng_state(),
            },
        }
        checkpoint.save(state, out / name)
        if name == checkpoint.LAST:
            (out / "history.json").write_text(json.dumps(history, indent=1))
            method.reports(out, step, history)
            clock.save = max(clock.save, time.monotonic() - t0)
        return state

    def row() -> dict[str, Any]:
        """Average the window's losses into a history row: the one wait for the device."""
        t0 = time.monotonic()
        keys = sorted(sums)
        values = torch.stack([sums[k] for k in keys]).cpu().tolist() if keys else []
        window[1] += time.monotonic() - t0  # the device's lag behind the host belongs here
        r: dict[str, Any] = {"step": step, "epoch": step / per_epoch}
        r.update({k: v / counts[k] for k, v in zip(keys, values, strict=True)})
        r["seconds"] = window[1]
        r["seconds_per_step"] = window[1] / max(window[0], 1)
        r.update(method.row_extras())
        if window[0]:
            clock.step = r["seconds_per_step"]
        sums.clear()
        counts.clear()
        window[0], window[1] = 0, 0.0
        return r

    def print_row(r: dict[str, Any]) -> None:
        shown = {k: v for k, v in r.items() if k not in ("step", "epoch") and "seconds" not in k}
        text = " ".join(f"{k} {v:.4f}" for k, v in shown.items())
        msg = f"{method.name} step {r['step']}/{total} (epoch {r['epoch']:.2f}) {text}"
        if best.get("accuracy", -1) >= 0:
            msg += f" best {best['accuracy']:.4f}@{best.get('epoch')}"
        log.info(msg)
        if opts.progress:
            tqdm.write(msg)

    def end_of_epoch() -> None:
        nonlocal best, pending_end
        epoch = step // per_epoch
        r = row()
        t0 = time.monotonic()
        for net in method.networks():
            net.eval()
        summary = method.end_epoch(epoch)
        for net in method.networks():
            net.train()
        clock.end = time.monotonic() - t0
        if summary is not None:
            r["val_acc"] = summary["accuracy"]
        history.append(r)
        pending_end = False
        if summary is not None and summary["accuracy"] > best["accuracy"]:
            best = {**summary, "epoch": epoch, "step": step}
            method.improved(out, summary, epoch)
            save(checkpoint.BEST)
        print_row(r)

    stopped = "done"
    for net in method.networks():
        net.train()
    bar = tqdm(
        total=stop_at, initial=step, desc=method.name, disable=not opts.progress, leave=False
    )
    timed_first = clock.step == 0
    while True:
        if pending_end:
            # The end-of-epoch evaluation: its last measured time, or a conservative guess
            # (half an epoch's training) before it has ever run.
            if not fits((clock.end or 0.5 * clock.step * per_epoch) + clock.save):
                stopped = "time_budget"
                break
            end_of_epoch()
            save()
            continue
        if step >= stop_at:
            stopped = "done" if step >= total else "max_steps"
            break
        if not fits(clock.step):
            stopped = "time_budget"
            break
        index = step % per_epoch
        if index == 0:
            rng_epoch = ctx.rng_state()
            method.begin_epoch(step // per_epoch)
        t0 = time.monotonic()
        losses = method.step(step, index)
        for k, v in losses.items():
            sums[k] = sums[k] + v.detach() if k in sums else v.detach().float().clone()
            counts[k] = counts.get(k, 0) + 1
        if timed_first:  # the first step (warm-up, compilation) bounds the next ones
            _sync(ctx.device)
            clock.step, timed_first = time.monotonic() - t0, False
        step += 1
        window[0] += 1
        window[1] += time.monotonic() - t0
        bar.update()
        if step % per_epoch == 0:
            pending_end = True
            continue
        if opts.log_every and step % opts.log_every == 0:
            r = row()
            history.append(r)
            bar.set_postfix({k: f"{v:.3f}" for k, v in r.items() if k.startswith(("loss", "t"))})
        if opts.save_every and step % opts.save_every == 0:
            save()
    bar.close()

    state = save()
    if opts.export:
        source = state
        if best.get("accuracy", -1) >= 0 and (out / checkpoint.BEST).exists():
            source = checkpoint.load(out / checkpoint.BEST)
        checkpoint.save(servable(source), out / EXPORT)
    elapsed = time.monotonic() - budget_from
    if stopped == "time_budget":
        log.info("%s: stopped by the time budget at step %d (%.0f s)", method.name, step, elapsed)
        if opts.progress:
            tqdm.write(
                f"{method.name}: time budget reached at step {step}/{total} after "
                f"{elapsed:.0f} s; resume with --resume"
            )
    return {
        "step": step,
        "total_steps": total,
        "stopped": stopped,
        "seconds": elapsed,
        "history": history,
        "best": best,
    }
