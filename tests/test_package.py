"""The repository root is a ComfyUI pack and the pip package `rewarddance`, importable without torch."""

import subprocess
import sys


def test_root_import_does_not_import_torch():
    code = (
        "import sys, rewarddance; assert 'torch' not in sys.modules, 'torch imported'; print(rewarddance.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.1.0"


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "rewarddance", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("score", "rerank", "serve", "tiny-model"):
        assert command in out.stdout


def test_comfyui_v3_entry_point_without_v1_mappings():
    """ComfyUI takes the V1 path (and ignores comfy_entrypoint) when NODE_CLASS_MAPPINGS exists at all."""
    import inspect
    from pathlib import Path

    import rewarddance

    assert not hasattr(rewarddance, "NODE_CLASS_MAPPINGS")
    assert inspect.iscoroutinefunction(rewarddance.comfy_entrypoint)
    assert (Path(rewarddance.__file__).parent / rewarddance.WEB_DIRECTORY / "rewarddance.js").is_file()


def test_backend_exports_resolve():
    from rewarddance import backend

    for name in backend.__all__:
        assert getattr(backend, name) is not None


def test_node_modules_compile():
    """nodes/ imports ComfyUI and is exercised by tests/test_comfyui.py and tests/test_comfyui_inprocess.py; here at least every file compiles."""
    import py_compile
    from pathlib import Path

    import rewarddance

    files = sorted((Path(rewarddance.__file__).parent / "nodes").glob("*.py"))
    assert len(files) >= 6
    for path in files:
        py_compile.compile(str(path), doraise=True)


def _relative_imports(path, root):
    """(importing unit, imported unit) for every relative import in a file, at any depth of the file; a unit is a
    backend package (backend.rl), a ground-floor module (backend.media) or a nodes module (nodes.search)."""
    import ast

    parts = list(path.relative_to(root).with_suffix("").parts)
    package = parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = base + (node.module.split(".") if node.module else [])
            names = [target + [a.name] for a in node.names] if not node.module else [target]
            for t in names:
                yield ".".join(parts[:2]), ".".join(t[:2])


def _arrows(root):
    arrows = set()
    for folder in ("backend", "nodes"):
        for path in (root / folder).rglob("*.py"):
            arrows |= {(a, b) for a, b in _relative_imports(path, root) if a != b}
    return arrows


def test_no_import_arrow_runs_sideways_or_up():
    """Shared pieces live below their users: generators, rewards, search, rl, training and scoring import none of
    their siblings (or anything above them), and no node feature module imports another."""
    from pathlib import Path

    import rewarddance

    arrows = _arrows(Path(rewarddance.__file__).parent)
    assert ("backend.search", "backend.rewards") in arrows and ("backend.rl", "backend.rewards") in arrows
    forbidden = {
        "backend.generators": {"training", "search", "rl", "rewards", "server", "cli", "reward_model"},
        "backend.rewards": {"generators", "training", "search", "rl", "server", "cli"},
        "backend.search": {"training", "rl", "server", "cli"},
        "backend.rl": {"training", "search", "server", "cli"},
        "backend.training": {"generators", "search", "rl", "rewards", "server", "cli"},
        "backend.scoring": {"reward_model", "generators", "training", "search", "rl", "rewards", "server", "cli"},
    }
    features = {"nodes.loaders", "nodes.scoring", "nodes.selection", "nodes.search", "nodes.rl_training"}
    bad = [(a, b) for a, b in arrows if b.split(".")[-1] in forbidden.get(a, ()) and b.startswith("backend.")]
    bad += [(a, b) for a, b in arrows if a in features and b in features]
    assert not bad, f"sideways or upward imports: {sorted(bad)}"


def test_scoring_config_does_not_import_prompts():
    """The config/prompts cycle is gone: ScoringConfig reads the criteria presets from scoring/criteria.py."""
    code = (
        "import sys; from rewarddance.backend.scoring.config import ScoringConfig; "
        "assert 'rewarddance.backend.scoring.prompts' not in sys.modules; "
        "print(ScoringConfig().with_overrides(criteria='alignment, text').criteria)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "('alignment', 'text')"


def test_every_node_class_is_registered_once_with_a_prefixed_id():
    """nodes/__init__.py's NODES lists every ComfyNode class defined in nodes/, and each node_id is unique and
    starts with RewardDance (ids are stored in saved workflows); read from the source, since nodes/ needs ComfyUI."""
    import ast
    from pathlib import Path

    import rewarddance

    folder = Path(rewarddance.__file__).parent / "nodes"
    defined, ids = set(), []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
            if any(ast.unparse(b) == "io.ComfyNode" for b in cls.bases):
                defined.add(cls.name)
                ids += [
                    kw.value.value
                    for call in ast.walk(cls)
                    if isinstance(call, ast.Call) and ast.unparse(call.func) == "io.Schema"
                    for kw in call.keywords
                    if kw.arg == "node_id"
                ]
    init = ast.parse((folder / "__init__.py").read_text())
    listed = next(
        [e.id for e in n.value.elts]
        for n in init.body
        if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", None) == "NODES"
    )
    assert len(defined) >= 10 and sorted(listed) == sorted(defined) and len(set(listed)) == len(listed)
    assert len(ids) == len(defined) == len(set(ids)) and all(i.startswith("RewardDance") for i in ids)
