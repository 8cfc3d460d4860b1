"""Against a real ComfyUI (skipped unless COMFYUI_PATH is set; see ../shared/notes/comfyui.md to build one).

Starts ComfyUI on the CPU with this pack (through an extra-model-paths config) and a tiny reward model in
models/reward_models, then checks /object_info, the shipped workflows and their API twins, real runs of the
no-checkpoint twins (scores equal `rewarddance score`), the remote-backend twin, the web extension and that
"Unload models" releases the reward model.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import random_image

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH (and COMFYUI_PYTHON) to run against ComfyUI")
REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-RewardDance"
FRONTEND_ONLY = {"MarkdownNote", "Note"}
MODEL_FILE_INPUTS = {"ckpt_name", "unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "model"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body=None, method: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method=method or ("POST" if body is not None else "GET"),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if "json" in resp.headers.get("Content-Type", "") else raw.decode())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, tiny_dirs):
    """A running ComfyUI with the pack, a tiny reward model 'tiny-qwen' and test images in its input folder."""
    root = tmp_path_factory.mktemp("comfy")
    (root / "custom_nodes").mkdir()
    (root / "custom_nodes" / PACK_NAME).symlink_to(REPO)
    shutil.copytree(tiny_dirs["qwen2_5_vl"], root / "models" / "reward_models" / "tiny-qwen")
    inputs = root / "input"
    inputs.mkdir()
    for i in range(3):
        random_image(96, 128, seed=60 + i).save(inputs / f"cand_{i}.png")
    random_image(96, 128, seed=59).save(inputs / "example.png")
    user = root / "user"  # settings the tests change (e.g. the Vue node view) stay in this ComfyUI
    user.mkdir()
    config = root / "extra_paths.yaml"
    config.write_text(
        f"rewarddance_test:\n  base_path: {root}\n  custom_nodes: custom_nodes\n  reward_models: models/reward_models\n"
    )
    port = free_port()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    log = open(root / "comfyui.log", "w")
    proc = subprocess.Popen(
        [
            python,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--extra-model-paths-config",
            str(config),
            "--input-directory",
            str(inputs),
            "--output-directory",
            str(root / "output"),
            "--temp-directory",
            str(root / "temp"),
            "--user-directory",
            str(user),
        ],
        cwd=COMFYUI_PATH,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},  # never the network: hub judges fail with the offline message
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if request(url + "/object_info/RewardDanceScoreImages")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited: {(root / 'comfyui.log').read_text()[-3000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("ComfyUI did not start within 120 s")
        yield {"url": url, "root": root, "inputs": inputs, "log": root / "comfyui.log"}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def run_prompt(comfy, prompt: dict, timeout: float = 120) -> dict:
    """Queue an API prompt and wait for its history entry."""
    status, body = request(comfy["url"] + "/prompt", {"prompt": prompt})
    assert status == 200, body
    pid = body["prompt_id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = request(comfy["url"] + f"/history/{pid}")[1]
        if pid in history and history[pid]["status"].get("completed") is not None:
            entry = history[pid]
            if entry["status"]["status_str"] == "success":
                return entry
            pytest.fail(f"prompt failed: {json.dumps(entry['status']['messages'])[-2000:]}")
        time.sleep(0.3)
    pytest.fail(f"prompt did not finish; log tail: {comfy['log'].read_text()[-2000:]}")


def twin(name: str) -> dict:
    return json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())


def with_tiny_model(prompt: dict) -> dict:
    for node in prompt.values():
        if node["class_type"] == "RewardDanceModelLoader":
            node["inputs"].update(model="tiny-qwen", dtype="fp32", device="cpu")
    return prompt


def test_object_info_lists_the_nodes_with_their_inputs(comfy):
    info = request(comfy["url"] + "/object_info")[1]
    ours = {k: v for k, v in info.items() if k.startswith("RewardDance")}
    assert len(ours) >= 6
    assert "RewardDanceNoiseSearch" in ours
    assert {
        "RewardDanceModelLoader",
        "RewardDanceScoreImages",
        "RewardDanceBestOfN",
        "RewardDanceTournament",
        "RewardDanceCompareToReference",
        "RewardDanceCriteria",
        "RewardDanceScoreVideo",
        "RewardDanceRemoteModel",
    } <= set(ours)
    score = ours["RewardDanceScoreImages"]
    assert set(score["input"]["required"]) >= {"reward_model", "text", "images"}
    assert score["output_name"][:3] == ["scores", "summary", "preview"] and score["output_is_list"][0] is True
    assert "tiny-qwen" in ours["RewardDanceModelLoader"]["input"]["required"]["model"][1]["options"]


def pack_nodes(comfy) -> dict:
    """The pack's node definitions from /object_info."""
    return {k: v for k, v in request(comfy["url"] + "/object_info")[1].items() if k.startswith("RewardDance")}


