"""Measure how much room each node of the shipped workflows takes in ComfyUI's two node views, so that
tools/build_workflows.py lays them out without overlaps in both.

Needs a running ComfyUI with this pack, Chromium and playwright (like tools/screenshot_workflows.py):

    python tools/measure_workflows.py http://127.0.0.1:8188     # writes tools/node_extents.json
    python tools/build_workflows.py /tmp/object_info.json       # then rebuild the workflows with the new extents

The classic canvas draws a node at its saved size (at least what its widgets need); the Vue "Nodes 2.0" view
scales a classic layout by its layout scale (1.2, positions and sizes) and then grows each node to its content
(bigger widgets, rendered markdown), so a note or a node with many widgets can reach into the next one. Extents
are [width, height] in the classic canvas's graph units with the title bar included: a Vue extent is divided by
the layout scale, so it compares with the positions the specs use. Run it again after changing a note's text or a
node's widgets.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from screenshot_workflows import open_comfyui, show, use_view

ROOT = Path(__file__).resolve().parents[1]
EXTENTS = ROOT / "tools" / "node_extents.json"
VUE_LAYOUT_SCALE = 1.2  # the frontend's SCALE_FACTOR for showing a classic layout in the Vue view
STEP = 5  # extents are rounded up to this many graph units, so sub-pixel jitter does not rewrite the file
BORDER = 2  # graph units of a node's border and sub-pixel layout, not rounded up to another STEP
CLASSIC_JS = """() => window.app.graph._nodes.map(n => {
  const needed = n.computeSize(), title = LiteGraph.NODE_TITLE_HEIGHT;
  return [n.id, Math.max(n.size[0], needed[0]), Math.max(n.size[1], needed[1]) + title];
})"""
VUE_JS = """() => [...document.querySelectorAll('[data-node-id]')].map(e => {
  const r = e.getBoundingClientRect(), scale = window.app.canvas.ds.scale;
  return [Number(e.dataset.nodeId), r.width / scale, r.height / scale];
})"""


def measure(page, workflow: dict, vue: bool) -> dict[int, list[float]]:
    """Node id -> [width, height] as one view draws `workflow`, in classic graph units."""
    use_view(page, vue)
    show(page, workflow)
    time.sleep(1.0)  # the Vue view lays nodes out over a few frames
    if not vue:
        return {i: [w, h] for i, w, h in page.evaluate(CLASSIC_JS)}
    return {i: [w / VUE_LAYOUT_SCALE, h / VUE_LAYOUT_SCALE] for i, w, h in page.evaluate(VUE_JS)}


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    url = argv[0] if argv else "http://127.0.0.1:8188"
    extents: dict[str, dict[str, list[int]]] = {}
    with sync_playwright() as p:
        browser, page = open_comfyui(p, url)
        try:
            for path in sorted((ROOT / "workflows").glob("*.json")):
                workflow = json.loads(path.read_text())
                views = [measure(page, workflow, vue) for vue in (False, True)]
                extents[path.stem] = {
                    str(i): [STEP * math.ceil((max(v[i][k] for v in views if i in v) - BORDER) / STEP) for k in (0, 1)]
                    for i in views[0]
                }
                print(path.stem, extents[path.stem])
        finally:
            use_view(page, False)
            browser.close()
    EXTENTS.write_text(json.dumps(extents, indent=1, sort_keys=True) + "\n")
    print(EXTENTS.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
