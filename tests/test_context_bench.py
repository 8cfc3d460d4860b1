"""bench/context_bench.py at its smallest: every case's engine scores equal the naive loop's; FLOP counting."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import context_bench  # noqa: E402

LINE = re.compile(r"^case=(\w+) (.*)$")


def parse(out: str) -> tuple[dict[str, dict[str, str]], str]:
    """Case lines as {case: {field: value}}, and the last line."""
    lines = out.strip().splitlines()
    cases = {}
    for line in lines:
        match = LINE.match(line)
        if match:
            cases[match.group(1)] = dict(field.split("=", 1) for field in match.group(2).split())
    return cases, lines[-1]


def test_every_case_agrees_on_the_tiny_checkpoint(capsys):
    argv = "--config tiny --device cpu --n 2 --size 56 --examples 1 --reason-tokens 3 --gemm-size 64".split()
    assert context_bench.main(argv) == 0
    cases, last = parse(capsys.readouterr().out)
    assert list(cases) == list(context_bench.CASES)
    assert {name: int(c["judgements"]) for name, c in cases.items()} == dict.fromkeys(context_bench.CASES, 2)
    for name, c in cases.items():
        assert float(c["max_diff"]) <= 1e-4, name
        assert float(c["max_log_diff"]) <= 1e-2, name
        assert c["texts_identical"] == ("yes" if name in context_bench.GENERATING else "-"), name
        assert float(c["engine_gflop_s"]) > 0 and float(c["peak_fraction"]) > 0, name
        assert 0 < float(c["vision_flop_share"]) < 1, name
        rate = float(c["engine_img_s"]) / float(c["naive_img_s"])
        assert rate == pytest.approx(float(c["ratio"]), rel=0.02, abs=0.01), name
    ratios = [float(c["ratio"]) for name, c in cases.items() if name != "pointwise"]
    assert last == f"min_speedup={min(ratios):.2f}"


def test_flop_count_includes_cpu_attention():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert context_bench.counted_flops(lambda: torch.mm(a, b)) == (2 * 8 * 16 * 4, 0)
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    attention = context_bench.counted_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))[0]
    assert attention == 2 * (2 * 1 * 2 * 5 * 7 * 8)  # q @ k^T and weights @ v


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cases", "pairwise,bogus"], "--cases: unknown case(s) bogus; choose from pointwise"),
        (["--n", "0"], "--n must be >= 1"),
        (["--model", "/x", "--config", "tiny"], "either --model or --config"),
    ],
)
def test_bad_options_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit):
        context_bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_disagreement_fails_the_run():
    def measured(diff: float, log_diff: float, texts: bool | None):
        return context_bench.Measurement("few_shot", 2, 1.0, 0.5, diff, log_diff, texts, 10, 2, 1, 0, 1.0)

    assert context_bench.agrees(measured(1e-5, 1e-3, None), fp32=True)
    assert context_bench.agrees(measured(1e-5, 1e-3, True), fp32=True)
    assert not context_bench.agrees(measured(2e-4, 1e-3, None), fp32=True)
    assert not context_bench.agrees(measured(1e-5, 0.1, None), fp32=True)
    assert not context_bench.agrees(measured(1e-5, 1e-3, False), fp32=True)
    assert context_bench.agrees(measured(1e-2, 1.0, False), fp32=False)  # bf16: batched kernels round differently
    assert measured(0, 0, None).ratio == 2.0
