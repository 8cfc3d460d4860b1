"""`rerank --ray` on one local Ray instance with 2 CPUs and 2 actors: scores equal local rerank (pointwise and
pairwise, fp32), manifests in every format, unreadable rows reported with their error, and a killed job resumed
without scoring any row twice or losing one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_helpers import BROKEN, NAMES, local_rerank

from rewarddance.backend.cli import main
from rewarddance.backend.integrations.ray_shards import read_results, shard_paths

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

TOL = 1e-5


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance (2 CPUs) for the whole module; yields its address for other drivers."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield context.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def judge(tiny_dirs):
    """The tiny judge's checkpoint folder."""
    return str(tiny_dirs["qwen2_5_vl"])


def ray_rerank(source, out, judge, *flags: str) -> int:
    """Run `rewarddance rerank SOURCE --ray` with 2 actors in fp32 into `out`."""
    args = ["rerank", str(source), "--ray", "--model", judge, "--dtype", "fp32", "--out", str(out), "--quiet"]
    return main([*args, "--actors", "2", "--batch-size", "2", "--shard-rows", "3", *flags])


def by_id(out: Path) -> dict[str, dict]:
    """The result rows of `out` by id, checking no id appears twice."""
    rows = read_results(out)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"an id was written twice: {sorted(ids)}"
    return {r["id"]: r for r in rows}


def test_pointwise_scores_equal_local_rerank_and_unreadable_rows_are_reported(ray_cluster, judge, ray_images, tmp_path):
    local = local_rerank(ray_images, tmp_path / "local.jsonl", "--model", judge, "--dtype", "fp32", "--prompt", "a cat")
    assert ray_rerank(ray_images, tmp_path / "out", judge, "--prompt", "a cat") == 0
    rows = by_id(tmp_path / "out")
    assert sorted(rows) == sorted([*NAMES, BROKEN])
    for name in NAMES:
        assert rows[name]["score"] == pytest.approx(local[name], abs=TOL)
        assert rows[name]["error"] is None and rows[name]["prompt"] == "a cat"
        assert rows[name]["path"] == str((ray_images / name).absolute())
    assert rows[BROKEN]["score"] is None and "not a readable image" in rows[BROKEN]["error"]
    assert len(shard_paths(tmp_path / "out")) == 3  # 7 rows, 3 per shard


def test_pairwise_scores_equal_local_rerank(ray_cluster, judge, ray_images, tmp_path):
    ref = ["--mode", "pairwise", "--reference", str(ray_images / NAMES[0]), "--prompt", "a dog"]
    local = local_rerank(ray_images, tmp_path / "local.jsonl", "--model", judge, "--dtype", "fp32", *ref)
    assert ray_rerank(ray_images, tmp_path / "out", judge, *ref, "--shard-format", "jsonl") == 0
    rows = by_id(tmp_path / "out")
    assert all(p.suffix == ".jsonl" for p in shard_paths(tmp_path / "out"))
    assert {n: rows[n]["score"] for n in NAMES} == pytest.approx(local, abs=TOL)


