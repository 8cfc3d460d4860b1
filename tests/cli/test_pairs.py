"""Python judges (`load_judge`), the pairing library (`training.labelling`) and `rewarddance make-pairs`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from rewarddance.backend.cli import main
from rewarddance.backend.rewards import PythonJudge, load_judge
from rewarddance.backend.rewards.python_judge import JudgeError
from rewarddance.backend.training.data import load_pairs
from rewarddance.backend.training.labelling import LabelError, pairing, pairs_from_scores, split_by_image

JUDGE = """
import torch

calls = []

def redness(images):
    calls.append(tuple(images.shape))
    return images[..., 0].mean(dim=(1, 2)) - images[..., 2].mean(dim=(1, 2))

def as_list(images):
    return [float(x) for x in images[..., 0].mean(dim=(1, 2))]

def as_numpy(images):
    return images[..., 0].mean(dim=(1, 2)).numpy()

def too_few(images):
    return torch.zeros(len(images) - 1)

def not_finite(images):
    return torch.full((len(images),), float("nan"))

def words(images):
    return ["good"] * len(images)

def crashes(images):
    raise RuntimeError("judge bug")

def grad(images):
    return images.mean(dim=(1, 2, 3))
grad.differentiable = True

threshold = 3
"""


def red_minus_blue(path: Path) -> float:
    """The test judge's score of an image file, computed independently with NumPy."""
    arr = np.asarray(PILImage.open(path).convert("RGB"), dtype=np.float64) / 255.0
    return float(arr[..., 0].mean() - arr[..., 2].mean())


@pytest.fixture
def judge_file(tmp_path):
    path = tmp_path / "judge.py"
    path.write_text(JUDGE)
    return path


