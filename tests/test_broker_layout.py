"""The broker's layout: its public surface, aio-pika staying optional, module and class sizes,
and its import contracts.

The layering itself is specified in ``.importlinter`` and checked by import-linter, not by
hand here: :func:`test_the_broker_import_contracts_hold` only runs ``lint-imports`` on the
broker's contracts (and skips when import-linter is not installed).
"""

from __future__ import annotations

import ast
import configparser
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import broker

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("broker.memory", "broker.amqp", "broker.blocking")

#: no module longer than this, and no class unless its docstring says why
MAX_MODULE_LINES = 800
MAX_CLASS_LINES = 400


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_layer_exports_its_names_and_broker_reexports_them(name: str) -> None:
    package = importlib.import_module(name)
    assert package.__doc__, f"{name} needs a docstring saying what it owns"
    for attribute in package.__all__:
        value = getattr(package, attribute)
        if attribute in broker.__all__:
            assert getattr(broker, attribute) is value, attribute


def test_every_public_name_is_importable_from_broker() -> None:
    assert broker.__doc__
    for name in broker.__all__:
        assert hasattr(broker, name), name
    from broker.abc import Communicator  # a public module

    assert Communicator is broker.Communicator


def _run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_broker_imports_without_aio_pika() -> None:
    out = _run_python(
        "import sys\n"
        "for name in ('aio_pika', 'aiormq', 'yarl'):\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "import broker, broker.amqp\n"
        "from broker import AmqpCommunicator, BrokerUnavailableError, amqp_problem\n"
        "print(sorted(set(broker.__all__) - set(dir(broker))))\n"
        "try:\n"
        "    AmqpCommunicator()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert out.splitlines() == [
        "[]",
        "the AMQP adapter needs aio-pika; install it with: pip install 'plumio[amqp]'",
    ]


def test_importing_broker_loads_no_amqp_library() -> None:
    """aio-pika is imported when an AmqpCommunicator is created, not when broker is."""
    out = _run_python(
        "import sys, broker\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aio_pika', 'aiormq', 'yarl')))"
    )
    assert out.strip() == "[]"


def _sizes() -> list[tuple[str, int, list[tuple[str, int, str]]]]:
    """(module path, lines, [(class, lines, docstring)]) for every module of broker."""
    sizes = []
    for path in sorted((ROOT / "broker").rglob("*.py")):
        text = path.read_text()
        classes = [
            (node.name, node.end_lineno - node.lineno + 1, ast.get_docstring(node) or "")
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None
        ]
        sizes.append((str(path.relative_to(ROOT)), len(text.splitlines()), classes))
    return sizes


def test_no_module_is_too_long_and_no_class_unless_its_docstring_says_why() -> None:
    for module, lines, classes in _sizes():
        assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines"
        for name, class_lines, doc in classes:
            if class_lines > MAX_CLASS_LINES:
                assert f"over {MAX_CLASS_LINES} lines" in doc, (
                    f"{module}: class {name} has {class_lines} lines and its docstring does "
                    "not say why"
                )


def _broker_contracts() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    prefix = "importlinter:contract:"
    return [s[len(prefix) :] for s in config.sections() if s.startswith(prefix + "broker-")]


def test_the_broker_import_contracts_hold() -> None:
    contracts = _broker_contracts()
    assert {"broker-no-corelib", "broker-layers", "broker-acyclic"} <= set(contracts)
    lint_imports = shutil.which("lint-imports")
    if lint_imports is None:
        pytest.skip("import-linter is not installed (it provides lint-imports)")
    selected = [arg for contract in contracts for arg in ("--contract", contract)]
    result = subprocess.run(
        [lint_imports, "--no-cache", "--no-logo", *selected],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
