"""Issue 16 (items 8, 11): `rerank`'s output files. --sheet / --out never overwrite an input nor, without
--overwrite, any existing file; --resume after a row cut short (JSONL, or CSV cut inside the path or mid-number)
drops it and rescores its file, never trusting it; appends are whole lines; a full disk is one line naming the
file, with the rows scored so far kept."""

from __future__ import annotations

import csv
import errno
import json
import shutil

import pytest
from PIL import Image as PILImage

from rewarddance.backend.cli import io as cli_io
from rewarddance.backend.cli import main


@pytest.fixture()
def photos(tmp_path, photo_paths):
    d = tmp_path / "photos"
    d.mkdir()
    for p in photo_paths[:4]:
        shutil.copy(p, d / p.name)
    return d


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def rerank(photos, tiny_dirs, *extra):
    return ["rerank", photos, "--prompt", "a cat", "--model", tiny_dirs["qwen2_5_vl"], "--quiet", *extra]


def no_model(monkeypatch):
    """Fail the test if the command loads a model (a refusal must come before any work)."""

    def refuse(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("rewarddance.backend.cli.scoring.load_reward_model", refuse)


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def csv_rows(path):
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- never overwrite an input, nor an existing file without --overwrite --------------------------------------------
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_sheet_never_overwrites_an_input_image(photos, tiny_dirs, capsys, monkeypatch, overwrite):
    target = sorted(photos.glob("*.png"))[0]
    before = target.read_bytes()
    no_model(monkeypatch)
    code, _, err = run(rerank(photos, tiny_dirs, "--sheet", target, *overwrite), capsys)
    assert code == 2 and "is one of the images being ranked" in err and "never overwritten" in err
    assert target.read_bytes() == before


def test_outputs_never_replace_the_reference_or_the_prompts_file(photos, tiny_dirs, tmp_path, capsys, monkeypatch):
    no_model(monkeypatch)
    reference = sorted(photos.glob("*.png"))[1]
    ref_copy = tmp_path / "ref.png"
    shutil.copy(reference, ref_copy)
    args = rerank(photos, tiny_dirs, "--mode", "pairwise", "--reference", ref_copy, "--sheet", ref_copy, "--overwrite")
    code, _, err = run(args, capsys)
    assert code == 2 and "--sheet" in err and "is an input of this command" in err
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"file": reference.name, "prompt": "a cat"}) + "\n")
    before = prompts.read_bytes()
    code, _, err = run(["rerank", photos, "--prompts", prompts, "--out", prompts, "--overwrite"], capsys)
    assert code == 2 and "--out" in err and "is an input of this command" in err and prompts.read_bytes() == before


def test_an_existing_sheet_is_replaced_only_with_overwrite(photos, tiny_dirs, tmp_path, capsys, monkeypatch):
    sheet = tmp_path / "notes.png"
    PILImage.new("RGB", (7, 7), (255, 0, 0)).save(sheet)
    before = sheet.read_bytes()
    with monkeypatch.context() as m:
        no_model(m)
        code, _, err = run(rerank(photos, tiny_dirs, "--sheet", sheet), capsys)
    assert code == 2 and "notes.png' exists; pass --overwrite" in err and sheet.read_bytes() == before
    code, out, _ = run(rerank(photos, tiny_dirs, "--sheet", sheet, "--top-k", 2, "--overwrite"), capsys)
    with PILImage.open(sheet) as img:
        assert code == 0 and img.size == (512, 256) and "contact sheet" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.png", "photos"]  # no temporary file left