@pytest.fixture
def image_dir(tmp_path):
    """12 small PNGs of random red/blue levels (two pairs of them identical, so some scores tie exactly)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = random.Random(0)
    colours = [(rng.randrange(256), 40, rng.randrange(256)) for _ in range(10)] + [(90, 40, 90), (90, 40, 90)]
    for i, colour in enumerate(colours):
        PILImage.new("RGB", (16, 12), colour).save(folder / f"{i:02d}.png")
    return folder


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- load_judge / PythonJudge ----------------------------------------------------------------------------------------
def test_judge_scores_and_converts_outputs(judge_file):
    images = torch.rand(3, 4, 5, 3)
    expected = images[..., 0].mean(dim=(1, 2)) - images[..., 2].mean(dim=(1, 2))
    judge = load_judge(f"{judge_file}:redness")
    assert isinstance(judge, PythonJudge) and judge.differentiable is False
    assert torch.allclose(judge(images), expected)
    for name in ("as_list", "as_numpy"):
        out = load_judge(f"{judge_file}:{name}")(images)
        assert out.dtype == torch.float32 and out.shape == (3,)
        assert torch.allclose(out, images[..., 0].mean(dim=(1, 2)))
    assert judge.submit(images).result().shape == (3,)  # the Reward protocol's submit


def test_differentiable_judge_keeps_the_graph(judge_file):
    judge = load_judge(f"{judge_file}:grad")
    assert judge.differentiable is True
    images = torch.rand(2, 4, 4, 3, requires_grad=True)
    judge(images).sum().backward()
    assert torch.allclose(images.grad, torch.full_like(images, 1 / 48))


def test_judge_from_a_dotted_module(tmp_path, monkeypatch):
    (tmp_path / "my_judges").mkdir()
    (tmp_path / "my_judges" / "__init__.py").write_text("")
    (tmp_path / "my_judges" / "colour.py").write_text(
        "def green(images):\n    return images[..., 1].mean(dim=(1, 2))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = load_judge("my_judges.colour:green")(torch.ones(2, 3, 3, 3) * 0.25)
    assert out.tolist() == [0.25, 0.25]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("{f}", "names no function; pass FILE.py:FUNCTION or package.module:FUNCTION"),
        ("{d}/missing.py:score", "missing.py' does not exist; check the path"),
        ("{f}:nope", "defines no 'nope'; functions there: as_list, as_numpy, crashes, grad, not_finite, redness"),
        ("{f}:threshold", "int object is not callable"),
        ("{f}:", "'' is not a function name"),
        ("no_such_module_xyz:score", "no module named 'no_such_module_xyz'"),
        ("{d}/broken.py:score", "importing it failed (SyntaxError"),
    ],
)
def test_judge_spec_errors_name_the_spec(spec, message, judge_file):
    (judge_file.parent / "broken.py").write_text("def score(images:\n")
    spec = spec.format(f=judge_file, d=judge_file.parent)
    with pytest.raises(JudgeError) as err:
        load_judge(spec)
    assert message in str(err.value) and repr(spec) in str(err.value)


@pytest.mark.parametrize(
    "name,message",
    [
        ("too_few", "returned 1 score(s) for 2 image(s) (shape (1,)); return one score per image"),
        ("not_finite", "returned non-finite scores [nan, nan]"),
        ("words", "returned list, not numbers"),
        ("crashes", "failed on a batch of 2 (RuntimeError: judge bug)"),
    ],
)
def test_judge_output_errors(name, message, judge_file):
    with pytest.raises(JudgeError) as err:
        load_judge(f"{judge_file}:{name}")(torch.rand(2, 4, 4, 3))
    assert message in str(err.value) and f"{judge_file}:{name}" in str(err.value)


# --- labelling library -----------------------------------------------------------------------------------------------
def test_pairing_is_disjoint_per_round_and_never_repeats():
    pairs = pairing(9, 3, random.Random(1))
    assert len(pairs) == 12  # 4 pairs a round (one image sits out), 3 rounds
    for r in range(3):
        round_images = [i for pair in pairs[4 * r : 4 * r + 4] for i in pair]
        assert len(set(round_images)) == 8
    assert len({frozenset(p) for p in pairs}) == 12
    assert pairing(9, 3, random.Random(1)) == pairs  # seeded
    assert len(pairing(3, 10, random.Random(0))) == 3  # only 3 distinct pairs of 3 images exist
    assert pairing(1, 2, random.Random(0)) == []


def test_pairs_from_scores_chooses_the_higher_score_and_marks_ties():
    files = [f"/x/{i}.png" for i in range(6)]
    prompts = ["a", "a", "a", "b", "b", "b"]
    scores = [0.1, 0.5, 0.52, 3.0, -1.0, 2.0]
    pairs = pairs_from_scores(files, prompts, scores, margin=0.05, per_image=2, seed=3)
    score_of = dict(zip(files, scores))
    prompt_of = dict(zip(files, prompts))
    assert len(pairs) == 4
    for p in pairs:
        assert prompt_of[p.chosen] == prompt_of[p.rejected] == p.prompt
        assert score_of[p.chosen] >= score_of[p.rejected]
        assert p.tie == (score_of[p.chosen] - score_of[p.rejected] <= 0.05)
    assert pairs == pairs_from_scores(files, prompts, scores, margin=0.05, per_image=2, seed=3)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(scores=[1.0]), "got 2 files, 2 prompts and 1 scores"),
        (dict(scores=[1.0, float("inf")]), "1 image(s) have no finite score (e.g. /b.png)"),
        (dict(margin=-1), "margin must be a number >= 0"),
        (dict(per_image=0), "pairs per image must be an integer >= 1"),
        (dict(files=["/a.png", "/a.png"]), "a file is listed twice"),
    ],
)
def test_pairs_from_scores_refuses_bad_input(kwargs, message):
    args = dict(files=["/a.png", "/b.png"], prompts=["p", "p"], scores=[1.0, 2.0]) | kwargs
    with pytest.raises(LabelError) as err:
        pairs_from_scores(**args)
    assert message in str(err.value)


def test_split_by_image_holds_out_part_of_each_prompt():
    prompts = ["a"] * 10 + ["b"] * 4
    train, held = split_by_image(prompts, 0.25, seed=0)
    assert not set(train) & set(held) and sorted(train + held) == list(range(14))
    assert sum(prompts[i] == "a" for i in held) == 2 and sum(prompts[i] == "b" for i in held) == 1
    with pytest.raises(LabelError, match="between 0 and 1"):
        split_by_image(prompts, 1.0)


# --- rewarddance make-pairs ------------------------------------------------------------------------------------------
def test_make_pairs_with_a_judge(image_dir, judge_file, tmp_path, capsys):
    out = tmp_path / "data" / "sub" / "pairs.jsonl"
    argv = ["make-pairs", "--images", str(image_dir), "--prompt", "a red square", "--judge", f"{judge_file}:redness"]
    code, printed, _ = run([*argv, "--out", str(out), "--margin", "0.05", "--pairs-per-image", "3"], capsys)
    assert code == 0
    truth = {str(p.resolve()): red_minus_blue(p) for p in image_dir.glob("*.png")}
    pairs = load_pairs(out)
    assert len(pairs) >= 10
    for p in pairs:
        assert p.prompt == "a red square" and not p.tie
        assert truth[p.chosen] - truth[p.rejected] > 0.05
    assert all(r["chosen"].startswith("../../imgs/") for r in rows(out))  # relative to the pairs file
    scores = rows(out.with_name("pairs.scores.jsonl"))
    assert len(scores) == 12
    for r in scores:
        assert r["score"] == pytest.approx(truth[str((out.parent / r["file"]).resolve())], abs=1e-6)
    assert "12 images" in printed and f"written to {out}" in printed and "ties dropped" in printed
    assert "pairs.scores.jsonl" in printed


def test_ties_are_dropped_or_kept(image_dir, judge_file, tmp_path, capsys):
    base = ["make-pairs", "--images", str(image_dir), "--prompt", "p", "--judge", f"{judge_file}:redness"]
    base += ["--margin", "0.3", "--pairs-per-image", "4", "--seed", "2"]
    assert run([*base, "--out", str(tmp_path / "drop.jsonl")], capsys)[0] == 0
    code, printed, _ = run([*base, "--out", str(tmp_path / "keep.jsonl"), "--keep-ties"], capsys)
    assert code == 0
    truth = {str(p.resolve()): red_minus_blue(p) for p in image_dir.glob("*.png")}
    dropped, kept = load_pairs(tmp_path / "drop.jsonl"), load_pairs(tmp_path / "keep.jsonl")
    ties = [p for p in kept if p.tie]
    assert ties and len(kept) == len(dropped) + len(ties)
    assert [p for p in kept if not p.tie] == dropped  # same seed, same pairing
    for p in ties:
        assert abs(truth[p.chosen] - truth[p.rejected]) <= 0.3
    assert f"{len(ties)} ties kept" in printed
    assert all(rows(tmp_path / "keep.jsonl")[i].get("tie") is True for i, p in enumerate(kept) if p.tie)


def test_eval_split_has_no_image_overlap(image_dir, judge_file, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    argv = ["make-pairs", "--images", str(image_dir), "--prompt", "p", "--judge", f"{judge_file}:redness"]
    code, printed, _ = run([*argv, "--out", str(out), "--eval-fraction", "0.34", "--pairs-per-image", "3"], capsys)
    assert code == 0
    train, held = load_pairs(out), load_pairs(tmp_path / "pairs.eval.jsonl")
    train_images = {f for p in train for f in (p.chosen, p.rejected)}
    held_images = {f for p in held for f in (p.chosen, p.rejected)}
    assert train and held and not train_images & held_images
    splits = {r["file"]: r["split"] for r in rows(tmp_path / "pairs.scores.jsonl")}
    assert sum(s == "eval" for s in splits.values()) == 4  # round(12 * 0.34)
    assert {str((tmp_path / f).resolve()) for f, s in splits.items() if s == "eval"} >= held_images
    assert f"written to {tmp_path / 'pairs.eval.jsonl'}" in printed


def test_judge_is_called_in_batches_of_one_size(tmp_path, judge_file, capsys, monkeypatch):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(7):
        PILImage.new("RGB", (8, 8) if i < 5 else (10, 6), (i * 30, 0, 0)).save(folder / f"{i}.png")
    monkeypatch.syspath_prepend(str(judge_file.parent))
    import judge  # the same module object the spec "judge:redness" loads

    argv = ["make-pairs", "--images", str(folder), "--prompt", "p", "--judge", "judge:redness", "--batch-size", "2"]
    assert run([*argv, "--out", str(tmp_path / "p.jsonl")], capsys)[0] == 0
    assert judge.calls == [(2, 8, 8, 3), (2, 8, 8, 3), (1, 8, 8, 3), (2, 6, 10, 3)]


def write_candidates(folder: Path, with_scores: bool = True) -> dict[str, float]:
    """A search --save-candidates folder: 8 images, two prompts, scores in candidates.jsonl."""
    folder.mkdir()
    lines, scores = [], {}
    for i in range(8):
        name = f"{i:05d}.png"
        PILImage.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / name)
        scores[name] = float(i % 4) / 4
        row = {"file": name, "prompt": "a fox" if i < 4 else "a cat", "round": 0, "index": i, "seed": 0}
        lines.append(json.dumps(row | ({"score": scores[name]} if with_scores else {})))
    (folder / "candidates.jsonl").write_text("\n".join(lines) + "\n")
    return scores


def test_candidates_with_their_own_scores(tmp_path, capsys):
    scores = write_candidates(tmp_path / "cands")
    out = tmp_path / "pairs.jsonl"
    argv = ["make-pairs", "--candidates", str(tmp_path / "cands"), "--scores", "candidates", "--out", str(out)]
    assert run([*argv, "--pairs-per-image", "3"], capsys)[0] == 0
    pairs = load_pairs(out)
    assert 8 <= len(pairs) <= 12  # up to 2 disjoint pairs per prompt per round, 3 rounds, 2 prompts
    for p in pairs:
        chosen, rejected = Path(p.chosen).name, Path(p.rejected).name
        assert scores[chosen] > scores[rejected]
        assert (
            p.prompt == ("a fox" if int(chosen[:5]) < 4 else "a cat") == ("a fox" if int(rejected[:5]) < 4 else "a cat")
        )


def test_scores_file_of_human_ratings(tmp_path, capsys):
    write_candidates(tmp_path / "cands", with_scores=False)
    ratings = tmp_path / "ratings.jsonl"
    ratings.write_text("".join(json.dumps({"file": f"{i:05d}.png", "score": -i}) + "\n" for i in range(8)))
    out = tmp_path / "pairs.jsonl"
    argv = ["make-pairs", "--candidates", str(tmp_path / "cands"), "--scores", str(ratings), "--out", str(out)]
    code, printed, _ = run(argv, capsys)
    assert code == 0 and "scores -7 .. 0" in printed
    for p in load_pairs(out):
        assert int(Path(p.chosen).stem) < int(Path(p.rejected).stem)
    # the scores file written next to the pairs is itself a valid --scores input
    again = ["make-pairs", "--candidates", str(tmp_path / "cands"), "--scores", str(tmp_path / "pairs.scores.jsonl")]
    assert run([*again, "--out", str(tmp_path / "again.jsonl")], capsys)[0] == 0
    assert load_pairs(tmp_path / "again.jsonl") == load_pairs(out)


def test_synthetic_set_still_works_without_a_source(tmp_path, capsys):
    assert main(["make-pairs", "--out", str(tmp_path / "data"), "--n", "20", "--size", "32"]) == 0
    train, held = load_pairs(tmp_path / "data" / "pairs.jsonl"), load_pairs(tmp_path / "data" / "eval.jsonl")
    assert len(train) == 18 and len(held) == 2  # the default --eval-fraction 0.1 is held out in eval.jsonl
    assert not {p.chosen for p in train} & {p.chosen for p in held}
    assert main(["make-pairs", "--out", str(tmp_path / "all"), "--n", "4", "--size", "32", "--eval-fraction", "0"]) == 0
    assert len(load_pairs(tmp_path / "all" / "pairs.jsonl")) == 4 and not (tmp_path / "all" / "eval.jsonl").exists()
    assert main(["make-pairs", "--out", str(tmp_path / "x"), "--n", "4", "--eval-fraction", "1"]) == 2


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--images", "{imgs}", "--judge", "{judge}:redness"], '--images needs --prompt "TEXT"'),
        (["--images", "{imgs}", "--prompt", "p"], "pass one source of scores"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:redness", "--scores", "s.jsonl"], "one source"),
        (["--images", "{imgs}", "--candidates", "{imgs}", "--scores", "candidates"], "not both"),
        (["--images", "{imgs}", "--prompt", "p", "--scores", "candidates"], "it needs --candidates DIR"),
        (["--candidates", "{imgs}", "--scores", "candidates"], "has no candidates.jsonl"),
        (["--candidates", "{imgs}", "--prompt", "p", "--scores", "candidates"], "--prompt is for --images"),
        (["--images", "{tmp}/nowhere", "--prompt", "p", "--judge", "{judge}:redness"], "is not a directory"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:nope"], "--judge: judge"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:redness", "--margin", "-1"], "--margin must be"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:redness", "--margin", "nan"], "--margin must be"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:too_few"], "returned 7 score(s) for 8"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:redness", "--pairs-per-image", "0"], "at least 1"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:redness", "--eval-fraction", "1"], "exclusive"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:redness", "--eval-fraction", "0.05"], "larger"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:redness", "--eval-fraction", "0.95"], "smaller"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:redness", "--batch-size", "0"], "--batch-size"),
        (["--images", "{imgs}", "--prompt", "p", "--scores", "{tmp}/none.jsonl"], "none.jsonl' does not exist"),
        (["--images", "{imgs}", "--prompt", "p", "--scores", "{tmp}/part.jsonl"], "11 image(s) have no score"),
        (["--images", "{imgs}", "--prompt", "p", "--scores", "{tmp}/typo.jsonl"], "'zz.png' is not one of the images"),
        (["--images", "{imgs}", "--prompt", "p", "--scores", "{tmp}/bad.jsonl"], 'needs "file" (a string) and "score"'),
        (["--images", "{imgs}", "--prompt", "p", "--scores", "{tmp}/twice.jsonl"], "is scored twice"),
        (["--images", "{imgs}", "--prompt", "p", "--scores", "{tmp}/same.jsonl"], "all 6 pairs are ties"),
        (["--images", "{imgs}", "--prompt", "p", "--judge", "{judge}:redness", "--n", "3"], "only for the synthetic"),
        (["--margin", "0.1"], "--margin: only for scored images"),
    ],
)
def test_make_pairs_refuses_bad_flags(extra, message, image_dir, judge_file, tmp_path, capsys):
    names = sorted(p.name for p in image_dir.glob("*.png"))
    for name, lines in {
        "part": [{"file": names[0], "score": 1}],
        "typo": [{"file": "zz.png", "score": 1}],
        "bad": [{"file": names[0], "score": "high"}],
        "twice": [{"file": names[0], "score": 1}, {"file": names[0], "score": 2}],
        "same": [{"file": n, "score": 1} for n in names],
    }.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    fill = dict(imgs=image_dir, judge=judge_file, tmp=tmp_path)
    out = tmp_path / "o" / "pairs.jsonl"
    code, _, err = run(["make-pairs", *[e.format(**fill) for e in extra], "--out", str(out)], capsys)
    assert code == 2 and message in err, err
    assert err.startswith("rewarddance: error: ") and "Traceback" not in err
    assert not out.exists()
    assert out.with_name("pairs.scores.jsonl").exists() == ("are ties" in message)  # scores kept when pairing fails


def test_out_must_be_a_jsonl_file(image_dir, judge_file, tmp_path, capsys):
    argv = ["make-pairs", "--images", str(image_dir), "--prompt", "p", "--judge", f"{judge_file}:redness"]
    code, _, err = run([*argv, "--out", str(tmp_path / "pairs.csv")], capsys)
    assert code == 2 and "pass a .jsonl file for the pairs" in err


def test_judge_refuses_videos(tmp_path, judge_file, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    PILImage.new("RGB", (8, 8)).save(folder / "a.png")
    frames = [PILImage.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(folder / "b.gif", save_all=True, append_images=frames[1:])
    argv = ["make-pairs", "--images", str(folder), "--prompt", "p", "--judge", f"{judge_file}:redness"]
    code, _, err = run([*argv, "--out", str(tmp_path / "p.jsonl")], capsys)
    assert code == 2 and "1 input(s) are videos (e.g. b.gif)" in err
