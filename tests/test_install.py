"""What an install through ComfyUI-Manager gets: requirements.txt in step with pyproject.toml, no folder that shadows
workflows/ in ComfyUI's template browser, no optional package imported at module level (a missing one must never
make the pack import with 0 nodes), and a message naming the install when a feature needs one."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL_MODULES = {"peft", "diffusers", "av", "skimage", "yaml", "ray", "bitsandbytes", "playwright", "flash_attn"}
# ComfyUI serves a pack's templates from the first of these folders it finds; only workflows/ may exist
TEMPLATE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")


def requirement_names(lines: list[str]) -> dict[str, str]:
    """name -> full specifier of requirement lines (comments and blanks dropped)."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out[re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")] = line.replace(" ", "")
    return out


def test_requirements_txt_is_pyproject_plus_peft():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = requirement_names(project["dependencies"])
    peft = next(r for r in project["optional-dependencies"]["train"] if r.startswith("peft"))
    wanted.update(requirement_names([peft]))
    assert requirement_names((ROOT / "requirements.txt").read_text().splitlines()) == wanted
    assert "torch" not in wanted  # ComfyUI's own torch is never replaced


def test_no_folder_shadows_workflows_in_the_template_browser():
    present = [name for name in TEMPLATE_FOLDERS if (ROOT / name).is_dir()]
    assert present == ["workflows"], f"ComfyUI would serve templates from {present[0]}/, not workflows/"
    assert len(list((ROOT / "workflows").glob("*.json"))) >= 9


def module_level_imports(path: Path) -> set[str]:
    """Top-level package names a file imports at module level (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_optional_packages_are_never_imported_at_module_level():
    files = [*ROOT.glob("*.py"), *(ROOT / "backend").rglob("*.py"), *(ROOT / "nodes").rglob("*.py")]
    offenders = {str(f.relative_to(ROOT)): sorted(module_level_imports(f) & OPTIONAL_MODULES) for f in files}
    assert {f: names for f, names in offenders.items() if names} == {}


BLOCKED_IMPORT = """
import importlib, pkgutil, sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` raises ImportError, as when the package is not installed
import rewarddance.backend as backend
for info in pkgutil.walk_packages(backend.__path__, "rewarddance.backend."):
    importlib.import_module(info.name)
print("imported", len(sys.modules))
"""


def test_the_backend_imports_without_any_optional_package():
    import subprocess

    script = BLOCKED_IMPORT.format(blocked=sorted(OPTIONAL_MODULES))
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("imported"), done.stderr[-3000:]


def test_a_missing_optional_package_is_named_with_its_install(monkeypatch):
    from rewarddance.backend.dependencies import MissingDependency, require
    from rewarddance.backend.rl.lora import LoraSpec, add_lora

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingDependency) as raised:
        add_lora(__import__("torch").nn.Linear(2, 2), LoraSpec(2, 2, ["weight"]))
    message = str(raised.value)
    assert "LoRA training needs the peft package" in message and "`pip install peft`" in message
    assert "requirements.txt" in message and "rewarddance[train]" in message
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"needs the av package.*pip install av"):
        require("av", "Reading video files")
