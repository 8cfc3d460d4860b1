"""The command line's result-file formats (backend/cli/io.py), without argparse: prompts files, result rows,
media listing and the image / animated-image writer."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image as PILImage

from rewarddance.backend.cli.errors import CLIError
from rewarddance.backend.cli.io import (
    append_rows,
    list_media,
    read_done,
    read_prompts_file,
    read_results,
    rewrite_rows,
    write_search_output,
)

SETTINGS = json.dumps({"model": "m", "criteria": ["alignment", "aesthetics"]}, sort_keys=True)
ROWS = [
    {"path": "a/1.png", "score": 0.25, "prompt": "a cat, sitting", "sha": "0123456789abcdef", "settings": SETTINGS},
    {"path": "b/2.png", "score": 0.875, "prompt": 'say "hi"', "sha": "fedcba9876543210", "settings": SETTINGS},
]


def test_jsonl_rows_round_trip_and_skip_a_cut_line(tmp_path):
    out = tmp_path / "deep" / "results.jsonl"
    append_rows(out, ROWS[:1])
    append_rows(out, ROWS[1:])
    assert read_done(out) == ROWS
    with out.open("a", encoding="utf-8") as fh:
        fh.write('{"path": "c/3.png", "sco')  # an interrupted run's last line
    assert read_done(out) == ROWS
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3


def test_csv_rows_round_trip_with_one_header(tmp_path):
    out = tmp_path / "results.csv"
    append_rows(out, [{**ROWS[0], "extra": "dropped"}])
    append_rows(out, ROWS[1:])
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path,score,prompt,sha,settings" and sum(line.startswith("path,") for line in lines) == 1
    assert read_done(out) == ROWS  # scores come back as floats, quoted commas and quotes intact


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_rewrite_rows_replaces_the_file(tmp_path, suffix):
    out = tmp_path / f"results{suffix}"
    append_rows(out, ROWS)
    rewrite_rows(out, ROWS[1:])
    assert read_done(out) == ROWS[1:]
    rewrite_rows(out, [])
    assert read_done(out) == [] and not (tmp_path / f"results.tmp{suffix}").exists()


def test_rows_without_output_or_rows_write_nothing(tmp_path):
    out = tmp_path / "results.jsonl"
    append_rows(None, ROWS)
    append_rows(out, [])
    assert not out.exists()
    assert read_done(None) == [] and read_done(out) == []


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_prompts_json_object_values_become_strings(tmp_path):
    path = write(tmp_path, "p.json", json.dumps({"a.png": "a cat", "b": 3}))
    assert read_prompts_file(path) == {"a.png": "a cat", "b": "3"}


def test_prompts_jsonl_skips_blank_lines(tmp_path):
    path = write(tmp_path, "p.JSONL", '{"file": "a.png", "prompt": "x"}\n\n  \n{"file": 7, "prompt": "y"}\n')
    assert read_prompts_file(path) == {"a.png": "x", "7": "y"}


def test_prompts_csv_header_quotes_and_blank_rows(tmp_path):
    text = 'file,prompt\n"a.png","a cat, sitting"\n\nb.png,dog,ignored third column\nfile,prompt\n'
    assert read_prompts_file(write(tmp_path, "p.csv", text)) == {
        "a.png": "a cat, sitting",
        "b.png": "dog",
        "file": "prompt",  # a header is only skipped on the first line
    }


def test_prompts_tsv_and_txt(tmp_path):
    assert read_prompts_file(write(tmp_path, "p.tsv", "a.png\ta cat, sitting\n")) == {"a.png": "a cat, sitting"}
    assert read_prompts_file(write(tmp_path, "p.txt", "a.png,a cat\n")) == {"a.png": "a cat"}  # read as CSV


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("p.json", '["a.png", "x"]', "a .json file must be an object mapping file names to prompts"),
        ("p.json", "{not json", "invalid JSON"),
        ("p.jsonl", '{"file": "a.png", "prompt": "x"}\n{"file": "b.png"}\n', 'p.jsonl line 2: each line needs "file"'),
        ("p.jsonl", '{"file": "a.png", "prompt": "x"}\n{oops\n', "invalid JSON"),
        ("p.csv", "a.png,x\nlonely\n", "p.csv line 2: expected two columns, file and prompt"),
    ],
)
def test_prompts_file_errors_name_the_file_and_line(tmp_path, name, text, message):
    with pytest.raises(CLIError, match="--prompts") as info:
        read_prompts_file(write(tmp_path, name, text))
    assert message in str(info.value)


def test_prompts_file_missing(tmp_path):
    with pytest.raises(CLIError, match="does not exist"):
        read_prompts_file(tmp_path / "nowhere.csv")


def test_list_media_recursive_sorted_by_extension(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.mp4", "sub/d.webp", "notes.txt", "e.json"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.png").mkdir()  # a folder with an image suffix is not a file
    assert [p.relative_to(tmp_path).as_posix() for p in list_media(tmp_path)] == [
        "a.JPG",
        "b.png",
        "sub/c.mp4",
        "sub/d.webp",
    ]
    with pytest.raises(CLIError, match="is not a directory"):
        list_media(tmp_path / "b.png")


def test_write_image_clamps_and_rounds(tmp_path):
    image = torch.zeros(6, 5, 3)
    image[0, 0] = torch.tensor([2.0, -1.0, 0.5])
    out = tmp_path / "new" / "best.png"
    write_search_output(image, str(out))
    with PILImage.open(out) as img:
        assert img.size == (5, 6) and img.mode == "RGB"
        assert img.getpixel((0, 0)) == (255, 0, 128) and img.getpixel((4, 5)) == (0, 0, 0)


def test_write_video_as_animated_webp(tmp_path):
    frames = torch.stack([torch.full((8, 10, 3), v) for v in (0.0, 0.5, 1.0)])
    out = tmp_path / "best.webp"
    write_search_output(frames, str(out))
    with PILImage.open(out) as img:
        assert img.format == "WEBP" and img.n_frames == 3 and img.size == (10, 8)
        assert img.is_animated and img.info["loop"] == 0
        img.seek(2)
        assert img.convert("RGB").getpixel((5, 4))[0] > 200  # the last frame is the white one
        assert img.info["duration"] == 125 and img.info["timestamp"] == 250  # 8 fps (known once a frame is loaded)


# --- what --resume trusts (issue 16, item 8) ----------------------------------------------------------------------
def test_read_results_drops_a_jsonl_row_cut_short_or_glued(tmp_path):
    out = tmp_path / "results.jsonl"
    append_rows(out, ROWS)
    whole = out.read_text(encoding="utf-8")
    out.write_text(whole + json.dumps(ROWS[0])[:30] + json.dumps(ROWS[1]) + "\n" + json.dumps(ROWS[0])[:-1])
    assert read_results(out) == (ROWS, 2)  # the glued line and the torn tail
    out.write_text(whole + json.dumps(ROWS[0]))  # whole JSON, but the line end is missing: not trusted
    assert read_results(out) == (ROWS, 1)


@pytest.mark.parametrize(
    "bad",
    [
        {"score": "0.5x"},
        {"score": True},
        {"score": None},
        {"path": ""},
        {"settings": "{not json"},
        {"settings": "[1]"},
    ],
)
def test_read_results_drops_rows_that_are_not_complete(tmp_path, bad):
    out = tmp_path / "results.jsonl"
    append_rows(out, [ROWS[0], {**ROWS[1], **bad}])
    assert read_results(out) == ([ROWS[0]], 1)


def test_read_results_csv_checks_line_ends_and_field_counts(tmp_path):
    out = tmp_path / "results.csv"
    append_rows(out, ROWS)
    whole = out.read_bytes().decode("utf-8")
    cut_number = f"{ROWS[0]['path']},1.99371"  # a true 1.99371e-05 cut before its exponent
    out.write_text(whole + cut_number, encoding="utf-8", newline="")
    assert read_results(out) == (ROWS, 1)
    out.write_text(whole + cut_number + "\r\n", encoding="utf-8", newline="")  # a whole line with missing fields
    assert read_results(out) == (ROWS, 1)
    out.write_text(whole + whole.splitlines()[1][:-3], encoding="utf-8", newline="")  # cut inside settings
    assert read_results(out) == (ROWS, 1)
    no_sha = whole.replace(ROWS[1]["sha"], "")
    out.write_text(no_sha, encoding="utf-8", newline="")
    assert read_results(out) == ([ROWS[0], {**ROWS[1], "sha": None}], 0)  # kept as a row whose sha matches nothing


def test_read_results_refuses_a_file_that_is_not_ours(tmp_path):
    out = tmp_path / "results.csv"
    out.write_text("name,value\r\na,1\r\n")
    with pytest.raises(CLIError, match="is not a rerank results file"):
        read_results(out)


def test_append_rows_is_one_synced_write_per_call(tmp_path, monkeypatch):
    from rewarddance.backend import run_log

    synced, real = [], run_log.os.fsync
    monkeypatch.setattr(run_log.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    out = tmp_path / "results.csv"
    append_rows(out, ROWS)
    append_rows(out, ROWS[:1])
    assert len(synced) == 2 and out.read_bytes().endswith(b"\r\n") and len(read_done(out)) == 3
