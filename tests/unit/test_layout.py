"""The house rules the layout promises: imports point one way, the live path imports nothing offline,
only consumers/ talks to Kafka, and every error derives from the one root."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDER = ("schemas", "models", "streaming", "consumers")  # each may import only those before it
LIVE = (
    "streaming.extract", "streaming.session", "streaming.analyzer", "streaming.lifecycle",
    "streaming.tensors", "streaming.pipeline", "streaming.snapshot", "consumers.engine",
    "consumers.worker",
)  # fmt: skip


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ORDER)
def test_imports_point_one_way(package):
    allowed = set(ORDER[: ORDER.index(package) + 1])
    bad = []
    for path in _modules(package):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ORDER and top not in allowed:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad


@pytest.mark.parametrize("package", ["schemas", "models", "streaming"])
def test_only_consumers_talk_to_kafka_or_run_an_event_loop(package):
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name in _imports(path)
        if name.split(".")[0] in ("aiokafka", "asyncio")
    ]
    assert not bad


def test_live_modules_import_nothing_offline():
    """Importing what a worker runs loads no offline module (training, evaluation, synthesis)."""
    code = (
        "import sys, importlib\n"
        f"for m in {LIVE!r}: importlib.import_module(m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    offline = [
        m
        for m in loaded.stdout.split()
        if m.startswith(
            ("streaming.offline", "streaming.synth", "models.distill", "models.teacher.efficientnet")
        )
    ]
    assert offline == []
    assert "streaming.extract" in loaded.stdout.split()  # the check did load the live path


def test_every_error_derives_from_the_root_and_is_in_the_tree():
    """One root error type, one errors.py per package, every class named in the tree docstring."""
    from schemas import errors as root

    tree = inspect.getdoc(root) or ""
    for package in ORDER:
        module = importlib.import_module(f"{package}.errors")
        for name, cls in vars(module).items():
            if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == module.__name__:
                assert issubclass(cls, root.GopwatchError), name
                assert name in tree, f"{name} is missing from the tree in schemas/errors.py"
    # no error classes outside the errors modules
    for package in ORDER:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if info.name.endswith(".errors") or info.ispkg:
                continue
            for node in ast.walk(
                ast.parse((ROOT / Path(*info.name.split("."))).with_suffix(".py").read_text())
            ):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                    pytest.fail(f"{info.name} defines {node.name} outside an errors module")


def test_no_module_is_a_god_module():
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for package in ORDER
        for p in _modules(package)
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not big