def write_manifest(path: Path, rows: list[dict]) -> None:
    """A manifest table in the format of `path`'s suffix."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_manifest_rows_with_their_prompts_references_and_criteria(
    ray_cluster, judge, reward_models, ray_images, tmp_path, suffix
):
    rm = reward_models("qwen2_5_vl")
    reference = str(ray_images / NAMES[5])
    manifest = ray_images.parent / f"{tmp_path.name}{suffix}"  # relative paths are relative to the manifest
    folder = ray_images.name
    rows = [
        {"id": "a", "path": f"{folder}/{NAMES[0]}", "prompt": "a cat", "reference": "", "criteria": ""},
        {"id": "b", "path": f"{folder}/{NAMES[1]}", "prompt": "a red fox", "reference": reference, "criteria": ""},
        {"id": "c", "path": f"{folder}/{NAMES[2]}", "prompt": "a boat", "reference": "", "criteria": "alignment"},
        {"id": "d", "path": f"{folder}/missing.png", "prompt": "a cat", "reference": "", "criteria": ""},
    ]
    write_manifest(manifest, rows)
    out = tmp_path / "out"
    assert ray_rerank(manifest, out, judge, "--mode", "pairwise", "--reference", str(ray_images / NAMES[3])) == 0
    got = by_id(out)
    images = [str(ray_images / NAMES[i]) for i in range(3)]
    assert got["a"]["score"] == pytest.approx(
        rm.compare(images[:1], str(ray_images / NAMES[3]), "a cat").scores[0], abs=TOL
    )
    assert got["b"]["score"] == pytest.approx(rm.compare(images[1:2], reference, "a red fox").scores[0], abs=TOL)
    want_c = rm.compare(images[2:3], str(ray_images / NAMES[3]), "a boat", criteria="alignment").scores[0]
    assert got["c"]["score"] == pytest.approx(want_c, abs=TOL)
    assert got["d"]["score"] is None and "missing.png" in got["d"]["error"]
    assert got["b"]["prompt"] == "a red fox"


def test_a_rerun_skips_the_rows_already_in_out_and_other_settings_are_refused(
    ray_cluster, judge, ray_images, tmp_path, capsys
):
    out = tmp_path / "out"
    assert ray_rerank(ray_images, out, judge, "--prompt", "a cat") == 0
    before = {p.name: p.stat().st_mtime_ns for p in shard_paths(out)}
    assert ray_rerank(ray_images, out, judge, "--prompt", "a cat", "--top-k", "2") == 0
    assert {p.name: p.stat().st_mtime_ns for p in shard_paths(out)} == before
    captured = capsys.readouterr()
    assert "scored 0, unreadable 0, already in --out 7" in captured.err
    assert len([line for line in captured.out.splitlines() if line.strip().startswith(("1 ", "2 "))]) == 2
    assert ray_rerank(ray_images, out, judge, "--prompt", "a cat", "--normalize", "yes_no") == 2
    assert "other settings (normalize None -> 'yes_no')" in capsys.readouterr().err


def test_a_killed_job_resumes_without_scoring_a_row_twice(ray_cluster, judge, ray_images, local_scores, tmp_path):
    n = 400  # enough rows that the job is still running when its first shard lands
    manifest = tmp_path / "many.jsonl"
    names = [NAMES[i % len(NAMES)] for i in range(n)]
    write_manifest(manifest, [{"id": f"r{i:03d}", "path": str(ray_images / nm)} for i, nm in enumerate(names)])
    out = tmp_path / "out"
    args = ["rerank", str(manifest), "--ray", ray_cluster, "--model", judge, "--dtype", "fp32", "--prompt", "a cat"]
    args += ["--out", str(out), "--quiet", "--actors", "1", "--batch-size", "4", "--shard-rows", "4"]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewarddance", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not shard_paths(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert shard_paths(out), f"the job wrote no shard before it was killed: {err.decode()[-2000:]}"
    first = by_id(out)
    assert 0 < len(first) < n, "the job finished before the kill; nothing was left to resume"
    assert main(args) == 0  # the same command again
    rows = by_id(out)  # every id once, the killed run's rows kept as they were
    assert sorted(rows) == [f"r{i:03d}" for i in range(n)]
    assert all(rows[k] == v for k, v in first.items())
    for i, name in enumerate(names):
        assert rows[f"r{i:03d}"]["score"] == pytest.approx(local_scores[name], abs=TOL)


@pytest.fixture(scope="module")
def local_scores(reward_models, ray_images):
    """The tiny judge's local scores of the six images for 'a cat', by name."""
    rm = reward_models("qwen2_5_vl")
    return dict(zip(NAMES, rm.score([str(ray_images / n) for n in NAMES], "a cat").scores))
