"""Screenshots of the shipped workflows as ComfyUI shows them (README pictures and template thumbnails).

Needs a running ComfyUI with this pack, Chromium (Debian `chromium`) and `pip install playwright`
(no browser download: the system Chromium is used):

    python tools/screenshot_workflows.py http://127.0.0.1:8188      # writes workflows/<name>.jpg

Each picture is cropped to the bounding box of the workflow's nodes (plus a small margin), so a thumbnail shows
the graph and not ComfyUI's menus or empty canvas.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
MARGIN = 24  # screen pixels kept around the nodes
# The nodes' bounding box on the screen: [left, top, right, bottom] in CSS pixels (title bars included).
NODES_BOX_JS = """() => {
  const canvas = window.app.canvas, ds = canvas.ds, title = LiteGraph.NODE_TITLE_HEIGHT;
  const rect = canvas.canvas.getBoundingClientRect();
  let box = [Infinity, Infinity, -Infinity, -Infinity];
  for (const node of window.app.graph._nodes) {
    const [x, y] = node.pos, [w, h] = node.size;
    box = [Math.min(box[0], x), Math.min(box[1], y - title), Math.max(box[2], x + w), Math.max(box[3], y + h)];
  }
  const screen = (gx, gy) => [(gx + ds.offset[0]) * ds.scale + rect.left, (gy + ds.offset[1]) * ds.scale + rect.top];
  return [...screen(box[0], box[1]), ...screen(box[2], box[3])];
}"""


def open_comfyui(playwright, url: str):
    """A page with ComfyUI's frontend loaded and its start-up dialogs closed."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(
        viewport={"width": 2560, "height": 1440}
    )  # fit-to-view stays above LiteGraph's low-detail zoom
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("window.app && window.app.graph", timeout=60000)
    time.sleep(1.5)
    page.keyboard.press("Escape")
    return browser, page


def use_view(page, vue: bool) -> None:
    """Switch the frontend between the classic canvas and the Vue "Nodes 2.0" view (a setting of this ComfyUI's
    user; start ComfyUI with its own --user-directory to keep yours as it is)."""
    flag = "true" if vue else "false"
    page.evaluate(f"async () => {{ await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', {flag}); }}")
    time.sleep(0.5)


def show(page, workflow: dict) -> None:
    """Load a UI workflow and fit it to the view."""
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    time.sleep(0.5)
    page.mouse.click(2400, 1380)
    page.keyboard.press(".")  # fit view
    time.sleep(0.8)


def graph_clip(page) -> dict:
    """The screenshot area that holds every node (with MARGIN), inside the viewport."""
    left, top, right, bottom = page.evaluate(NODES_BOX_JS)
    view = page.viewport_size
    x0, y0 = max(0, left - MARGIN), max(0, top - MARGIN)
    x1, y1 = min(view["width"], right + MARGIN), min(view["height"], bottom + MARGIN)
    return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}


def save_jpeg(png: bytes, path: Path, width: int = 1400) -> None:
    """A JPEG at most `width` pixels wide."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.save(path, quality=82, optimize=True)


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    url = argv[0] if argv else "http://127.0.0.1:8188"
    with sync_playwright() as p:
        browser, page = open_comfyui(p, url)
        use_view(page, False)  # thumbnails show the classic canvas
        for path in sorted((ROOT / "workflows").glob("*.json")):
            show(page, json.loads(path.read_text()))
            save_jpeg(page.screenshot(clip=graph_clip(page)), path.with_suffix(".jpg"))
            print(path.with_suffix(".jpg").relative_to(ROOT))
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
