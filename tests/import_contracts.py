"""import-linter contract types of our own, named in pyproject.toml's `[tool.importlinter]`.

`private_names`: a module may import another module's private names (`_helper`, not dunders such as
`__version__`) only from inside its own package (the same folder). Across packages, what a module
offers is its public names; a private import is a concept living in the wrong place.
"""

from __future__ import annotations

import re

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

_IMPORTED_NAMES = re.compile(r"^\s*from\s+\S+\s+import\s+\(?(?P<names>[^)#]*)")


def private_names(line: str) -> list[str]:
    """The private names a `from X import a, _b as c` line imports (an `import x` line imports none)."""
    match = _IMPORTED_NAMES.match(line)
    if not match:
        return []
    names = [part.strip().split(" as ")[0].strip() for part in match.group("names").split(",")]
    return [n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]


def package_of(module: str, graph: grimp.ImportGraph) -> str:
    """A module's own package: itself when it is a package (its __init__), else its parent."""
    return module if graph.find_children(module) else module.rpartition(".")[0]


class PrivateNamesContract(Contract):
    type_name = "private_names"

    containers = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        illegal = []
        for container in self.containers:  # type: ignore[attr-defined]
            modules = {container} | graph.find_descendants(container)
            for importer in sorted(modules):
                for imported in sorted(graph.find_modules_directly_imported_by(importer) & modules):
                    if package_of(importer, graph) == package_of(imported, graph):
                        continue
                    for detail in graph.get_import_details(importer=importer, imported=imported):
                        names = private_names(detail["line_contents"])
                        if names:
                            illegal.append((importer, imported, detail["line_number"], names))
        return ContractCheck(kept=not illegal, metadata={"illegal": illegal})

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print_error("Private names imported from another package:", bold=False)
        output.new_line()
        for importer, imported, line, names in check.metadata["illegal"]:
            output.print_error(f"- {importer} (l.{line}) imports {', '.join(names)} from {imported}", bold=False)
        output.new_line()
        output.print_error(
            "Fix: make the name public where it is defined (it is then part of that module's API), or move "
            "the code that needs it into the package that owns it.",
            bold=False,
        )
