"""Small line charts drawn with Pillow (training curves as PNG files and ComfyUI IMAGE previews)."""

from __future__ import annotations

import math
from typing import Any

COLOURS = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (23, 190, 207),
    (140, 86, 75),
    (227, 119, 194),
]
Series = dict[str, list[tuple[float, float]]]  # label -> [(x, y)]


def line_panels(panels: list[tuple], width: int = 720, panel_height: int = 180) -> Any:
    """A PIL image with one panel per (title, series) or (title, series, x-axis name); each panel scales to its
    own finite values; the legend wraps onto as many rows as it needs."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, panel_height * max(1, len(panels))), "white")
    draw = ImageDraw.Draw(img)
    pad, top_pad = 48, 22
    for k, (title, series, *x_name) in enumerate(panels):
        x_label = x_name[0] if x_name else "step"
        y0 = k * panel_height
        points = {name: [(x, y) for x, y in pts if math.isfinite(y)] for name, pts in series.items()}
        values = [y for pts in points.values() for _, y in pts]
        xs = [x for pts in points.values() for x, _ in pts]
        box = (pad, y0 + top_pad, width - pad // 2, y0 + panel_height - 20)
        draw.rectangle(box, outline="black")
        draw.text((pad, y0 + 4), title, fill="black")
        if not values:
            draw.text((pad + 8, y0 + top_pad + 8), "no data", fill="gray")
            continue
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1e-9
        x_lo, x_hi = min(xs), max(xs)
        x_hi = x_hi if x_hi > x_lo else x_lo + 1

        def xy(x: float, y: float, box=box, lo=lo, hi=hi, x_lo=x_lo, x_hi=x_hi) -> tuple[float, float]:
            return (
                box[0] + (box[2] - box[0]) * (x - x_lo) / (x_hi - x_lo),
                box[3] - (box[3] - box[1]) * (y - lo) / (hi - lo),
            )

        legend_x, legend_y = pad + 8 + draw.textlength(title) + 12, y0 + 4
        for c, (name, pts) in enumerate(points.items()):
            colour = COLOURS[c % len(COLOURS)]
            if len(pts) > 1:
                draw.line([xy(x, y) for x, y in pts], fill=colour, width=2)
            elif pts:
                cx, cy = xy(*pts[0])
                draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=colour)
            label = f"{name} (last {pts[-1][1]:.4g})" if pts else name
            if legend_x + draw.textlength(label) > width - 4:  # wrap into the plot's top-left corner
                legend_x, legend_y = box[0] + 6, (legend_y + 12 if legend_y > y0 + 4 else box[1] + 4)
            draw.text((legend_x, legend_y), label, fill=colour)
            legend_x += draw.textlength(label) + 12
        draw.text((4, box[1]), f"{hi:.3g}", fill="gray")
        draw.text((4, box[3] - 10), f"{lo:.3g}", fill="gray")
        draw.text((box[0], box[3] + 4), f"{x_label} {x_lo:.3g}", fill="gray")
        draw.text((box[2] - 60, box[3] + 4), f"{x_hi:.3g}", fill="gray")
    return img
