"""The package's layering, read from its source: `weaver/cli/` is the top floor and no import goes round in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import weaver

PACKAGE = Path(weaver.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def module_level_imports(name: str) -> set[str]:
    """The weaver modules `name` imports when it is imported (imports inside functions run later, if ever)."""
    tree = ast.parse(MODULES[name].read_text())
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from weaver.data import batching` imports the module weaver.data.batching.
            imported.update(
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            )
    return {module for module in imported if module in MODULES and module != name}


IMPORTS = {name: module_level_imports(name) for name in MODULES}


def test_no_module_outside_cli_imports_from_it() -> None:
    offenders = {
        name: sorted(i for i in imported if i.startswith("weaver.cli"))
        for name, imported in IMPORTS.items()
        if not name.startswith("weaver.cli")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_circular_imports() -> None:
    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), list(IMPORTS[start])
        while stack:
            module = stack.pop()
            if module == goal:
                return True
            if module not in seen:
                seen.add(module)
                stack.extend(IMPORTS[module])
        return False

    circular = sorted(name for name in IMPORTS if reaches(name, name))
    assert circular == []