def test_every_pack_input_and_output_has_a_tooltip(comfy):
    missing = []
    for name, info in pack_nodes(comfy).items():
        for section in ("required", "optional"):
            for input_name, spec in info["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not str(options.get("tooltip") or "").strip():
                    missing.append(f"{name}.{input_name}")
        tooltips = info.get("output_tooltips") or [None] * len(info["output"])
        missing += [f"{name} output {out}" for out, tip in zip(info["output_name"], tooltips) if not tip]
    assert missing == []


def test_pack_nodes_follow_comfyui_conventions(comfy):
    ours = pack_nodes(comfy)
    assert ours["RewardDanceModelLoader"]["display_name"] == "Load Reward Model"
    assert ours["RewardDanceRemoteModel"]["display_name"] == "Load Remote Reward Model"
    categories = {name: info["category"] for name, info in ours.items()}
    assert categories["RewardDanceModelLoader"] == categories["RewardDanceRemoteModel"] == "RewardDance"
    assert categories["RewardDanceScoreImages"] == categories["RewardDanceCriteria"] == "RewardDance/scoring"
    assert categories["RewardDanceBestOfN"] == categories["RewardDanceTournament"] == "RewardDance/selection"
    assert categories["RewardDanceNoiseSearch"] == "RewardDance/search"
    assert categories["RewardDanceLoraTrainer"] == "RewardDance/training"
    assert [n for n, info in ours.items() if info.get("experimental")] == ["RewardDanceLoraTrainer"]
    loader = ours["RewardDanceModelLoader"]["input"]["required"]
    assert loader["dtype"][1]["options"][0] == loader["dtype"][1]["default"] == "default"
    assert loader["device"][1]["options"] == ["default", "cpu"]  # ComfyUI runs with --cpu here: no GPU listed
    for name, info in ours.items():  # like core: an output named after its type shows the type, others snake_case
        for out_type, out_name in zip(info["output"], info["output_name"]):
            assert out_name == out_type or out_name.islower(), f"{name} output {out_name}"
    assert ours["RewardDanceBestOfN"]["output_name"] == ["IMAGE", "LATENT", "indices", "scores", "summary"]
    assert "0-based" in ours["RewardDanceBestOfN"]["output_tooltips"][2]


def test_shipped_workflows_use_no_deprecated_core_node(comfy):
    info = request(comfy["url"] + "/object_info")[1]
    used = {n["type"] for p in (REPO / "workflows").glob("*.json") for n in json.loads(p.read_text())["nodes"]}
    used |= {
        n["class_type"] for p in (REPO / "workflows" / "api").glob("*.json") for n in json.loads(p.read_text()).values()
    }
    assert sorted(t for t in used if info.get(t, {}).get("deprecated")) == []


def test_ui_workflows_use_existing_nodes_with_consistent_links(comfy):
    info = request(comfy["url"] + "/object_info")[1]
    files = sorted((REPO / "workflows").glob("*.json"))
    assert len(files) >= 5
    for path in files:
        wf = json.loads(path.read_text())
        nodes = {n["id"]: n for n in wf["nodes"]}
        links = {link[0]: link for link in wf["links"]}
        for node in wf["nodes"]:
            assert node["type"] in info or node["type"] in FRONTEND_ONLY, f"{path.name}: unknown node {node['type']}"
            for slot, inp in enumerate(node.get("inputs", [])):
                if inp.get("link") is not None:
                    link = links[inp["link"]]
                    assert link[3] == node["id"] and link[4] == slot, f"{path.name}: link {link} does not end here"
        for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
            out = nodes[src]["outputs"][src_slot]
            assert out["type"] == kind and link_id in out["links"], f"{path.name}: link {link_id} output side"
            assert nodes[dst]["inputs"][dst_slot]["link"] == link_id, f"{path.name}: link {link_id} input side"
            declared = info[nodes[src]["type"]]["output"][src_slot]
            assert declared == kind, f"{path.name}: {nodes[src]['type']} output {src_slot} is {declared}, not {kind}"
        for node in wf["nodes"]:
            if node["type"].startswith("RewardDance"):
                assert node["properties"]["cnr_id"] == "rewarddance"
    templates = request(comfy["url"] + "/workflow_templates")[1]
    assert set(templates[PACK_NAME]) >= {p.stem for p in files}


def test_api_twins_pass_validation_except_missing_model_files(comfy):
    for path in sorted((REPO / "workflows" / "api").glob("*.json")):
        prompt = json.loads(path.read_text())
        if "RewardDanceRemoteModel" in {n["class_type"] for n in prompt.values()}:
            continue  # runs for real in test_remote_backend_twin
        status, body = request(comfy["url"] + "/prompt", {"prompt": prompt})
        if status == 200:
            continue
        for node_id, node_errors in body["node_errors"].items():
            for err in node_errors["errors"]:
                assert err["type"] == "value_not_in_list" and err["extra_info"]["input_name"] in MODEL_FILE_INPUTS, (
                    f"{path.name} node {node_id}: {err}"
                )


def test_score_images_twin_equals_rewarddance_score(comfy, capsys):
    from rewarddance.backend.cli import main

    prompt = with_tiny_model(twin("score_images"))
    prompt["2"]["inputs"]["image"] = "cand_1.png"
    outputs = run_prompt(comfy, prompt)["outputs"]
    node_scores = [row["score"] for row in outputs["4"]["rewarddance_scores"]]
    assert (
        main(
            [
                "score",
                str(comfy["inputs"] / "cand_1.png"),
                "--prompt",
                prompt["4"]["inputs"]["text"],
                "--json",
                "--model",
                str(comfy["root"] / "models" / "reward_models" / "tiny-qwen"),
                "--dtype",
                "fp32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    cli = [row["score"] for row in json.loads(capsys.readouterr().out)]
    assert node_scores == pytest.approx(cli, abs=1e-5)
    assert outputs["4"]["images"][0]["type"] == "temp"


def test_tournament_twin_runs(comfy):
    prompt = with_tiny_model(twin("tournament_with_reference"))
    for node_id, image in zip(("2", "3", "4"), ("cand_0.png", "cand_1.png", "cand_2.png")):
        prompt[node_id]["inputs"]["image"] = image
    outputs = run_prompt(comfy, prompt)["outputs"]
    ranks = sorted(row["rank"] for row in outputs["8"]["rewarddance_scores"])
    assert ranks == [1, 2, 3]
    assert len(outputs["10"]["rewarddance_scores"]) == 3 and len(outputs["11"]["images"]) == 3


def test_remote_backend_twin(comfy, tiny_dirs):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rewarddance",
            "serve",
            "--model",
            f"judge={tiny_dirs['qwen2_5_vl']}",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--dtype",
            "fp32",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert "serving on" in server.stdout.readline()
        prompt = twin("remote_backend_scoring")
        prompt["3"]["inputs"]["url"] = f"http://127.0.0.1:{port}"
        prompt["2"]["inputs"]["image"] = "cand_2.png"
        outputs = run_prompt(comfy, prompt)["outputs"]
        assert len(outputs["5"]["rewarddance_scores"]) == 1
    finally:
        server.terminate()
        server.wait(30)


def test_mounted_scoring_waits_for_a_running_prompt(comfy):
    """/rewarddance/ scoring from an HTTP thread never overlaps a prompt (ComfyUI's model management is
    single-threaded): a request sent while a prompt runs is answered after that prompt ends."""
    import base64
    import threading

    prompt = with_tiny_model(twin("score_images"))
    prompt["2"]["inputs"]["image"] = "cand_1.png"
    run_prompt(comfy, prompt)  # the loader's model is now served at /rewarddance/ as "tiny-qwen"
    long_run = {  # core nodes only: while it runs our model is not held, so only the guard can make HTTP wait
        "1": {"class_type": "LoadImage", "inputs": {"image": "cand_2.png"}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 48}},
        "3": {
            "class_type": "ImageScaleBy",
            "inputs": {"image": ["2", 0], "upscale_method": "lanczos", "scale_by": 6.0},
        },
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    image = base64.b64encode((comfy["inputs"] / "cand_0.png").read_bytes()).decode()
    answered: dict = {}
    runner = threading.Thread(target=lambda: answered.update(entry=run_prompt(comfy, long_run, timeout=300)))
    runner.start()
    deadline = time.time() + 60
    while not request(comfy["url"] + "/queue")[1]["queue_running"] and time.time() < deadline:
        time.sleep(0.05)
    assert request(comfy["url"] + "/queue")[1]["queue_running"], "the prompt did not start"
    body = {"model": "tiny-qwen", "prompt": "a cat", "images": [image]}
    status, score = request(comfy["url"] + "/rewarddance/v1/score", body)
    http_done = time.time() * 1000
    runner.join(300)
    assert status == 200 and len(score["scores"]) == 1
    messages = dict(answered["entry"]["status"]["messages"])
    started, ended = messages["execution_start"]["timestamp"], messages["execution_success"]["timestamp"]
    assert ended - started > 500, "the prompt was too short to overlap anything"
    assert http_done >= ended - 50  # answered only once the prompt ended


def test_unload_models_releases_the_reward_model(comfy):
    run_prompt(comfy, with_tiny_model(twin("score_images")) | {})
    models = request(comfy["url"] + "/rewarddance/v1/models")[1]["models"]
    assert [m["name"] for m in models] == ["tiny-qwen"] and models[0]["memory_bytes"]["cpu"] > 0
    assert request(comfy["url"] + "/free", {"unload_models": True})[0] == 200
    for _ in range(50):
        if not request(comfy["url"] + "/rewarddance/v1/models")[1]["models"]:
            break
        time.sleep(0.2)
    assert request(comfy["url"] + "/rewarddance/v1/models")[1]["models"] == []
    log_before = comfy["log"].read_text().count("Requested to load VLMHolder")
    prompt = with_tiny_model(twin("score_images"))
    prompt["4"]["inputs"]["text"] = "a different prompt, so the node runs again"
    run_prompt(comfy, prompt)
    assert comfy["log"].read_text().count("Requested to load VLMHolder") == log_before + 1  # loaded back by ComfyUI


def fetch(url: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def test_every_template_the_browser_lists_opens_with_its_thumbnail(comfy):
    """ComfyUI's template browser: the pack's templates are listed, each JSON and .jpg thumbnail is served."""
    status, listing = request(comfy["url"] + "/api/workflow_templates")
    assert status == 200
    names = sorted(listing[PACK_NAME])
    assert names == sorted(p.stem for p in (REPO / "workflows").glob("*.json")) and len(names) >= 9
    for name in names:
        status, kind, body = fetch(f"{comfy['url']}/api/workflow_templates/{PACK_NAME}/{name}.json")
        assert status == 200, name
        workflow = json.loads(body)
        assert workflow["nodes"] and "links" in workflow, name
        status, kind, body = fetch(f"{comfy['url']}/api/workflow_templates/{PACK_NAME}/{name}.jpg")
        assert status == 200 and kind.startswith("image/jpeg") and body[:2] == b"\xff\xd8", name


def test_web_extension_and_backend_routes_are_served(comfy):
    status, js = request(comfy["url"] + f"/extensions/{PACK_NAME}/rewarddance.js")
    assert status == 200 and "registerExtension" in js and "rewarddance_scores" in js
    assert request(comfy["url"] + "/rewarddance/health")[1]["status"] == "ok"
    assert request(comfy["url"] + "/api/rewarddance/health")[1]["status"] == "ok"


def batch_of(image_names: list[str], first_id: int) -> dict:
    """LoadImage nodes for `image_names` and a Batch Images node (id first_id + len) stacking them."""
    nodes = {str(first_id + i): {"class_type": "LoadImage", "inputs": {"image": n}} for i, n in enumerate(image_names)}
    items = {f"images.image{i}": [str(first_id + i), 0] for i in range(len(image_names))}
    nodes[str(first_id + len(image_names))] = {"class_type": "BatchImagesNode", "inputs": items}
    return nodes


def test_score_video_node_runs_on_stacked_frames(comfy):
    """Score Video on stacked frames (two identical videos of two frames)."""
    loader = with_tiny_model({"1": twin("score_images")["3"]})["1"]
    prompt = {
        "1": loader,
        **batch_of(["cand_0.png", "cand_1.png", "cand_0.png", "cand_1.png"], 2),
        "7": {
            "class_type": "RewardDanceScoreVideo",
            "inputs": {
                "reward_model": ["1", 0],
                "text": "a fox running",
                "frames": ["6", 0],
                "fps": 2.0,
                "frames_per_video": 2,
                "max_frames": 8,
            },
        },
    }
    outputs = run_prompt(comfy, prompt)["outputs"]
    video_scores = outputs["7"]["rewarddance_scores"]
    assert len(video_scores) == 2 and video_scores[0]["score"] == pytest.approx(video_scores[1]["score"], abs=1e-6)
    assert [row["name"] for row in video_scores] == ["video 1", "video 2"]


def test_score_images_scores_feed_best_of_n(comfy):
    """Score Images' FLOAT list connects to Best of N's scores (issue 15 item 5): the graph validates and runs, and
    Best of N keeps the same images, with the same scores, as when it scores them itself."""
    text = "a photo of a cat"
    prompt = {
        "1": with_tiny_model({"1": twin("score_images")["3"]})["1"],
        **batch_of(["cand_0.png", "cand_1.png", "cand_2.png"], 2),
        "6": {
            "class_type": "RewardDanceScoreImages",
            "inputs": {
                "reward_model": ["1", 0],
                "text": text,
                "images": ["5", 0],
                "preprocess": "exact",
                "reasons": False,
            },
        },
    }
    best_of_n = {"images": ["5", 0], "text": text, "top_k": 2, "threshold": 0.0, "frames_per_video": 1, "fps": 16.0}
    prompt["7"] = {"class_type": "RewardDanceBestOfN", "inputs": {**best_of_n, "scores": ["6", 0]}}
    prompt["8"] = {"class_type": "RewardDanceBestOfN", "inputs": {**best_of_n, "reward_model": ["1", 0]}}
    outputs = run_prompt(comfy, prompt)["outputs"]
    scored = [row["score"] for row in outputs["6"]["rewarddance_scores"]]
    from_scores, scored_inside = outputs["7"]["rewarddance_scores"], outputs["8"]["rewarddance_scores"]
    assert [row["score"] for row in from_scores] == pytest.approx(scored, abs=1e-6)
    assert [row["score"] for row in scored_inside] == pytest.approx(scored, abs=1e-5)
    kept = [r["index"] for r in sorted(from_scores, key=lambda r: r["rank"]) if r["kept"]]
    assert kept == [r["index"] for r in sorted(scored_inside, key=lambda r: r["rank"]) if r["kept"]]
    assert kept == sorted(range(3), key=lambda i: -scored[i])[:2] and len(outputs["7"]["images"]) == 2
    assert [row["name"] for row in from_scores] == ["image 1", "image 2", "image 3"]


def test_best_of_n_scores_input_takes_numbers_not_text(comfy):
    """The text summary cannot be wired into scores: ComfyUI refuses the link at validation."""
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0}},
        "2": {"class_type": "PrimitiveString", "inputs": {"value": "0.2, 0.9"}},
        "3": {
            "class_type": "RewardDanceBestOfN",
            "inputs": {
                "images": ["1", 0],
                "text": "x",
                "top_k": 1,
                "threshold": 0.0,
                "scores": ["2", 0],
                "frames_per_video": 1,
                "fps": 16.0,
            },
        },
    }
    status, body = request(comfy["url"] + "/prompt", {"prompt": prompt})
    assert status == 400 and body["node_errors"]["3"]["errors"][0]["type"] == "return_type_mismatch"


def test_keep_loaded_off_unloads_after_the_node(comfy):
    prompt = with_tiny_model(twin("score_images"))
    prompt["3"]["inputs"]["keep_loaded"] = False
    for image in ("cand_2.png", "cand_0.png"):
        prompt["2"]["inputs"]["image"] = image
        before = comfy["log"].read_text().count("Requested to load VLMHolder")
        outputs = run_prompt(comfy, prompt)["outputs"]
        assert len(outputs["4"]["rewarddance_scores"]) == 1
        assert request(comfy["url"] + "/rewarddance/v1/models")[1]["models"] == []  # off the device, not served
    assert comfy["log"].read_text().count("Requested to load VLMHolder") == before + 1  # loaded again for the 2nd run


def test_score_badge_appears_in_headless_chromium(comfy):
    """Load the score_images workflow in ComfyUI's frontend, run it, and see the extension's badge data drawn."""
    sync_api, tools = browser_tools()
    open_comfyui, show = tools.open_comfyui, tools.show

    workflow = json.loads((REPO / "workflows" / "score_images.json").read_text())
    for node in workflow["nodes"]:
        if node["type"] == "RewardDanceModelLoader":
            node["widgets_values"][0], node["widgets_values"][2], node["widgets_values"][3] = "tiny-qwen", "fp32", "cpu"
        if node["type"] == "LoadImage":
            node["widgets_values"][0] = "cand_0.png"
    artifacts = REPO / "tests" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser, page = open_comfyui(p, comfy["url"])
        try:
            show(page, workflow)
            page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
            page.wait_for_function(
                "(() => { const n = window.app.graph.getNodeById(4); return n && n.rewarddanceScores; })()",
                timeout=120000,
            )
            rows = page.evaluate("window.app.graph.getNodeById(4).rewarddanceScores")
            time.sleep(1)
            page.screenshot(path=str(artifacts / "score_badge.png"))
        finally:
            browser.close()
    assert len(rows) == 1 and rows[0]["rank"] == 1 and 0 < rows[0]["score"] < 1
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(artifacts / "score_badge.png").convert("RGB")).astype(int)
    badge_green = (np.abs(pixels - np.array([0x1F, 0x7A, 0x3A])).sum(-1) < 12).sum()
    assert badge_green > 200  # the badge was drawn on the canvas


NODE_RECTS_JS = """() => {
  const canvas = window.app.canvas, ds = canvas.ds, box = canvas.canvas.getBoundingClientRect();
  const toScreen = (x, y) => [(x + ds.offset[0]) * ds.scale + box.left, (y + ds.offset[1]) * ds.scale + box.top];
  return window.app.graph._nodes.map(n => {
    const title = n.constructor.title_mode === LiteGraph.NO_TITLE ? 0 : LiteGraph.NODE_TITLE_HEIGHT;
    const [left, top] = toScreen(n.pos[0], n.pos[1] - title), [right, bottom] = toScreen(n.pos[0] + n.size[0],
      n.pos[1] + n.size[1]);
    const list = n.widgets?.find(w => w.name === "rewarddance_ranking")?.element.getBoundingClientRect();
    return {id: n.id, rect: [left, top, right, bottom], list: list && [list.left, list.top, list.right, list.bottom],
            lines: list && n.widgets.find(w => w.name === "rewarddance_ranking").element.innerText.split("\\n")};
  });
}"""


def overlap(a: list[float], b: list[float]) -> bool:
    """Whether two [left, top, right, bottom] rectangles share more than an edge (1 px tolerance)."""
    return min(a[2], b[2]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[1], b[1]) > 1


VUE_NODE_RECTS_JS = """() => [...document.querySelectorAll('[data-node-id]')].map(e => {
  const r = e.getBoundingClientRect();
  return {id: Number(e.dataset.nodeId), rect: [r.left, r.top, r.right, r.bottom]};
})"""


def drawn_rects(page, view: str) -> list[dict]:
    """Every node's drawn rectangle on the screen (title bar included) and the ranked-list widget's, in `view`."""
    page.evaluate("() => { window.app.canvas.setDirty(true, true); window.app.canvas.draw(true, true); }")
    nodes = page.evaluate(NODE_RECTS_JS)
    if view == "vue":  # the drawn rectangles are the nodes' DOM elements
        drawn = {n["id"]: n["rect"] for n in page.evaluate(VUE_NODE_RECTS_JS)}
        assert sorted(drawn) == sorted(n["id"] for n in nodes)
        nodes = [{**n, "rect": drawn[n["id"]]} for n in nodes]
    return nodes


def crossing_nodes(nodes: list[dict]) -> list[tuple[int, int]]:
    """The pairs of node ids whose drawn rectangles overlap."""
    return [(a["id"], b["id"]) for i, a in enumerate(nodes) for b in nodes[i + 1 :] if overlap(a["rect"], b["rect"])]


def browser_tools():
    """playwright's sync API and tools/screenshot_workflows.py (skips without playwright or Chromium)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (uses the system Chromium)")
    if not shutil.which("chromium"):
        pytest.skip("no chromium (Debian: apt-get install chromium)")
    sys.path.insert(0, str(REPO / "tools"))
    import screenshot_workflows

    return sync_api, screenshot_workflows


def test_shipped_workflows_open_without_overlapping_nodes_in_both_views(comfy):
    """Every template, as the classic canvas and the Vue "Nodes 2.0" view draw it, has no two nodes overlapping
    (the layout is spaced from tools/node_extents.json; rerun tools/measure_workflows.py after changing a note)."""
    sync_api, tools = browser_tools()
    crossings = {}
    with sync_api.sync_playwright() as p:
        browser, page = tools.open_comfyui(p, comfy["url"])
        try:
            for view in ("classic", "vue"):
                tools.use_view(page, view == "vue")
                for path in sorted((REPO / "workflows").glob("*.json")):
                    tools.show(page, json.loads(path.read_text()))
                    time.sleep(1.0)  # the Vue view lays nodes out over a few frames
                    crossings[f"{view}/{path.stem}"] = crossing_nodes(drawn_rects(page, view))
        finally:
            browser.close()
    assert len(crossings) == 2 * len(list((REPO / "workflows").glob("*.json")))
    assert {k: v for k, v in crossings.items() if v} == {}


@pytest.mark.parametrize("view", ["classic", "vue"])
def test_ranked_list_is_drawn_inside_the_node_in_headless_chromium(comfy, view):
    """After a run the Score node's ranked list is a widget inside the node (grown to fit), its best score is a
    badge in the title bar, and nothing overlaps another node, in the classic canvas and in the Vue "Nodes 2.0"
    view (Comfy.VueNodes.Enabled, saved in the comfy fixture's own user directory)."""
    sync_api, tools = browser_tools()
    workflow = json.loads((REPO / "workflows" / "score_images.json").read_text())
    for node in workflow["nodes"]:
        if node["type"] == "RewardDanceModelLoader":
            node["widgets_values"][0], node["widgets_values"][2], node["widgets_values"][3] = "tiny-qwen", "fp32", "cpu"
        if node["type"] == "LoadImage":
            node["widgets_values"][0] = "cand_1.png"
    with sync_api.sync_playwright() as p:
        browser, page = tools.open_comfyui(p, comfy["url"])
        try:
            tools.use_view(page, view == "vue")
            tools.show(page, workflow)
            before = page.evaluate("window.app.graph.getNodeById(4).size")
            page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
            page.wait_for_function(
                "(() => { const n = window.app.graph.getNodeById(4); return n && n.rewarddanceScores; })()",
                timeout=120000,
            )
            time.sleep(3)  # the preview image loads and the node is laid out again on the next frames
            nodes = drawn_rects(page, view)
            after = page.evaluate("window.app.graph.getNodeById(4).size")
            saved = page.evaluate("window.app.graph.serialize().nodes.find(n => n.id === 4).widgets_values")
            header = page.evaluate("document.querySelector('[data-node-id=\"4\"]')?.innerText ?? ''")
            page.screenshot(path=str(REPO / "tests" / "artifacts" / f"ranked_list_{view}.png"))
        finally:
            tools.use_view(page, False)
            browser.close()
    score = next(n for n in nodes if n["id"] == 4)
    assert score["lines"][0].startswith("best: image 1  0.") and score["lines"][1].startswith("#1  image 1: 0.")
    left, top, right, bottom = score["rect"]
    list_left, list_top, list_right, list_bottom = score["list"]
    assert left <= list_left < list_right <= right + 1 and top < list_top < list_bottom <= bottom + 1
    assert list_bottom - list_top >= 2 * 16  # both lines are shown, not squeezed
    assert after[0] >= before[0] and after[1] >= before[1]  # grown to fit, never shrunk
    assert saved == [w for w in workflow["nodes"] if w["id"] == 4][0]["widgets_values"]  # the list is not saved
    if view == "vue":  # the header shows the best score among the node's badges, before the widgets
        assert header.split("\n")[:3] == ["Score Images", "RewardDance", score["lines"][0].replace("  ", " ")]
    assert crossing_nodes(nodes) == []


def test_workflow_models_are_files_the_missing_models_dialog_can_download(comfy):
    """properties.models (what ComfyUI's Missing Models dialog reads): single .safetensors/.sft files with a URL and
    one of ComfyUI's own model folders; the reward model, a hub folder the loader downloads, is not listed."""
    folders = {f["name"] for f in request(comfy["url"] + "/experiment/models")[1]} - {"reward_models"}
    entries = 0
    for path in sorted((REPO / "workflows").glob("*.json")):
        wf = json.loads(path.read_text())
        for node in wf["nodes"]:
            models = node.get("properties", {}).get("models", [])
            assert not (models and node["type"] == "RewardDanceModelLoader"), f"{path.name}: reward model listed"
            for model in models + wf.get("models", []):
                entries += 1
                assert model["name"].endswith((".safetensors", ".sft")), f"{path.name}: {model}"
                assert model["url"].startswith("https://") and model["url"].endswith("/" + model["name"]), model
                assert model["directory"] in folders, f"{path.name}: {model['directory']} is not a ComfyUI folder"
    assert entries >= 10


def test_loader_lists_installed_folders_then_judges_to_download(comfy):
    info = request(comfy["url"] + "/object_info/RewardDanceModelLoader")[1]["RewardDanceModelLoader"]
    model = info["input"]["required"]["model"][1]
    assert model["options"] == [
        "tiny-qwen",
        "Qwen/Qwen2.5-VL-7B-Instruct (download)",
        "Qwen/Qwen2.5-VL-3B-Instruct (download)",
    ]
    assert "(hub id below)" not in model["options"] and model["default"] == "tiny-qwen"
    assert info["input"]["required"]["hub_id"][1]["default"] == ""
    # widget order as release 0.1 saved it (positional widgets_values keep loading)
    assert info["input_order"]["required"][:7] == [
        "model",
        "hub_id",
        "dtype",
        "device",
        "attention",
        "max_pixels",
        "keep_loaded",
    ]


def test_a_judge_that_is_not_downloaded_fails_offline_with_where_to_put_it(comfy):
    prompt = twin("score_images")
    prompt["2"]["inputs"]["image"] = "cand_0.png"
    status, body = request(comfy["url"] + "/prompt", {"prompt": prompt})
    assert status == 200, body  # the preset passes validation whether it is downloaded or not
    deadline = time.time() + 60
    while time.time() < deadline:
        entry = request(comfy["url"] + f"/history/{body['prompt_id']}")[1].get(body["prompt_id"])
        if entry and entry["status"].get("completed") is not None:
            break
        time.sleep(0.3)
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "error" and errors[0]["node_id"] == "3"
    target = comfy["root"] / "models" / "reward_models" / "Qwen2.5-VL-7B-Instruct"
    message = errors[0]["exception_message"]
    assert message.startswith("model: 'Qwen/Qwen2.5-VL-7B-Instruct' is not downloaded") and "HF_HUB_OFFLINE" in message
    assert f"`hf download Qwen/Qwen2.5-VL-7B-Instruct --local-dir {target}`" in message
    assert not target.exists() and not [p for p in target.parent.iterdir() if p.name.startswith(".")]


def test_a_stale_model_name_is_refused_at_queue_time_naming_the_input(comfy):
    prompt = twin("score_images")
    prompt["3"]["inputs"]["model"] = "deleted-judge"
    status, body = request(comfy["url"] + "/prompt", {"prompt": prompt})
    [err] = body["node_errors"]["3"]["errors"]
    assert status == 400 and err["type"] == "custom_validation_failed"
    assert err["details"].startswith(
        "model - model: 'deleted-judge' is not in models/reward_models (installed: tiny-qwen)"
    )


def test_a_workflow_saved_by_release_0_1_still_runs_its_chosen_folder(comfy):
    prompt = with_tiny_model(twin("score_images"))
    prompt["3"]["inputs"].update(hub_id="Qwen/Qwen2.5-VL-7B-Instruct")  # 0.1's default, saved next to every choice
    prompt["2"]["inputs"]["image"] = "cand_1.png"
    prompt["4"]["inputs"]["text"] = "a prompt saved by release 0.1"
    assert len(run_prompt(comfy, prompt)["outputs"]["4"]["rewarddance_scores"]) == 1


NOTE_FITS_JS = """() => window.app.graph._nodes.filter(n => n.type === "MarkdownNote").map(n => {
  const el = n.widgets[0].element, style = getComputedStyle(el), box = document.createElement("div");
  box.className = el.className;
  box.innerHTML = el.innerHTML;
  box.style.cssText = `position:absolute; left:0; top:0; visibility:hidden; height:auto; width:${el.clientWidth}px;`
    + `font-size:${style.fontSize}; padding:${style.padding}`;
  document.body.appendChild(box);
  const needed = box.scrollHeight;
  box.remove();
  return [n.id, needed, el.clientHeight];
})"""


def test_workflow_notes_show_all_their_text_in_headless_chromium(comfy):
    """Every shipped workflow's note is tall enough for its text in ComfyUI's frontend (none is cut off)."""
    sync_api, tools = browser_tools()
    open_comfyui, show = tools.open_comfyui, tools.show

    cut = []
    with sync_api.sync_playwright() as p:
        browser, page = open_comfyui(p, comfy["url"])
        try:
            for path in sorted((REPO / "workflows").glob("*.json")):
                show(page, json.loads(path.read_text()))
                notes = page.evaluate(NOTE_FITS_JS)
                assert notes, f"{path.name}: no note"
                cut += [(path.name, node_id, needed, shown) for node_id, needed, shown in notes if needed > shown]
        finally:
            browser.close()
    assert cut == []


def test_saved_loader_values_of_older_versions_are_migrated_in_headless_chromium(comfy):
    """A workflow saved with dtype/device 'auto' (and device 'cuda') opens with ComfyUI's 'default' instead."""
    sync_api, tools = browser_tools()
    open_comfyui, show = tools.open_comfyui, tools.show

    workflow = json.loads((REPO / "workflows" / "score_images.json").read_text())
    loader = next(n for n in workflow["nodes"] if n["type"] == "RewardDanceModelLoader")
    loader["widgets_values"][2:4] = ["auto", "cuda"]
    with sync_api.sync_playwright() as p:
        browser, page = open_comfyui(p, comfy["url"])
        try:
            show(page, workflow)
            values = dict(
                page.evaluate(f"window.app.graph.getNodeById({loader['id']}).widgets.map(w => [w.name, w.value])")
            )
        finally:
            browser.close()
    assert (values["dtype"], values["device"]) == ("default", "default")  # no cuda:0 on a --cpu ComfyUI


DEVICE_CHOICES_SCRIPT = """
import importlib, importlib.util, json, sys
import torch
sys.path.insert(0, sys.argv[1])
from comfy.cli_args import args
args.cpu = True
import comfy.model_management as mm
spec = importlib.util.spec_from_file_location(  # the pack as ComfyUI imports it, then its nodes/memory.py
    "rewarddance_pack", sys.argv[2] + "/__init__.py", submodule_search_locations=[sys.argv[2]]
)
pack = importlib.util.module_from_spec(spec)
sys.modules["rewarddance_pack"] = pack
spec.loader.exec_module(pack)
memory = importlib.import_module("rewarddance_pack.nodes.memory")
out = {"cpu": memory.device_choices(), "cpu_default": str(memory.devices("default")[0])}
mm.get_torch_device = lambda: torch.device("cuda", 0)  # ComfyUI on a machine with two GPUs
torch.cuda.device_count = lambda: 2
out["gpus"] = memory.device_choices()
out["second"] = str(memory.devices("cuda:1")[0])
print(json.dumps(out))
"""


def test_loader_device_choices_list_each_gpu_as_comfyui_names_it():
    """Load Reward Model's devices come from ComfyUI's model management: 'default', 'cpu', then every GPU."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    out = subprocess.run(
        [python, "-c", DEVICE_CHOICES_SCRIPT, COMFYUI_PATH, str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["cpu"] == ["default", "cpu"] and result["cpu_default"] == "cpu"
    assert result["gpus"] == ["default", "cpu", "cuda:0", "cuda:1"] and result["second"] == "cuda:1"


CURVE_JS = """(id) => {
  const node = window.app.graph.getNodeById(id), widget = node.widgets?.find(w => w.name === "rewarddance_curve");
  if (!widget) return null;
  const el = widget.element, r = el.getBoundingClientRect(), canvas = el.querySelector("canvas");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let line = 0;  // pixels of the mean line's colour (#58a6ff)
  for (let i = 0; i < pixels.length; i += 4) {
    if (Math.abs(pixels[i] - 0x58) + Math.abs(pixels[i + 1] - 0xa6) + Math.abs(pixels[i + 2] - 0xff) < 30) line++;
  }
  return {points: el.rewarddancePoints, label: el.querySelector(".rewarddance-curve-label").textContent,
          rect: [r.left, r.top, r.right, r.bottom], line};
}"""
# what the server's websocket delivers to the page: a text frame {"type", "data"}, as send_sync writes it
DELIVER_JS = """(messages) => {
  const socket = window.comfyAPI.api.api.socket;
  for (const data of messages) {
    socket.dispatchEvent(new MessageEvent("message", {data: JSON.stringify({type: "rewarddance.training", data})}));
  }
}"""


@pytest.mark.parametrize("view", ["classic", "vue"])
def test_trainer_node_draws_a_live_reward_curve_in_headless_chromium(comfy, view):
    """The LoRA workflow in ComfyUI's frontend gets the trainer's per-step "rewarddance.training" messages through
    its websocket: a curve widget inside the node (grown to fit, not saved, overlapping no other node) holds the
    points sent, labels the last reward as format_score writes it; a resumed run starts from its earlier steps and
    a run started again starts over; messages for other nodes are ignored. In both node views."""
    sync_api, tools = browser_tools()

    from rewarddance.backend.rl.curve import curve_message, curve_point
    from rewarddance.backend.score_text import format_score

    workflow = json.loads((REPO / "workflows" / "reward_lora_training_sd15.json").read_text())
    trainer = next(n for n in workflow["nodes"] if n["type"] == "RewardDanceLoraTrainer")
    trainer["size"][1], trainer = 400, trainer["id"]  # smaller than its widgets: the curve must grow the node
    rows = [{"reward_mean": 0.5 + 0.1 * s, "reward_std": 0.05 / s, "window_std": 0.02} for s in range(1, 6)]
    node = str(trainer)
    first_run = [curve_message(node, s, 5, rows[s - 1], [] if s == 1 else None) for s in (1, 2, 3)]
    resumed = [curve_message(node, 3, 5, rows[2], [curve_point(s, rows[s - 1]) for s in (1, 2)])]
    resumed.append(curve_message(node, 4, 5, {**rows[3], "reward_std": None}))
    again = [curve_message(node, 1, 2, rows[4]), curve_message("2", 9, 9, rows[0])]  # no earlier; another node
    with sync_api.sync_playwright() as p:
        browser, page = tools.open_comfyui(p, comfy["url"])
        try:
            tools.use_view(page, view == "vue")
            tools.show(page, workflow)
            before = page.evaluate(f"window.app.graph.getNodeById({trainer}).size")
            assert page.evaluate(CURVE_JS, trainer) is None  # no curve before a run
            seen = {}
            for name, messages in [("first", first_run), ("resumed", resumed), ("again", again)]:
                page.evaluate(DELIVER_JS, messages)
                time.sleep(0.5)  # the node is laid out again on the next frames
                seen[name] = page.evaluate(CURVE_JS, trainer)
                if name == "resumed":
                    nodes, scale = drawn_rects(page, view), page.evaluate("window.app.canvas.ds.scale")
                    page.screenshot(path=str(REPO / "tests" / "artifacts" / f"training_curve_{view}.png"))
            after = page.evaluate(f"window.app.graph.getNodeById({trainer}).size")
            saved = page.evaluate(f"window.app.graph.serialize().nodes.find(n => n.id === {trainer}).widgets_values")
        finally:
            tools.use_view(page, False)
            browser.close()

    def points(steps: list[int], **last) -> list[dict]:
        """The points of `steps` as sent (with `last` replacing fields of the last one)."""
        return [{**curve_point(s, rows[s - 1]), **(last if s == steps[-1] else {})} for s in steps]

    assert seen["first"]["points"] == points([1, 2, 3])
    assert seen["first"]["label"] == f"step 3/5  reward {format_score(0.8)}  std {format_score(0.05 / 3)}"
    assert seen["resumed"]["points"] == points([1, 2, 3, 4], reward_std=None)  # the earlier steps, then 3 and 4
    assert seen["resumed"]["label"] == f"step 4/5  reward {format_score(0.9)}"
    assert seen["again"]["points"] == [curve_point(1, rows[4])] and seen["again"]["label"].startswith("step 1/2 ")
    assert seen["resumed"]["line"] > 50  # the mean line is drawn on the widget's canvas
    rects = {n["id"]: n["rect"] for n in nodes}
    left, top, right, bottom = rects[trainer]
    c_left, c_top, c_right, c_bottom = seen["resumed"]["rect"]
    assert left <= c_left < c_right <= right + 1 and top < c_top < c_bottom <= bottom + 1
    assert c_bottom - c_top >= (170 - 2 * 4 - 1) * scale  # the curve's full height (170 minus margins), not squeezed
    assert after[0] == before[0] and after[1] >= before[1] + 170  # grown (downwards, not wider) to fit the curve
    assert saved == [n for n in workflow["nodes"] if n["id"] == trainer][0]["widgets_values"]  # the curve is not saved
    crossing = [(a, b) for a in rects for b in rects if a < b and overlap(rects[a], rects[b])]
    assert crossing == []


def test_trainer_sends_each_step_to_the_browser_as_a_rewarddance_training_message(tmp_path):
    """live_progress in ComfyUI's Python with a recording PromptServer: per step a "rewarddance.training" message
    (node, step, total, reward numbers; NaN as null) to the client that queued, the first with the earlier steps of
    the resumed run, besides the progress text; without a server nothing is sent and nothing fails."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_comfyui_inprocess import last_json, run_script

    result = last_json(run_script("comfy_inprocess_training.py", str(REPO), "-", str(tmp_path), "live_progress"))
    assert [(e["event"], e["sid"]) for e in result["events"]] == [("rewarddance.training", "browser-1")] * 2
    first, second = (e["data"] for e in result["events"])
    assert first == {
        "node": "6",
        "total": 4,
        "step": 3,
        "reward_mean": 0.3,
        "reward_std": 0.03,
        "window_std": 0.04,
        "earlier": [
            {"step": 1, "reward_mean": 0.1, "reward_std": 0.01, "window_std": 0.02},
            {"step": 2, "reward_mean": 0.2, "reward_std": 0.02, "window_std": 0.03},
        ],
    }
    assert second == {"node": "6", "total": 4, "step": 4, "reward_mean": 0.4, "reward_std": None, "window_std": 0.05}
    assert result["texts"] == [
        ["6", "step 3/4: reward 0.3 (std 0.03, window std 0.04)"],
        ["6", "step 4/4: reward 0.4 (std nan, window std 0.05)"],
    ]
