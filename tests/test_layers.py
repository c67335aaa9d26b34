"""Imports go one way: server → rpc/service → chat → engines → scheduling → types.

Every module under src/toolrpc is parsed with `ast` (nothing is imported), and each import,
including ones inside functions and `if TYPE_CHECKING:` blocks, is checked against the rules of
the layer the module belongs to. A failure names the module, the line and the import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "src" / "toolrpc"


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute dotted name."""

    module: str  # the importing module, e.g. toolrpc.scheduling.loop
    target: str  # the imported module, e.g. toolrpc.errors or fastapi.responses
    line: int

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}"


def module_name(path: Path) -> str:
    """Dotted name of a file under src/toolrpc."""
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_toolrpc_module(name: str) -> bool:
    """True when `name` is a module or package inside src/toolrpc."""
    path = PACKAGE_DIR.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_in(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import in one module's source, relative ones resolved against its package."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"  # `from toolrpc import server` names a module
                target = submodule if is_toolrpc_module(submodule) else base
                found.append(Import(module, target, node.lineno))
    return found


def imports_of(path: Path) -> list[Import]:
    """Every import in one file under src/toolrpc."""
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


ALL_IMPORTS = [imp for path in sorted(PACKAGE_DIR.rglob("*.py")) for imp in imports_of(path)]


def is_within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(layer: str, forbidden: list[str], imports: list[Import] = ALL_IMPORTS) -> list[str]:
    """Imports from modules in `layer` (a dotted prefix) of anything under `forbidden`."""
    return [
        f"{imp}, which {layer} must not import"
        for imp in imports
        if is_within(imp.module, layer) and any(is_within(imp.target, f) for f in forbidden)
    ]


def test_the_walk_sees_the_imports_of_every_layer() -> None:
    importers = {imp.module for imp in ALL_IMPORTS}
    targets = {(imp.module, imp.target) for imp in ALL_IMPORTS}

    for layer in ["server", "rpc", "service", "chat", "engines", "scheduling", "sessions"]:
        assert any(is_within(m, f"toolrpc.{layer}") for m in importers), layer
    assert ("toolrpc.scheduling.loop", "toolrpc.scheduling.scheduler") in targets
    assert ("toolrpc.generation", "toolrpc.types") in targets


def test_relative_and_from_package_imports_are_resolved_to_modules() -> None:
    source = """
from . import text
from .runner import ModelRunner
from ..errors import Overloaded
from toolrpc import server
import fastapi.responses

def lazy():
    from toolrpc.engines.fake import FakeEngine
"""
    imports = imports_in(source, "toolrpc.scheduling.loop")

    assert [imp.target for imp in imports] == [
        "toolrpc.scheduling.text",
        "toolrpc.scheduling.runner",
        "toolrpc.errors",
        "toolrpc.server",
        "fastapi.responses",
        "toolrpc.engines.fake",
    ]


def test_a_wrong_arrow_is_reported_with_module_line_and_import() -> None:
    imports = imports_in("import os\nfrom toolrpc.server.app import create_app\n", "toolrpc.chat.x")

    assert violations("toolrpc.chat", ["toolrpc.server"], imports) == [
        "toolrpc.chat.x (line 2) imports toolrpc.server.app, which toolrpc.chat must not import"
    ]


def test_rpc_imports_nothing_above_or_beside_it() -> None:
    forbidden = ["server", "chat", "engines", "scheduling", "service"]
    assert violations("toolrpc.rpc", [f"toolrpc.{f}" for f in forbidden]) == []


def test_service_does_not_import_the_server() -> None:
    assert violations("toolrpc.service", ["toolrpc.server"]) == []


def test_chat_knows_no_http_and_no_layer_above_it() -> None:
    forbidden = ["toolrpc.server", "toolrpc.rpc", "toolrpc.service", "fastapi", "starlette"]
    assert violations("toolrpc.chat", forbidden) == []


def test_engines_know_no_http_wire_models_or_chat() -> None:
    forbidden = [
        *(f"toolrpc.{f}" for f in ["server", "rpc", "service", "chat", "protocol"]),
        "fastapi",
        "starlette",
    ]
    assert violations("toolrpc.engines", forbidden) == []


def test_scheduling_knows_no_model_backend_http_wire_models_or_layer_above_it() -> None:
    forbidden = [
        *(f"toolrpc.{f}" for f in ["server", "rpc", "service", "chat", "engines", "protocol"]),
        "fastapi",
        "starlette",
        "llama_cpp",
    ]
    assert violations("toolrpc.scheduling", forbidden) == []


def test_shared_value_modules_import_only_types_and_errors_from_toolrpc() -> None:
    allowed = ["toolrpc.types", "toolrpc.errors"]
    shared = ["toolrpc.errors", "toolrpc.types", "toolrpc.generation"]
    found = [
        str(imp)
        for imp in ALL_IMPORTS
        if imp.module in shared
        and is_within(imp.target, "toolrpc")
        and not any(is_within(imp.target, a) for a in allowed)
    ]
    assert found == []


def test_sessions_know_the_wire_models_and_nothing_of_http_chat_engines_or_the_service() -> None:
    forbidden = [
        *(f"toolrpc.{f}" for f in ["server", "rpc", "service", "session_steps", "chat"]),
        *(f"toolrpc.{f}" for f in ["engines", "scheduling", "config", "limits"]),
        "fastapi",
        "starlette",
    ]
    assert violations("toolrpc.sessions", forbidden) == []


def test_the_service_level_modules_do_not_import_the_server() -> None:
    for module in ["session_steps", "limits", "shutdown", "caller", "observe"]:
        assert violations(f"toolrpc.{module}", ["toolrpc.server", "fastapi", "starlette"]) == []


def test_config_knows_no_http_and_nothing_that_serves() -> None:
    # config sits beside the layers, not above them: it imports the constants of the rules it
    # states from the layers that own them (scheduling's MIN_FINAL_CHUNK, the router's default
    # bias) so that each rule has one source, and nothing that serves.
    forbidden = [
        *(f"toolrpc.{f}" for f in ["server", "rpc", "service", "cli", "engines"]),
        "fastapi",
        "starlette",
    ]
    assert violations("toolrpc.config", forbidden) == []


def test_chat_and_scheduling_are_given_values_and_never_read_the_settings() -> None:
    # config imports their constants, so an import of config from them would also be a cycle.
    assert violations("toolrpc.chat", ["toolrpc.config"]) == []
    assert violations("toolrpc.scheduling", ["toolrpc.config"]) == []


def test_the_client_speaks_only_the_wire_protocol() -> None:
    # The client runs where the server does not: it may import the wire models, the error tree
    # and the type aliases, and nothing that serves, chats or runs a model.
    allowed = ["toolrpc.protocol", "toolrpc.errors", "toolrpc.types", "toolrpc.client"]
    found = [
        str(imp)
        for imp in ALL_IMPORTS
        if is_within(imp.module, "toolrpc.client")
        and is_within(imp.target, "toolrpc")
        and not any(is_within(imp.target, a) for a in allowed)
    ]
    assert found == []


def test_the_openai_wire_models_sit_beside_protocol_and_import_only_shared_shapes() -> None:
    # openai_protocol/ holds OpenAI's wire shapes (/v1) the way protocol.py holds toolrpc's:
    # the server's /v1 routes and the upstream engine's client both use it, so it may import
    # only the shapes below it, nothing that serves or generates.
    allowed = ["toolrpc.openai_protocol", "toolrpc.protocol", "toolrpc.types", "toolrpc.errors"]
    found = [
        str(imp)
        for imp in ALL_IMPORTS
        if is_within(imp.module, "toolrpc.openai_protocol")
        and is_within(imp.target, "toolrpc")
        and not any(is_within(imp.target, a) for a in allowed)
    ]
    assert found == []
    assert violations("toolrpc.openai_protocol", ["fastapi", "starlette"]) == []
