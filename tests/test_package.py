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
    """nodes/ imports ComfyUI and is exercised by tests/test_comfyui.py; here at least every file compiles."""
    import py_compile
    from pathlib import Path

    import rewarddance

    files = sorted((Path(rewarddance.__file__).parent / "nodes").glob("*.py"))
    assert len(files) >= 6
    for path in files:
        py_compile.compile(str(path), doraise=True)
