"""Space a workflow spec's nodes so they overlap in neither of ComfyUI's node views, from the room each node
was measured to take (tools/node_extents.json, written by tools/measure_workflows.py).

The specs place nodes by hand in columns; a node is only ever moved down, below the nodes above it in its
column, and the note is sized to its measured text and put above the graph. Extents are [width, height] in
graph units with the title bar included."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from workflow_nodes import N, note_height

EXTENTS = Path(__file__).resolve().parent / "node_extents.json"
TITLE = 30  # LiteGraph.NODE_TITLE_HEIGHT: a node's title bar is drawn above its pos
GAP = 30  # free space between two nodes, in graph units


def measured_extents(name: str) -> dict[int, tuple[int, int]]:
    """Node id -> measured [width, height] for the workflow `name` (empty when it was never measured)."""
    if not EXTENTS.is_file():
        return {}
    return {int(i): tuple(e) for i, e in json.loads(EXTENTS.read_text()).get(name, {}).items()}


def extent(node: N, measured: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """The room `node` takes: its spec size (plus title) or what was measured, whichever is larger."""
    width, height = node.size[0], node.size[1] + TITLE
    if node.type == "MarkdownNote" and node.text is not None:
        height = max(height, note_height(node.text, width) + TITLE)
    seen = measured.get(node.id, (0, 0))
    return max(width, seen[0]), max(height, seen[1])


def overlaps_horizontally(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two [left, right) intervals share more than an edge."""
    return min(a[1], b[1]) - max(a[0], b[0]) > 0


def fit_layout(name: str, nodes: list[N]) -> list[N]:
    """The spec's nodes moved (down only) so no two overlap with their measured extents; the note above the graph."""
    measured = measured_extents(name)
    notes = [n for n in nodes if n.type == "MarkdownNote"]
    graph = sorted((n for n in nodes if n.type != "MarkdownNote"), key=lambda n: (n.pos[1], n.pos[0]))
    placed: dict[int, N] = {}
    for node in graph:
        width, _ = extent(node, measured)
        y = node.pos[1]
        for above in placed.values():
            above_width, above_height = extent(above, measured)
            columns = (node.pos[0], node.pos[0] + width), (above.pos[0], above.pos[0] + above_width)
            if overlaps_horizontally(*columns):
                y = max(y, above.pos[1] + above_height + GAP)
        placed[node.id] = dataclasses.replace(node, pos=(node.pos[0], y))
    top = min((n.pos[1] - TITLE for n in placed.values()), default=0)
    for note in notes:  # as wide as the spec says (a measured width would feed back), as tall as its text needs
        _, height = extent(note, measured)
        placed[note.id] = dataclasses.replace(
            note, pos=(note.pos[0], top - GAP - height + TITLE), size=(note.size[0], height - TITLE)
        )
    return [placed[n.id] for n in nodes]
