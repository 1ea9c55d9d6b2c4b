"""The layout's rules, checked on the source: no import circle, papers over core only, DeepFusion by
concept, schemas without torch, methods as classes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "edgeai_repro"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every edgeai_repro module `path` imports, at module level or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("edgeai_repro")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for m in imports(path):
            while m and m not in modules:  # `from pkg import name` may name a module or a member
                m = m.rpartition(".")[0]
            if m and m != name and not name.startswith(m + "."):  # a package's own __init__ is not a cycle
                targets.add(m)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_anywhere() -> None:
    assert cycles(graph()) == []


def test_papers_depend_on_core_only_and_report_reads_no_paper() -> None:
    papers = ("aeria", "incentive", "deepfusion")
    for name, targets in graph().items():
        parts = name.split(".")
        if len(parts) > 1 and parts[1] in papers:
            others = {t for t in targets if t.split(".")[1] in papers and t.split(".")[1] != parts[1]}
            assert not others, f"{name} imports another paper: {others}"
        if len(parts) > 1 and parts[1] in ("core", "report"):
            assert not {t for t in targets if t.split(".")[1] in papers}, f"{name} imports a paper package"


def test_deepfusion_is_split_by_concept_and_its_schema_loads_no_torch() -> None:
    packages = {p.name for p in (PACKAGE / "deepfusion").iterdir() if (p / "__init__.py").exists()}
    assert {"models", "data", "devices", "server", "accounting", "evaluation"} <= packages
    flat = [p.name for p in (PACKAGE / "deepfusion").glob("*.py")]
    assert len(flat) <= 6, f"deepfusion/ holds {flat}: a module belongs in the sub-package of its concept"
    code = (
        "import sys, edgeai_repro.deepfusion.config, edgeai_repro.aeria.config, edgeai_repro.incentive.config; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_component_is_looked_up_by_name_in_globals() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert "globals()" not in path.read_text(), (
            f"{path} looks code up in globals(); name its class in YAML"
        )


def test_every_deepfusion_method_yaml_names_its_own_class() -> None:
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from edgeai_repro.deepfusion.server.methods.base import Method

    seen = set()
    for path in sorted((SRC.parent / "conf" / "deepfusion" / "method").glob("*.yaml")):
        cls = get_class(OmegaConf.load(path)["_target_"])
        assert issubclass(cls, Method) and cls is not Method and cls not in seen, path
        assert cls.__module__.endswith("." + path.stem), f"{path.stem}'s class lives in {cls.__module__}"
        seen.add(cls)
