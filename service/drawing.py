"""Faces drawn on their photo: box, 5 landmarks and a label (`fer-service classify --draw`).

The colours of the expressions are the demo page's (service/web/app.js), so that a drawing
and the page read alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from service.schemas import Face

#: One colour per FER2013 class; any other class is drawn in `OTHER`.
COLOURS: dict[str, str] = {
    "angry": "#e6194b",
    "disgust": "#3cb44b",
    "fear": "#911eb4",
    "happy": "#ffd60a",
    "sad": "#4363d8",
    "surprise": "#f58231",
    "neutral": "#9a9a9a",
}
OTHER = "#00b8d9"


def label(face: Face) -> str:
    """A face's label: its expression and that expression's probability, e.g. `happy 93%`."""
    return f"{face.expression} {face.probabilities.get(face.expression, 0.0):.0%}"


def upright(image: Image.Image) -> Image.Image:
    """The image as the API reads it (EXIF orientation applied), in RGB."""
    return (ImageOps.exif_transpose(image) or image).convert("RGB")


def draw_faces(image: Image.Image, faces: Sequence[Face]) -> Image.Image:
    """A copy of the upright `image` with every face boxed, its landmarks dotted and its
    label written above the box (below it when there is no room above)."""
    out = upright(image)
    draw = ImageDraw.Draw(out)
    side = max(out.size)
    line = max(2, round(side / 300))
    font = ImageFont.load_default(size=max(12, round(side / 40)))
    for face in faces:
        colour = COLOURS.get(face.expression, OTHER)
        b = face.box
        draw.rectangle((b.x, b.y, b.x + b.width, b.y + b.height), outline=colour, width=line)
        r = line * 1.5
        for p in face.landmarks.model_dump().values():
            draw.ellipse((p["x"] - r, p["y"] - r, p["x"] + r, p["y"] + r), fill=colour)
        text = label(face)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 2 * line, bottom - top + 2 * line
        y = b.y - h if b.y - h >= 0 else min(b.y + b.height, out.height - h)
        draw.rectangle((b.x, y, b.x + w, y + h), fill=colour)
        draw.text((b.x + line - left, y + line - top), text, fill="black", font=font)
    return out
