"""A video job's result as a picture: one panel per face track, its expression
probabilities over the clip's time as lines, drawn with Pillow (the gateway does not
depend on matplotlib).

Each panel spans the whole clip: the frames the track is in carry a line per class (the
frame classifier's probabilities), the track's label and where it came from are written
above it, and a strip under the plot marks the sampled frames that had no face at all.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from service.video_schemas import Track, VideoAnalysis

#: A colour per FER2013 class (other class names cycle through the palette).
COLOURS = {
    "angry": (214, 39, 40),
    "disgust": (140, 86, 75),
    "fear": (148, 103, 189),
    "happy": (255, 160, 14),
    "sad": (31, 119, 180),
    "surprise": (44, 160, 44),
    "neutral": (127, 127, 127),
}
_PALETTE = list(COLOURS.values())

WIDTH, PANEL, MARGIN, LEFT, LEGEND = 900, 150, 12, 46, 28


def _colour(name: str, i: int) -> tuple[int, int, int]:
    return COLOURS.get(name, _PALETTE[i % len(_PALETTE)])


def _classes(analysis: VideoAnalysis) -> list[str]:
    for track in analysis.tracks:
        if track.frames:
            return list(track.frames[0].probabilities)
    return list(COLOURS)


def _panel(
    draw: ImageDraw.ImageDraw,
    top: int,
    track: Track,
    classes: list[str],
    span: float,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    plot_top, plot_bottom = top + 18, top + PANEL - 22
    x0, x1 = LEFT, WIDTH - MARGIN
    score = track.probabilities[track.expression]
    title = (
        f"track {track.id}: {track.expression} {score:.2f} ({track.label_source}), "
        f"{track.start:.1f}-{track.end:.1f} s, {len(track.frames)} frames"
    )
    draw.text((x0, top + 2), title, fill=(0, 0, 0), font=font)
    draw.rectangle([x0, plot_top, x1, plot_bottom], outline=(160, 160, 160))
    middle = (plot_top + plot_bottom) / 2
    draw.line([x0, middle, x1, middle], fill=(225, 225, 225))
    draw.text((4, plot_top - 4), "1.0", fill=(90, 90, 90), font=font)
    draw.text((4, plot_bottom - 8), "0.0", fill=(90, 90, 90), font=font)

    def x(t: float) -> float:
        return x0 + (x1 - x0) * (t / span if span > 0 else 0.0)

    def y(p: float) -> float:
        return plot_bottom - p * (plot_bottom - plot_top)

    for i, name in enumerate(classes):
        colour = _colour(name, i)
        points = [(x(f.time), y(f.probabilities.get(name, 0.0))) for f in track.frames]
        # a gap in the track (the face missing for a while) breaks its lines
        runs: list[list[tuple[float, float]]] = [[]]
        for j, point in enumerate(points):
            if j and track.frames[j].frame - track.frames[j - 1].frame > 1:
                runs.append([])
            runs[-1].append(point)
        for run in runs:
            if len(run) > 1:
                draw.line(run, fill=colour, width=2)
            elif run:
                px, py = run[0]
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)


def draw_timeline(analysis: VideoAnalysis) -> Image.Image:
    """The timeline picture of `analysis` (see the module docstring)."""
    font = ImageFont.load_default()
    classes = _classes(analysis)
    span = max([f.time for f in analysis.frames] + [analysis.video.duration or 0.0, 1e-3])
    panels = max(1, len(analysis.tracks))
    height = LEGEND + panels * PANEL + 40
    image = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    x = LEFT
    for i, name in enumerate(classes):
        draw.rectangle([x, 9, x + 12, 19], fill=_colour(name, i))
        draw.text((x + 16, 8), name, fill=(0, 0, 0), font=font)
        x += 24 + int(draw.textlength(name, font=font))
    if not analysis.tracks:
        draw.text((LEFT, LEGEND + PANEL // 2), "no face in any sampled frame", fill=(0, 0, 0))
    for k, track in enumerate(analysis.tracks):
        _panel(draw, LEGEND + k * PANEL, track, classes, span, font)
    # the sampled frames without any face, on the shared time axis
    axis = LEGEND + panels * PANEL + 4
    x0, x1 = LEFT, WIDTH - MARGIN
    draw.line([x0, axis, x1, axis], fill=(120, 120, 120))
    for frame in analysis.frames:
        px = x0 + (x1 - x0) * frame.time / span
        colour = (200, 200, 200) if frame.tracks else (0, 0, 0)
        draw.line([px, axis + 2, px, axis + 9], fill=colour)
    draw.text((x0, axis + 14), "0 s", fill=(0, 0, 0), font=font)
    end = f"{span:.1f} s; black ticks: sampled frames without a face"
    draw.text((x1 - draw.textlength(end, font=font), axis + 14), end, fill=(0, 0, 0), font=font)
    return image


def timeline_png(analysis: VideoAnalysis) -> bytes:
    """`draw_timeline` as a PNG file."""
    buf = io.BytesIO()
    draw_timeline(analysis).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