def test_an_existing_out_is_replaced_only_with_overwrite(photos, tiny_dirs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results.jsonl"
    out.write_text('{"mine": "keep me"}\n')
    with monkeypatch.context() as m:
        no_model(m)
        code, _, err = run(rerank(photos, tiny_dirs, "--out", out), capsys)
    assert code == 2 and "pass --resume to continue it, --overwrite to replace it" in err
    assert out.read_text() == '{"mine": "keep me"}\n'
    code, _, _ = run(rerank(photos, tiny_dirs, "--out", out, "--overwrite"), capsys)
    rows = jsonl(out)
    assert code == 0 and len(rows) == 4 and all(set(r) == set(cli_io.ROW_FIELDS) for r in rows)


def test_resume_refuses_a_file_that_is_not_a_results_file(photos, tiny_dirs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results.jsonl"
    out.write_text('{"mine": "keep me"}\n')
    no_model(monkeypatch)
    code, _, err = run(rerank(photos, tiny_dirs, "--out", out, "--resume"), capsys)
    assert code == 2 and "is not a rerank results file" in err and out.read_text() == '{"mine": "keep me"}\n'


# --- resume after a row cut short ---------------------------------------------------------------------------------
def test_jsonl_resume_after_a_torn_last_line_rescores_that_file(photos, tiny_dirs, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    assert run(rerank(photos, tiny_dirs, "--out", out), capsys)[0] == 0
    full = jsonl(out)
    text = out.read_text()
    out.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + json.dumps(full[-1])[:40])  # cut mid-row
    code, _, err = run(rerank(photos, tiny_dirs, "--out", out, "--resume"), capsys)
    assert code == 0 and "dropped 1 incomplete row(s)" in err
    rows = jsonl(out)  # every line whole: the next row was not glued onto the torn one
    assert [r["path"] for r in rows] == [r["path"] for r in full]
    assert rows[-1]["score"] == pytest.approx(full[-1]["score"], abs=1e-6) and rows[-1]["sha"] == full[-1]["sha"]


@pytest.mark.parametrize("cut", ["inside the path", "mid-number", "lost its sha"])
def test_csv_resume_validates_every_row_it_trusts(photos, tiny_dirs, tmp_path, capsys, cut):
    out = tmp_path / "results.csv"
    assert run(rerank(photos, tiny_dirs, "--out", out), capsys)[0] == 0
    full = csv_rows(out)
    lines = out.read_bytes().decode("utf-8").split("\r\n")
    last = full[-1]
    if cut == "inside the path":
        lines[-2] = last["path"][: len(last["path"]) // 2]
        text = "\r\n".join(lines[:-1])  # no line end: the crash came mid-path
    elif cut == "mid-number":
        lines[-2] = f"{last['path']},{'1.99371'}"  # e.g. 1.99371e-05 cut before its exponent: never ranked #1
        text = "\r\n".join(lines[:-1])
    else:  # a complete row whose sha is gone is not trusted either
        lines[-2] = lines[-2].replace(last["sha"], "")
        text = "\r\n".join(lines)
    out.write_text(text, encoding="utf-8", newline="")
    code, stdout, err = run(rerank(photos, tiny_dirs, "--out", out, "--resume"), capsys)
    said = "rescoring 1 file(s)" if cut == "lost its sha" else "dropped 1 incomplete row(s)"
    assert code == 0 and said in err
    rows = csv_rows(out)
    assert [r["path"] for r in rows] == [r["path"] for r in full]
    assert float(rows[-1]["score"]) == pytest.approx(float(last["score"]), abs=1e-6)
    assert rows[-1]["sha"] == last["sha"] and all(len(r) == len(cli_io.ROW_FIELDS) for r in rows)
    best = max(full, key=lambda r: float(r["score"]))
    assert stdout.splitlines()[0].split()[-1] == best["path"]  # the torn 1.99371 is not ranked at all


# --- appends and a full disk --------------------------------------------------------------------------------------
def test_appends_are_whole_lines_one_write_per_chunk(photos, tiny_dirs, tmp_path, capsys, monkeypatch):
    writes = []
    real = cli_io.append_text

    def recording(path, text):
        writes.append(text)
        real(path, text)

    monkeypatch.setattr(cli_io, "append_text", recording)
    monkeypatch.setattr("rewarddance.backend.cli.scoring.CHUNK", 3)
    out = tmp_path / "results.csv"
    assert run(rerank(photos, tiny_dirs, "--out", out), capsys)[0] == 0
    assert len(writes) == 2 and all(w.endswith("\r\n") for w in writes)  # 4 files in chunks of 3: two writes
    assert writes[0].startswith("path,score,prompt,sha,settings\r\n") and len(csv_rows(out)) == 4


def test_disk_full_while_writing_results_is_one_line_and_resume_finishes(
    photos, tiny_dirs, tmp_path, capsys, monkeypatch
):
    real, calls = cli_io.append_text, []

    def full_on_second(path, text):
        calls.append(text)
        if len(calls) == 2:
            real(path, text[:25])  # part of the chunk made it
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(cli_io, "append_text", full_on_second)
    monkeypatch.setattr("rewarddance.backend.cli.scoring.CHUNK", 2)
    out = tmp_path / "results.jsonl"
    code, _, err = run(rerank(photos, tiny_dirs, "--out", out), capsys)
    line = [x for x in err.splitlines() if x.startswith("rewarddance")]
    assert code == 2 and len(line) == 1 and "results.jsonl': no space left on device" in line[0]
    assert "the rows scored so far are kept" in line[0] and "--resume" in line[0]
    monkeypatch.setattr(cli_io, "append_text", real)  # space was freed
    code, _, err = run(rerank(photos, tiny_dirs, "--out", out, "--resume"), capsys)
    assert code == 0 and "dropped 1 incomplete row(s)" in err and len(jsonl(out)) == 4


def test_disk_full_while_writing_the_sheet_keeps_the_old_one(photos, tiny_dirs, tmp_path, capsys, monkeypatch):
    sheet = tmp_path / "best.png"
    PILImage.new("RGB", (5, 5)).save(sheet)
    before = sheet.read_bytes()

    def no_space(self, fh, *args, **kwargs):
        fh.write(b"\x89PNG half")  # part of the image made it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PILImage.Image, "save", no_space)
    out = tmp_path / "r.jsonl"
    code, _, err = run(rerank(photos, tiny_dirs, "--sheet", sheet, "--overwrite", "--out", out), capsys)
    assert code == 2 and "best.png': no space left on device; the scores are in --out" in err
    assert sheet.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "best.png",
        "photos",
        "r.jsonl",
    ]
