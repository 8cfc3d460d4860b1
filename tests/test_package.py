"""The repository root is a ComfyUI pack and the pip package `rewarddance`, importable without torch."""

import subprocess
import sys


def test_root_import_does_not_import_torch():
    code = "import sys, rewarddance; assert 'torch' not in sys.modules, 'torch imported'; print(rewarddance.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.1.0"


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "rewarddance", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("score", "rerank", "tiny-model"):
        assert command in out.stdout


def test_comfyui_mappings_present():
    import rewarddance

    assert isinstance(rewarddance.NODE_CLASS_MAPPINGS, dict)
    assert isinstance(rewarddance.NODE_DISPLAY_NAME_MAPPINGS, dict)


def test_backend_exports_resolve():
    from rewarddance import backend

    for name in backend.__all__:
        assert getattr(backend, name) is not None
