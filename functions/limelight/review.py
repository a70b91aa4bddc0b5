"""The reviewer's contact sheet: one thumbnail per track of a plan, so decisions are checked by eye.

Each tile is the track's best sample as it is in the original (unblurred: only the reviewer sees
the sheet; a dark one brightened) with its id, decision, name and frame range; the border is green for "show", red for
"blur". The sheet is a PNG written atomically; it holds faces, so it is personal data: keep it
with the original, not with the published video.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from limelight.errors import OutputError
from limelight.formats import publish_bytes
from limelight.plan import SHOW, Plan
from limelight.video import EncodeOptions, decode, quarter_turns

__all__ = ["contact_sheet", "write_sheet"]

TILE = 160  # thumbnail side in pixels
LABEL = 54  # text lines under each thumbnail
COLUMNS = 6
_GREEN, _RED = (40, 170, 40), (200, 40, 40)  # RGB


def contact_sheet(src: Path, plan: Plan, options: EncodeOptions = EncodeOptions()) -> np.ndarray:
    """The sheet as RGB pixels; decodes `src` once and cuts each track's best sample from it."""
    wanted: dict[int, list] = {}
    for t in plan.tracks:
        best = t.evidence.get("best") or {"frame": t.first, "box": [float(v) for v in t.boxes[0]]}
        wanted.setdefault(int(best["frame"]), []).append((t, np.asarray(best["box"], np.float32)))
    turns = quarter_turns(int(plan.input.get("rotation", 0)))
    thumbs: dict[int, np.ndarray] = {}
    for frame in decode(src, options):
        for t, box in wanted.pop(frame.index, ()):
            thumbs[t.id] = _thumb(frame.rgb, box, turns)
        if not wanted:
            break
    count = max(len(plan.tracks), 1)
    cols = min(COLUMNS, count)
    rows = (count + cols - 1) // cols
    sheet = np.full((rows * (TILE + LABEL), cols * TILE, 3), 255, np.uint8)
    for k, t in enumerate(plan.tracks):
        y, x = (k // cols) * (TILE + LABEL), (k % cols) * TILE
        tile = thumbs.get(t.id, np.full((TILE, TILE, 3), 128, np.uint8))
        colour = _GREEN if t.decision == SHOW else _RED
        sheet[y:y + TILE, x:x + TILE] = tile
        cv2.rectangle(sheet, (x + 1, y + 1), (x + TILE - 2, y + TILE - 2), colour, 3)
        lines = [f"#{t.id} {t.decision.upper()}", (t.person or "-")[:22], f"frames {t.first}-{t.last}"]
        for n, text in enumerate(lines):
            cv2.putText(sheet, text, (x + 4, y + TILE + 15 + 16 * n), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                        colour if n == 0 else (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def _thumb(rgb: np.ndarray, box: np.ndarray, turns: int) -> np.ndarray:
    """The face with half a side of margin, upright, as a TILE x TILE square."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * 1.5
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    c, d = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    crop = rgb[b:max(d, b + 1), a:max(c, a + 1)]
    crop = np.rot90(crop, turns) if turns else crop
    ch, cw = crop.shape[:2]
    scale = TILE / max(ch, cw, 1)
    small = cv2.resize(np.ascontiguousarray(crop), (max(1, round(cw * scale)), max(1, round(ch * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top = float(np.percentile(small, 99))
    if 0 < top < 160:  # a dark scene: stretched so the reviewer sees the face (as the detector does)
        small = np.clip(small.astype(np.float32) * (230.0 / top), 0, 255).astype(np.uint8)
    tile = np.full((TILE, TILE, 3), 255, np.uint8)
    oy, ox = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    tile[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
    return tile


def write_sheet(path: Path, sheet: np.ndarray) -> Path:
    """Write the sheet as PNG atomically; OutputError names the file when it cannot be."""
    path = Path(path)
    ok, data = cv2.imencode(".png", sheet[..., ::-1])
    if not ok:
        raise OutputError(f"{path}: cannot encode the contact sheet")
    publish_bytes(path, data.tobytes(), "the contact sheet")
    return path
