"""Write the shipped workflows (ComfyUI UI format) and their API-format twins from one spec each.

Widget order and socket types come from a ComfyUI `/object_info` dump, so both formats match the real node
definitions:

    curl -s localhost:8188/object_info > /tmp/object_info.json      # a ComfyUI with this pack loaded
    python tools/build_workflows.py /tmp/object_info.json            # rewrites workflows/*.json, workflows/api/*.json

Frontend-only nodes (MarkdownNote) exist only in the UI format. Inputs of a growing list (an Autogrow input such as
BatchImagesNode's `images`) are linked by their full name, `images.image0`, `images.image1`, ...
Nodes are spaced by tools/workflow_layout.py from the room tools/measure_workflows.py measured them to take in
both of ComfyUI's node views.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from workflow_layout import fit_layout
from workflow_specs import N, specs

ROOT = Path(__file__).resolve().parents[1]
FRONTEND_ONLY = {"MarkdownNote", "Note"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
AUTOGROW = "COMFY_AUTOGROW_V3"
PACK = {"cnr_id": "rewarddance", "ver": "0.1.0"}


def widget_names(info: dict) -> list[str]:
    """Inputs shown as widgets, in ComfyUI's order."""
    order = info.get("input_order", {})
    names = []
    for section in ("required", "optional"):
        for name in order.get(section, list(info["input"].get(section, {}))):
            spec = info["input"][section][name]
            kind = spec[0] if isinstance(spec[0], str) else "COMBO"
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if kind in WIDGET_TYPES and not opts.get("forceInput"):
                names.append(name)
    return names


def input_type(info: dict, name: str) -> str:
    """The socket type of an input; `group.item3` is an item of the Autogrow input `group`."""
    group, _, item = name.partition(".")
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(group if item else name)
        if spec is not None and item and spec[0] == AUTOGROW:
            return autogrow_item_type(info, spec[1]["template"], item)
        if spec is not None and not item:
            return spec[0] if isinstance(spec[0], str) else "COMBO"
    raise KeyError(f"{info['name']} has no input {name!r}")


def autogrow_item_type(info: dict, template: dict, item: str) -> str:
    """The type of item `item` (e.g. image2) of an Autogrow input's template (prefix + number, or listed names)."""
    prefix, names = template.get("prefix"), template.get("names")
    number = item[len(prefix) :] if prefix and item.startswith(prefix) else ""
    if not ((number.isdigit() and int(number) < template.get("max", 100)) or (names and item in names)):
        raise KeyError(f"{info['name']} has no input item {item!r}")
    (spec,) = [s for section in template["input"].values() for s in section.values()]
    return spec[0]


def has_control(info: dict, name: str) -> bool:
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is not None and len(spec) > 1 and isinstance(spec[1], dict):
            return bool(spec[1].get("control_after_generate"))
    return False


def wire(nodes: list[N], objects: dict) -> tuple[list[list], dict[tuple[int, int], list[int]]]:
    """The links ([id, from node, slot, to node, to input index, type, input name]) and each output's link ids."""
    links: list[list] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    for node in nodes:
        for input_name, (src, slot) in node.links.items():
            link_id = len(links) + 1
            src_type = objects[next(n.type for n in nodes if n.id == src)]["output"][slot]
            links.append([link_id, src, slot, node.id, None, src_type, input_name])
            out_links.setdefault((src, slot), []).append(link_id)
    return links, out_links


def ui_entry(node: N, order: int, inputs: list, outputs: list, properties: dict, values: list) -> dict:
    """One node in the UI format."""
    entry = {
        "id": node.id,
        "type": node.type,
        "pos": list(node.pos),
        "size": list(node.size),
        "flags": {},
        "order": order,
        "mode": 0,
        "inputs": inputs,
        "outputs": outputs,
        "properties": properties,
        "widgets_values": values,
    }
    if node.title:
        entry["title"] = node.title
    return entry


def ui_node(name: str, node: N, order: int, info: dict, links: list[list], out_links: dict) -> dict:
    """A backend node in the UI format: linked inputs, widget values (with control widgets), outputs."""
    widgets = widget_names(info)
    unknown = set(node.widgets) - set(widgets)
    if unknown:
        raise ValueError(f"{name}: {node.type} has no widget(s) {sorted(unknown)}")
    inputs, values = [], []
    for link in links:
        if link[3] == node.id:
            link[4] = len(inputs)
            entry = {"name": link[6], "type": input_type(info, link[6]), "link": link[0]}
            if "." in link[6]:  # an Autogrow item: the frontend shows its own name (image0), not the full path
                entry["label"] = link[6].partition(".")[2]
            if link[6] in widgets:
                entry["widget"] = {"name": link[6]}
            inputs.append(entry)
    for w in widgets:
        values.append(node.widgets.get(w, default_value(info, w)))
        if has_control(info, w):
            values.append("fixed")
    outputs = [
        {
            "name": out_name,
            "type": out_type,
            "links": out_links.get((node.id, slot), []),
            **({"shape": 6} if info.get("output_is_list", [False] * 99)[slot] else {}),
        }
        for slot, (out_type, out_name) in enumerate(zip(info["output"], info["output_name"]))
    ]
    props: dict[str, Any] = {"Node name for S&R": node.type}
    if node.type.startswith("RewardDance"):
        props.update(PACK)
    if node.models:
        props["models"] = node.models
    return ui_entry(node, order, inputs, outputs, props, values)


def api_node(node: N, info: dict) -> dict:
    """A backend node in the API format: widget values and links by input name."""
    widgets = widget_names(info)
    inputs = {w: node.widgets.get(w, default_value(info, w)) for w in widgets if w not in node.links}
    inputs.update({k: [str(src), slot] for k, (src, slot) in node.links.items()})
    return {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title or info["display_name"]}}


def build(name: str, nodes: list[N], objects: dict) -> tuple[dict, dict]:
    """(UI workflow, API prompt) for one spec."""
    links, out_links = wire(nodes, objects)
    ui_nodes, api = [], {}
    for order, node in enumerate(nodes):
        if node.type in FRONTEND_ONLY:
            ui_nodes.append(ui_entry(node, order, [], [], {}, [node.text]))
            continue
        info = objects[node.type]
        ui_nodes.append(ui_node(name, node, order, info, links, out_links))
        api[str(node.id)] = api_node(node, info)
    ui = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "rewarddance/" + name)),
        "revision": 0,
        "last_node_id": max(n.id for n in nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": [link[:6] for link in links],
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }
    return ui, api


def default_value(info: dict, name: str) -> Any:
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is None:
            continue
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if "default" in opts:
            return opts["default"]
        options = spec[0] if isinstance(spec[0], list) else opts.get("options")
        if options is not None:
            return options[0] if options else ""
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0])
    raise KeyError(name)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    objects = json.loads(Path(argv[0]).read_text())
    for name, nodes in specs().items():
        ui, api = build(name, fit_layout(name, nodes), objects)
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n")
        print(f"workflows/{name}.json, workflows/api/{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
