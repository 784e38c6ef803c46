"""QR codes of tracking links, drawn by segno (pure Python, no image library)."""

from __future__ import annotations

import io
from typing import Final

import segno

CONTENT_TYPES: Final = {"svg": "image/svg+xml", "png": "image/png"}
MIN_SCALE, MAX_SCALE, DEFAULT_SCALE = 1, 40, 8
"""Pixels (SVG: user units) per module; a tracking link is a code of about 45 modules, quiet zone included."""

# M restores up to 15% of a damaged code: enough for a scuffed poster, where L (7%) may not be,
# and the codes stay smaller than with Q or H. segno raises it when that fits in the same size.
_ERROR_CORRECTION = "m"


def qr_code(link: str, kind: str, scale: int) -> bytes:
    """``link`` as a QR code (never a Micro QR, which few phone cameras read), dark on white."""
    code = segno.make_qr(link, error=_ERROR_CORRECTION)
    out = io.BytesIO()
    # White, not transparent: a code on a dark page or print must still show its light modules.
    code.save(out, kind=kind, scale=scale, dark="black", light="white")
    return out.getvalue()
