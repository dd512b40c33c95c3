"""The house rules: imports run down the layers only, and every documentation pointer resolves.

`python -m pytest tests/test_house.py -s` also prints the layer listing (docs/architecture.md#layers).
"""
import ast
import re
import unicodedata
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fercore"

# Bottom to top (docs/architecture.md#layers). A module may import a module of a lower layer, or
# one of its own package (fercore.data.* among themselves); nothing imports upwards.
LAYERS = {
    "fercore.errors": 0, "fercore.files": 1,
    "fercore.config": 2, "fercore.metrics": 2,
    "fercore.rundir": 3, "fercore.data": 3,
    "fercore.models": 4,
    "fercore.methods": 5,
    "fercore.distributed": 6, "fercore.pretrain": 6,
    "fercore.engine": 7,
    "fercore.tables": 8, "fercore.plots": 8, "fercore.analysis": 8, "fercore.notebook": 9,
    "fercore.sweep": 9, "fercore.pseudo_label": 9,
    "fercore.bench": 10, "fercore.suite": 10, "fercore.site": 10,
    "fercore.cli": 11, "fercore.__main__": 12,
    "fercore": 13,  # the package's face (__init__): imports the method registry
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> fercore modules it imports (at any depth of the file: lazy imports count too)."""
    mods = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("fercore"):
                    continue
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                graph[name].update(subs or [target])
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.startswith("fercore"))
    return graph


def layer_of(module: str) -> tuple[int, str]:
    """(layer, owner) of a module: the longest LAYERS key that is the module or a package above it."""
    for key in sorted(LAYERS, key=len, reverse=True):
        if module == key or module.startswith(key + "."):
            return LAYERS[key], key
    raise KeyError(module)


def test_every_module_has_a_layer():
    missing = [m for m in _modules() if not any(m == k or m.startswith(k + ".") for k in LAYERS)]
    assert not missing, f"give these modules a layer in LAYERS (and docs/architecture.md#layers): {missing}"


def test_no_import_runs_back_up_the_layers():
    upward = []
    for src, targets in import_graph().items():
        ls, owner_s = layer_of(src)
        for t in targets:
            lt, owner_t = layer_of(t)
            if owner_s == owner_t:
                continue
            if lt >= ls:
                upward.append(f"{src} (layer {ls}) imports {t} (layer {lt})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if t != "fercore":  # the facade runs first anyway
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m != "fercore":
            visit(m, [])


def test_print_layers(capsys):
    by_layer = defaultdict(list)
    for key, n in LAYERS.items():
        by_layer[n].append(key)
    with capsys.disabled():
        print("\nfercore's layers, top first:")
        for n in sorted(by_layer, reverse=True):
            print(f"  {n:2d}  {', '.join(sorted(by_layer[n]))}")


# --- documentation pointers ---------------------------------------------------------------------

POINTER = re.compile(r"docs/([A-Za-z0-9_-]+\.md)(#[A-Za-z0-9_-]+)?")
OLD_STYLE = re.compile(r"(?<![/\w])(design|methods|datasets|baselines|notebooks-ci)\.md\b")


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFKD", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text()
    out = set()
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6}\s+(.*)", line)):
            out.add(slug(re.sub(r"`", "", m.group(1))))
    out |= set(re.findall(r'<a id="([^"]+)"', text))
    return out


def _sources() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "reproduce.sh", *(ROOT / "figures").glob("*.md")]
    for folder, pattern in (("fercore", "*.py"), ("fercore", "*.yaml"), ("tests", "*.py"), ("benchmarks", "*"),
                            ("notebooks", "*.ipynb"), ("docs", "*.md")):
        files += [p for p in (ROOT / folder).rglob(pattern) if p.is_file() and "__pycache__" not in p.parts]
    return sorted(set(files))


def test_every_documentation_pointer_resolves():
    pages = {p.name: anchors(p) for p in (ROOT / "docs").glob("*.md")}
    bad = []
    for f in _sources():
        for i, line in enumerate(f.read_text().splitlines(), 1):
            for m in POINTER.finditer(line):
                page, anchor = m.group(1), (m.group(2) or "")[1:]
                if page not in pages:
                    bad.append(f"{f.relative_to(ROOT)}:{i}: docs/{page} does not exist")
                elif anchor and anchor not in pages[page]:
                    bad.append(f"{f.relative_to(ROOT)}:{i}: docs/{page} has no section #{anchor}")
    assert not bad, "\n".join(bad)


# the material folder beside a checkout, spelled so that this file does not itself point there
OUTSIDE = ("/".join(("shared", "docs")), "/".join(("..", "shared")))


def test_no_pointer_to_a_document_outside_the_repository():
    bad = []
    for f in _sources():
        if f == Path(__file__).resolve():
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if any(outside in line for outside in OUTSIDE):
                bad.append(f"{f.relative_to(ROOT)}:{i}: points outside the repository")
            for m in OLD_STYLE.finditer(line):
                if f.parent.name != "docs":  # inside docs/, pages link to each other by file name
                    bad.append(f"{f.relative_to(ROOT)}:{i}: '{m.group(0)}' is not a docs/<page>.md#<section> pointer")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("heading, expected", [("## 2.1 Layout", "21-layout"),
                                               ("### R2. Explicit weights", "r2-explicit-weights"),
                                               ("## The flow of data", "the-flow-of-data"),
                                               ("### 5.2 Pairing with FER2013: by row, never by name",
                                                "52-pairing-with-fer2013-by-row-never-by-name")])
def test_slug_is_githubs(heading, expected):
    assert slug(heading.lstrip("# ")) == expected


LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_every_relative_link_in_the_readme_and_docs_resolves():
    """Markdown links ([text](path)) in the README, docs/ and figures/README.md name files that exist
    (the rendered notebooks and figures included), so a reader of the repository never meets a dead link."""
    pages = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md"), ROOT / "figures" / "README.md"]
    bad = []
    for page in (p for p in pages if p.is_file()):
        for i, line in enumerate(page.read_text().splitlines(), 1):
            for m in LINK.finditer(line):
                target = m.group(1)
                if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                    continue
                if not (page.parent / target).exists():
                    bad.append(f"{page.relative_to(ROOT)}:{i}: {target} does not exist")
    assert not bad, "\n".join(bad)
