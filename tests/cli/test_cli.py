"""The `rewarddance` command line: score, rerank (outputs, resume, skipping, sheets, pairwise), tiny-model."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from PIL import Image as PILImage

from rewarddance.backend.cli import main


@pytest.fixture()
def gen_dir(tmp_path, photo_paths):
    d = tmp_path / "generations"
    d.mkdir()
    for p in photo_paths[:4]:
        shutil.copy(p, d / p.name)
    return d


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_score_json_in_input_order(tiny_dirs, photo_paths, capsys):
    files = [photo_paths[2], photo_paths[0]]
    code, out, _ = run(["score", *files, "--prompt", "a cat", "--model", tiny_dirs["qwen2_vl"], "--json"], capsys)
    rows = json.loads(out)
    assert code == 0 and [r["path"] for r in rows] == [str(f) for f in files]
    code, out2, _ = run(["score", files[0], "--prompt", "a cat", "--model", tiny_dirs["qwen2_vl"], "--json"], capsys)
    assert json.loads(out2)[0]["score"] == pytest.approx(rows[0]["score"], abs=1e-5)


def test_score_with_reasons(tiny_dirs, photo_paths, capsys):
    code, out, _ = run(
        [
            "score",
            photo_paths[0],
            "--prompt",
            "a cat",
            "--model",
            tiny_dirs["qwen2_vl"],
            "--json",
            "--reasons",
            "--cot",
            "answer_first",
        ],
        capsys,
    )
    assert code == 0 and isinstance(json.loads(out)[0]["reasons"], str)


def test_rerank_writes_ranks_sheet_and_resumes(tiny_dirs, gen_dir, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    sheet = tmp_path / "best.png"
    (gen_dir / "broken.png").write_bytes(b"garbage")
    args = [
        "rerank",
        gen_dir,
        "--prompt",
        "a cat",
        "--model",
        tiny_dirs["qwen2_5_vl"],
        "--top-k",
        2,
        "--out",
        out,
        "--sheet",
        sheet,
        "--quiet",
    ]
    code, stdout, err = run(args, capsys)
    assert code == 0
    assert "broken.png" in err and "skipped" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    best = sorted(rows, key=lambda r: -r["score"])
    assert stdout.splitlines()[0].split()[-1] == best[0]["path"]
    with PILImage.open(sheet) as img:
        assert img.size == (512, 256)
    # refusing to overwrite, then resuming with one new file: only that file is scored
    code, _, err = run(args, capsys)
    assert code == 2 and "--resume" in err
    shutil.copy(gen_dir / "coffee.png", gen_dir / "coffee2.png")
    code, _, _ = run(args + ["--resume"], capsys)  # --resume redraws its own sheet
    rows2 = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 0 and len(rows2) == 5 and rows2[:4] == rows
    assert rows2[4]["path"].endswith("coffee2.png")
    assert rows2[4]["score"] == pytest.approx(
        next(r["score"] for r in rows if r["path"].endswith("coffee.png")), abs=1e-5
    )


def test_rerank_csv_prompts_file_and_pairwise(tiny_dirs, gen_dir, tmp_path, photo_paths, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(json.dumps({"file": p.name, "prompt": f"photo of {p.stem}"}) for p in gen_dir.iterdir())
    )
    out = tmp_path / "r.csv"
    code, _, _ = run(
        [
            "rerank",
            gen_dir,
            "--prompts",
            prompts,
            "--model",
            tiny_dirs["qwen2_5_vl"],
            "--out",
            out,
            "--mode",
            "pairwise",
            "--reference",
            photo_paths[4],
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {r["prompt"] for r in rows} == {f"photo of {p.stem}" for p in gen_dir.iterdir()}


def test_rerank_exits_nonzero_only_when_nothing_scored(tiny_dirs, tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_bytes(b"nope")
    code, _, err = run(["rerank", d, "--prompt", "x", "--model", tiny_dirs["qwen2_5_vl"], "--quiet"], capsys)
    assert code == 1 and "nothing could be scored" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mode", "pairwise"], "needs --reference"),
        (["--out", "x.txt"], "must end in .jsonl or .csv"),
        (["--top-k", "0"], "--top-k must be a positive integer"),
        (["--prompts", "/nonexistent.jsonl"], "does not exist"),
        (["--normalize", "yes_no", "--max-pixels", "-5"], "max_pixels must be a positive integer"),
    ],
)
def test_rerank_bad_arguments(tiny_dirs, gen_dir, capsys, extra, message):
    code, _, err = run(
        ["rerank", gen_dir, "--prompt", "x", "--model", tiny_dirs["qwen2_5_vl"], "--quiet", *extra], capsys
    )
    assert code == 2 and message in err


def test_rerank_missing_prompt_and_directory(tiny_dirs, gen_dir, tmp_path, capsys):
    code, _, err = run(["rerank", gen_dir, "--model", tiny_dirs["qwen2_5_vl"]], capsys)
    assert code == 2 and "--prompt" in err
    code, _, err = run(["rerank", tmp_path / "nowhere", "--prompt", "x"], capsys)
    assert code == 2 and "does not exist" in err


def test_tiny_model_command(tmp_path, capsys):
    code, out, _ = run(["tiny-model", "--family", "qwen3_vl", "--out", tmp_path / "t"], capsys)
    assert code == 0
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "preprocessor_config.json",
    ):
        assert (tmp_path / "t" / name).is_file()
    assert json.loads((tmp_path / "t" / "config.json").read_text())["model_type"] == "qwen3_vl"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dtype", "int8"], "dtype 'int8' is not one of"),
        (["--device", "gpu0"], "not a torch device name"),
        (["--attn", "fast"], "--attn: attention 'fast' is not one of"),
        (["--criteria", "motion"], "only applies to video"),
        (["--question", "Is {subject} shown?"], "unknown field"),
        (["--max-frames", "0"], "max_frames must be a positive integer"),
        (["--fps", "-1"], "fps must be a positive number"),
        (["--max-batch-tokens", "0"], "max_batch_tokens must be a positive integer"),
        (["--answer", "Yes", "--negative", "Yes", "--normalize", "yes_no"], "share first token"),
    ],
)
def test_score_bad_options(tiny_dirs, photo_paths, capsys, extra, message):
    code, _, err = run(["score", photo_paths[0], "--prompt", "x", "--model", tiny_dirs["qwen2_5_vl"], *extra], capsys)
    assert code == 2 and message in err


def test_score_bad_model_and_files(tmp_path, photo_paths, tiny_dirs, capsys):
    code, _, err = run(["score", photo_paths[0], "--prompt", "x", "--model", tmp_path / "nowhere"], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "bad.png").write_bytes(b"no")
    code, _, err = run(["score", tmp_path / "bad.png", "--prompt", "x", "--model", tiny_dirs["qwen2_5_vl"]], capsys)
    assert code == 2 and "not a readable image" in err
    code, _, err = run(
        [
            "rerank",
            photo_paths[0].parent,
            "--prompt",
            "x",
            "--model",
            tiny_dirs["qwen2_5_vl"],
            "--mode",
            "pairwise",
            "--reference",
            tmp_path / "bad.png",
            "--quiet",
        ],
        capsys,
    )
    assert code == 2 and "not a readable image" in err
    with pytest.raises(SystemExit):
        main(["score", str(photo_paths[0]), "--prompt", "x", "--cot", "sometimes"])


def subparsers(parser):
    """name -> subparser of an argparse parser."""
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def choices(parser, dest: str):
    """The choices of one flag of a (sub)parser."""
    return next(a.choices for a in parser._actions if a.dest == dest)


def test_parser_is_built_from_the_registry():
    from rewarddance.backend.cli import COMMANDS, build_parser

    names = ["score", "rerank", "serve", "models", "search", "train", "train-rm", "eval-rm", "make-pairs"]
    names += ["tiny-model", "tiny-generator", "sample-photos"]
    assert [c.name for c in COMMANDS] == names
    sub = subparsers(build_parser())
    assert list(sub) == names
    for command in COMMANDS:
        assert sub[command.name].get_default("func") is command.handler


def test_choices_come_from_the_engine_constants():
    from rewarddance.backend.cli import build_parser
    from rewarddance.backend.scoring.config import COT_MODES, NORMALIZATIONS
    from rewarddance.backend.vlm.registry import FAMILIES

    sub = subparsers(build_parser())
    for name in ("score", "rerank"):
        assert tuple(choices(sub[name], "cot")) == COT_MODES == ("none", "answer_first", "reasoning_first")
        assert tuple(choices(sub[name], "normalize")) == NORMALIZATIONS == ("vocab", "yes_no")
    assert list(choices(sub["tiny-model"], "family")) == [f.name for f in FAMILIES]
    assert set(choices(sub["tiny-model"], "family")) == {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl"}


def test_search_resolves_device_and_dtype_with_the_loader(capsys):
    import torch

    from rewarddance.backend.cli.search import dtype_name

    assert [dtype_name(d) for d in (torch.bfloat16, torch.float16, torch.float32)] == ["bf16", "fp16", "fp32"]
    code, _, err = run(["search", "--pipeline", "p", "--prompt", "x", "--dtype", "int8"], capsys)
    assert code == 2 and "dtype 'int8' is not one of auto, bf16, fp16, fp32" in err


def test_rerank_resume_never_reuses_a_row_scored_differently(
    tiny_dirs, gen_dir, tmp_path, photo_paths, capsys, monkeypatch
):
    out = tmp_path / "results.jsonl"
    base = ["rerank", gen_dir, "--out", out, "--quiet", "--model", tiny_dirs["qwen2_5_vl"]]
    assert run(base + ["--prompt", "a cat"], capsys)[0] == 0
    cat_rows = [json.loads(line) for line in out.read_text().splitlines()]

    # another prompt: every row is rescored, and the file holds only the new rows
    code, _, err = run(base + ["--prompt", "a dog", "--resume"], capsys)
    assert code == 0 and "rescoring 4 file(s)" in err
    dog_rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(dog_rows) == 4 and {r["prompt"] for r in dog_rows} == {"a dog"}
    fresh = tmp_path / "fresh.jsonl"
    run(["rerank", gen_dir, "--out", fresh, "--quiet", "--model", tiny_dirs["qwen2_5_vl"], "--prompt", "a dog"], capsys)
    expected = {r["path"]: r["score"] for r in map(json.loads, fresh.read_text().splitlines())}
    assert {r["path"]: r["score"] for r in dog_rows} == pytest.approx(expected, abs=1e-6)
    assert {r["path"]: r["score"] for r in dog_rows} != {r["path"]: r["score"] for r in cat_rows}

    # another model or other scoring settings: refused, naming what changed, and the file is left as it was
    code, _, err = run(
        ["rerank", gen_dir, "--out", out, "--quiet", "--model", tiny_dirs["qwen2_vl"], "--prompt", "a dog", "--resume"],
        capsys,
    )
    assert code == 2 and "model" in err and str(tiny_dirs["qwen2_vl"]) in err and "another --out" in err
    code, _, err = run(base + ["--prompt", "a dog", "--criteria", "aesthetics", "--resume"], capsys)
    assert code == 2 and "criteria" in err
    assert [json.loads(line) for line in out.read_text().splitlines()] == dog_rows

    # a file whose content changed is rescored; the others are kept
    target = next(gen_dir.glob("coffee.png"))
    shutil.copy(photo_paths[4], target)
    code, _, err = run(base + ["--prompt", "a dog", "--resume"], capsys)
    assert code == 0 and "rescoring 1 file(s)" in err
    rows = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(rows) == 4 and rows[str(target)]["sha"] != next(r["sha"] for r in dog_rows if r["path"] == str(target))

    # nothing left to score: the model is not loaded at all
    def no_load(args):
        raise AssertionError("the model was loaded with nothing to score")

    monkeypatch.setattr("rewarddance.backend.cli.scoring.load_reward_model", no_load)
    assert run(base + ["--prompt", "a dog", "--resume"], capsys)[0] == 0

    # a results file of an earlier version (no settings) is refused rather than trusted
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"path": str(target), "score": 0.5, "prompt": "a dog"}) + "\n")
    code, _, err = run(
        [
            "rerank",
            gen_dir,
            "--out",
            old,
            "--quiet",
            "--model",
            tiny_dirs["qwen2_5_vl"],
            "--prompt",
            "a dog",
            "--resume",
        ],
        capsys,
    )
    assert code == 2 and "earlier version" in err
