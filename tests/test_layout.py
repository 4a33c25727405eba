"""The architecture, pinned: layers import downwards only, no cycles, a stable public API."""

from __future__ import annotations

import ast
import os
import pathlib

from twisted.trial.unittest import SynchronousTestCase

import certsrv

PACKAGE = pathlib.Path(certsrv.__file__).parent
# Each layer and the layers it may import (every layer may import certsrv.exceptions and
# certsrv._compat). The development PKI, the client and the testing helpers sit beside the
# server stack; nothing in the server stack may import them.
LAYERS: dict[str, frozenset[str]] = {
    "x509": frozenset(),
    "access": frozenset({"x509"}),
    "revocation": frozenset({"x509"}),
    "tls": frozenset({"x509", "access", "revocation"}),
    "forwarded": frozenset({"x509", "tls"}),
    "web": frozenset({"x509", "access", "revocation", "tls", "forwarded"}),
    "server": frozenset({"x509", "access", "revocation", "tls", "forwarded", "web"}),
    "client": frozenset({"x509"}),
    "pki": frozenset({"x509", "revocation", "web", "server"}),
    "testing": frozenset({"x509", "access", "revocation", "tls", "forwarded", "web", "server",
                          "pki", "client"}),
}
BASE = frozenset({"certsrv.exceptions", "certsrv._compat"})


def _modules() -> dict[str, tuple[ast.Module, bool]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts)
        package = name.endswith(".__init__")
        found[name.removesuffix(".__init__")] = (ast.parse(path.read_text()), package)
    return found


def _imports(name: str, tree: ast.Module, package: bool, known: set[str]) -> set[str]:
    """The certsrv modules ``name`` imports, function-level imports included, TYPE_CHECKING
    blocks not (they never run)."""
    skipped = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If)
               and "TYPE_CHECKING" in ast.unparse(branch.test)
               for statement in branch.body for node in ast.walk(statement)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if package else name.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    """certsrv's import graph: module -> the certsrv modules it imports."""
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, tree, package, known) - {"certsrv"}
            for name, (tree, package) in modules.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


class LayoutTests(SynchronousTestCase):
    """A change that breaks the architecture fails here, naming the import."""

    def test_no_import_cycles(self) -> None:
        edges = graph()
        cycles: list[list[str]] = []
        state: dict[str, int] = {}

        def visit(node: str, path: list[str]) -> None:
            state[node] = 1
            for target in sorted(edges[node]):
                if state.get(target) == 1:
                    cycles.append([*path[path.index(target):], target])
                elif target not in state:
                    visit(target, [*path, target])
            state[node] = 2

        for module in sorted(edges):
            if module not in state:
                visit(module, [module])
        self.assertEqual([" -> ".join(c) for c in cycles], [])

    def test_layers_import_downwards(self) -> None:
        wrong = []
        for module, targets in sorted(graph().items()):
            layer = _layer(module)
            if layer is None:
                continue
            for target in sorted(targets - BASE):
                other = _layer(target)
                if other is not None and other != layer and other not in LAYERS[layer]:
                    wrong.append(f"{module} imports {target}")
                elif other is None and target != "certsrv" and layer != "testing":
                    wrong.append(f"{module} imports {target} (outside the layers)")
        self.assertEqual(wrong, [])

    def test_production_never_imports_the_development_pki(self) -> None:
        production = ("x509", "access", "revocation", "tls", "forwarded", "web", "server",
                      "client")
        wrong = [f"{module} imports {target}" for module, targets in sorted(graph().items())
                 if _layer(module) in production
                 for target in sorted(targets) if _layer(target) == "pki"]
        self.assertEqual(wrong, [])

    def test_packages_say_what_they_own_and_may_import(self) -> None:
        for layer in LAYERS:
            path = PACKAGE / layer / "__init__.py" if layer != "testing" else PACKAGE / "testing.py"
            docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
            self.assertIn("May import", docstring, f"certsrv.{layer}")


class PublicAPITests(SynchronousTestCase):
    """``certsrv.__all__`` is the public API; it changes only on purpose."""

    def test_exports(self) -> None:
        self.assertEqual(sorted(certsrv.__all__), [
            "CertsrvError", "ClientIdentity", "ClientTLSPolicy", "ConfigurationError",
            "Explanation", "HTTPStatusError", "OCSPError", "PKIError", "Reason",
            "RejectedCertificate", "client_tls_policy", "explain", "http_client",
            "identity_of", "protect", "protected_site", "raise_for_status",
        ])
        for name in certsrv.__all__:
            self.assertTrue(hasattr(certsrv, name), name)

    def test_typed(self) -> None:
        self.assertTrue(os.path.exists(PACKAGE / "py.typed"))


class TestLayoutTests(SynchronousTestCase):
    """The tests mirror the package: certsrv/LAYER/M.py is tested by tests/LAYER/test_M.py."""

    def test_a_test_module_per_core_module(self) -> None:
        tests = pathlib.Path(__file__).resolve().parent
        missing = []
        for module in sorted(PACKAGE.glob("*/*.py")):
            if module.name == "__init__.py":
                continue
            layer = module.parent.name
            if not (tests / layer / f"test_{module.stem}.py").exists():
                missing.append(f"certsrv/{layer}/{module.name}")
            self.assertTrue((tests / layer / "__init__.py").exists(), layer)
        for module in ("_compat", "exceptions", "testing"):
            if not (tests / f"test_{module.lstrip('_')}.py").exists():
                missing.append(f"certsrv/{module}.py")
        self.assertEqual(missing, [], "core modules without a test module")
