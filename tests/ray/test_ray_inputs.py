"""`rerank --ray`'s input checks, all before Ray starts (no Ray instance here): bad flags and counts, manifests
without a path column or with bad rows, output folders, the message without Ray installed, and the shard files."""

from __future__ import annotations

import json
import sys

import pytest

from rewarddance.backend.cli import main
from rewarddance.backend.integrations.ray_manifest import manifest_rows
from rewarddance.backend.integrations.ray_shards import done_ids, read_results, shard_paths, write_shard


@pytest.fixture
def no_ray_start(monkeypatch):
    """Fail the test if anything would start or join Ray."""
    from rewarddance.backend.integrations import ray_rerank

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started although the input is bad")

    monkeypatch.setattr(ray_rerank, "start_ray", refuse)


def run(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of the command line."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def base(source, tmp_path, judge) -> list[str]:
    """`rerank SOURCE --ray` with the tiny judge into tmp_path/out."""
    return ["rerank", str(source), "--ray", "--model", judge, "--out", str(tmp_path / "out"), "--quiet"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--actors", "0"], "--actors must be a positive integer, got 0"),
        (["--batch-size", "-1"], "--batch-size must be a positive integer, got -1"),
        (["--shard-rows", "0"], "--shard-rows must be a positive integer"),
        (["--gpus-per-actor", "-1"], "--gpus-per-actor must be a number >= 0"),
        (["--gpus-per-actor", "nan"], "--gpus-per-actor must be a number >= 0"),
        (["--backend", "http://127.0.0.1:1"], "--ray loads the model in every actor; --backend"),
        (["--reasons"], "--reasons is not written"),
        (["--mode", "pairwise", "--reference", "nowhere.png"], "--reference 'nowhere.png' does not exist"),
        (["--mode", "pairwise"], "pairwise needs --reference IMAGE or a 'reference' column"),
        (["--top-k", "0"], "--top-k must be a positive integer"),
        (["--prompt", " "], "--prompt is empty"),
        (["--sheet", "best.gif"], "--sheet must end in .png, .jpg, .jpeg or .webp"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(tiny_dirs, ray_images, tmp_path, capsys, no_ray_start, extra, message):
    argv = base(ray_images, tmp_path, str(tiny_dirs["qwen2_5_vl"]))
    code, err = run([*argv, *(["--prompt", "a cat"] if "--prompt" not in extra else []), *extra], capsys)
    assert code == 2 and message in err, err


def test_output_and_source_problems(tiny_dirs, ray_images, tmp_path, capsys, no_ray_start):
    judge = str(tiny_dirs["qwen2_5_vl"])
    code, err = run(["rerank", ray_images, "--ray", "--model", judge, "--prompt", "x"], capsys)
    assert code == 2 and "--ray needs --out FOLDER" in err
    (tmp_path / "file").write_text("x")
    code, err = run(
        ["rerank", ray_images, "--ray", "--model", judge, "--prompt", "x", "--out", tmp_path / "file"], capsys
    )
    assert code == 2 and "is a file; pass a directory" in err
    code, err = run([*base(tmp_path / "none.parquet", tmp_path, judge), "--prompt", "x"], capsys)
    assert code == 2 and "manifest" in err and "does not exist" in err
    code, err = run([*base(tmp_path / "rows.txt", tmp_path, judge), "--prompt", "x"], capsys)
    assert code == 2 and "pass a folder or a manifest table (.parquet, .jsonl or .csv)" in err
    code, err = run(base(ray_images, tmp_path, judge), capsys)
    assert code == 2 and "pass --prompt TEXT or --prompts FILE" in err
    code, err = run([*base(ray_images, tmp_path, judge), "--prompt", "x", "--model", str(tmp_path / "nope")], capsys)
    assert code == 2 and "--model" in err


def test_ray_only_flags_are_refused_in_a_local_rerank(tiny_dirs, ray_images, capsys):
    code, err = run(["rerank", ray_images, "--prompt", "x", "--actors", "2", "--shard-format", "jsonl"], capsys)
    assert code == 2 and "--actors, --shard-format only work(s) with --ray" in err


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("m.csv", "file,prompt\na.png,x\n", "has no 'path' column (its columns: 'file', 'prompt')"),
        ("m.jsonl", '{"path": "a.png"}\n{"file": "b.png"}\n', "line 2 has no 'path' column"),
        ("m.jsonl", '{"path": "a.png"}\nnot json\n', "line 2: invalid JSON"),
        ("m.jsonl", '["a.png"]\n', "line 1: expected a JSON object"),
        ("m.csv", "path,prompt\n,x\n", "row 1: the 'path' column is empty"),
        ("m.csv", "path\na.png\n", "row 1 ('a.png') has no prompt: add a 'prompt' column or pass --prompt"),
        ("m.csv", "path,prompt\na.png,x\na.png,y\n", "the id 'a.png' appears twice"),
        ("m.parquet", "not parquet", "is not a readable Parquet file"),
    ],
)
def test_bad_manifests_are_refused_naming_the_column_or_row(
    tiny_dirs, tmp_path, capsys, no_ray_start, name, text, message
):
    manifest = tmp_path / name
    manifest.write_text(text)
    code, err = run(base(manifest, tmp_path, str(tiny_dirs["qwen2_5_vl"])), capsys)
    assert code == 2 and message in err, err


def test_a_parquet_manifest_without_a_path_column_names_its_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"image": "a.png", "prompt": "x"}]), tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=r"has no 'path' column \(its columns: 'image', 'prompt'\)"):
        manifest_rows(tmp_path / "m.parquet")


def test_manifest_rows_resolve_paths_against_the_manifest_folder(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": "sub/a.png", "prompt": "x", "extra": 1}) + "\n" + json.dumps({"path": "/abs/b.png"}) + "\n"
    )
    rows = manifest_rows(tmp_path / "m.jsonl")
    assert rows == [
        {"id": "sub/a.png", "path": str(tmp_path / "sub/a.png"), "prompt": "x", "reference": None, "criteria": None},
        {"id": "/abs/b.png", "path": "/abs/b.png", "prompt": None, "reference": None, "criteria": None},
    ]


def test_without_ray_the_flag_says_how_to_install_it(tiny_dirs, ray_images, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as when it is absent
    monkeypatch.setitem(sys.modules, "ray.data", None)
    code, err = run([*base(ray_images, tmp_path, str(tiny_dirs["qwen2_5_vl"])), "--prompt", "x"], capsys)
    assert code == 2 and 'rerank --ray needs Ray Data, which is not installed: `pip install -e ".[ray]"`' in err


def test_shards_are_written_whole_and_read_back(tmp_path):
    rows = [
        {"id": "a", "path": "/x/a.png", "prompt": "p", "score": 0.25, "error": None},
        {"id": "b", "path": "/x/b.png", "prompt": "p", "score": None, "error": "unreadable"},
    ]
    write_shard(tmp_path, 0, rows[:1], "parquet")
    write_shard(tmp_path, 1, rows[1:], "jsonl")
    (tmp_path / ".part-00002.parquet.tmp").write_bytes(b"cut short")  # left by a killed write: ignored
    assert [p.name for p in shard_paths(tmp_path)] == ["part-00000.parquet", "part-00001.jsonl"]
    assert read_results(tmp_path) == rows
    assert done_ids(tmp_path) == {"a", "b"}
