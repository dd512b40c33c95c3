"""The tutorial site: the README, docs/, the executed notebooks, BENCHMARKS.md, and the figure folders'
indexes and tables, as one mkdocs-material site that works offline from its folder
(`./reproduce.sh site`, `python -m fercore site`; docs/contributing.md#the-site).

Nothing is executed here: the notebook pages are the pages `./reproduce.sh` rendered from the executed
notebooks (`docs/notebooks/**/*.html`, nbconvert's basic template: outputs and figures inline, code
highlighted by pygments), each wrapped as a page of the site. The repository's layout is mirrored in a
staging folder, so every relative link of the Markdown keeps pointing where it did: a link to another
page becomes that page, a link to a notebook page (`.html`) its wrapped page, a link to any other file
of the repository (a figure, a table's CSV, a source file) a copy of it in the site. `mkdocs build
--strict` then refuses a link to anything that is not there.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MARK = ".fercore-site-src"  # what marks a staging folder as fercore's own (the only kind it empties)
SHIM = Path(__file__).resolve().parent / "site_assets" / "iframe-worker-shim.js"  # vendored, MIT (its header)

# the sidebar, in reading order: (title, repository path); a folder entry lists its pages in order
GUIDES = ("docs/architecture.md", "docs/datasets.md", "docs/protocols.md", "docs/baselines.md", "docs/mtac.md",
          "docs/poi.md", "docs/notebooks.md", "docs/where.md", "docs/contributing.md")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")            # [text](target) and ![alt](target)
HTML_LINK = re.compile(r"""((?:href|src)=["'])([^"'#][^"']*)(["'])""")
CSS = """\
/* fercore's notebook pages (nbconvert's basic template): prompts hidden, code and outputs framed and
   scrolled sideways inside the column, at the size of the site's own code blocks */
.fercore-notebook .prompt, .fercore-notebook .anchor-link { display: none; }
.fercore-notebook pre { font-size: .72rem; line-height: 1.45; padding: .7em 1em; overflow-x: auto;
  max-width: 100%; margin: 0; }
.fercore-notebook .input_area pre { background: var(--md-code-bg-color); border-radius: .1rem; }
.fercore-notebook .input_area { margin: 1.2em 0 .3em; }
.fercore-notebook .output_area pre { background: transparent;
  border-left: 3px solid var(--md-default-fg-color--lightest); }
.fercore-notebook .output_stderr pre { border-left-color: #d9822b; }
.fercore-notebook img { max-width: 100%; height: auto; }
.fercore-notebook table { display: block; overflow-x: auto; font-size: .7rem; }
"""


def notebook_pages(root: Path = ROOT) -> list[Path]:
    """The rendered notebook pages: docs/notebooks/*.html, then each dataset's folder."""
    base = root / "docs" / "notebooks"
    return sorted(base.glob("*.html")) + sorted(base.glob("*/*.html"))


def _title(html: str, fallback: str) -> str:
    m = re.search(r"<h1[^>]*>(.*?)</h1>", html, re.S)
    text = re.sub(r"<[^>]+>", "", m.group(1)).replace("¶", "").strip() if m else ""
    return text or fallback


# what nbconvert leaves of a live widget (tqdm's progress bars): a script that needs jQuery, the
# widget's model id and state; a static page shows nothing there, so they go
WIDGET = re.compile(r"""<script type="text/javascript">\s*var element = \$\('#[^']*'\);\s*</script>"""
                    r"""|<script type="application/vnd\.jupyter\.widget-(?:view|state)\+json">.*?</script>""", re.S)


CELL = re.compile(r'(?=<div class="cell border-box-sizing )')
TEXT_CELL = re.compile(r'<div class="cell border-box-sizing text_cell[^>]*>.*?<div class="text_cell_render[^>]*>\n?'
                       r'(.*)</div>\s*</div>\s*</div>\s*$', re.S)
HEADING = re.compile(r'<h([1-3]) id="([^"]*)">(.*?)</h\1>', re.S)


def _heading(level: str, anchor: str, inner: str) -> str:
    """An nbconvert heading as a Markdown one with the same id, so the page has a table of contents,
    search has sections and the notebook's own `#anchor` links still land."""
    import html as html_lib

    inner = re.sub(r'<a class="anchor-link".*?</a>', "", inner, flags=re.S)
    inner = re.sub(r"<code>(.*?)</code>", r"`\1`", inner, flags=re.S)
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", inner)).strip()
    text = "".join(part if i % 2 else re.sub(r"([*_\[\]<])", r"\\\1", part)  # escape outside `code`
                   for i, part in enumerate(re.split(r"(`[^`]*`)", text)))
    return f"{'#' * int(level)} {text} {{#{anchor}}}"


def _raw(html: str) -> str:
    return f'<div class="fercore-notebook" markdown="0">\n{html.strip()}\n</div>'


def _wrap(html: str, title: str) -> str:
    """A notebook page as a Markdown page: code cells and the text between headings verbatim, the text
    cells' h1-h3 as Markdown headings (the page's table of contents and search sections), without the
    dead widgets."""
    safe = title.replace('"', "'")
    blocks = []
    for cell in CELL.split(WIDGET.sub("", html)):
        if not cell.strip():
            continue
        m = TEXT_CELL.match(cell)
        if m is None:
            blocks.append(_raw(cell))
            continue
        parts = HEADING.split(m.group(1))  # [text, level, id, inner, text, level, id, inner, ..., text]
        for i in range(0, len(parts), 4):
            if parts[i].strip():
                blocks.append(_raw(parts[i]))
            if i + 3 < len(parts):
                blocks.append(_heading(*parts[i + 1:i + 4]))
    return f'---\ntitle: "{safe}"\n---\n\n' + "\n\n".join(blocks) + "\n"


def _target(base: Path, target: str, root: Path) -> Path | None:
    """The repository file a relative link from `base` (a repository file) names, if it is one."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("/", "#")):
        return None
    path = target.split("#")[0].split("?")[0]
    if not path:
        return None
    p = (base.parent / path).resolve()
    try:
        p.relative_to(root)
    except ValueError:
        return None
    return p


def stage(out: Path, root: Path = ROOT) -> tuple[dict, list[Path]]:
    """Mirror the pages into `out` (emptied first: it is fercore's own build folder) and return the
    mkdocs nav and the repository files the pages link to (copied beside them)."""
    if out.exists():
        if any(out.iterdir()) and not (out / MARK).is_file():
            raise ConfigError(f"{out}: a folder fercore did not stage (no {MARK}); choose another work folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARK).write_text("staged by fercore.site; rebuilt on every build\n")
    wrapped = {p.resolve(): p.with_suffix(".md") for p in notebook_pages(root)}
    md = [root / "README.md", root / "BENCHMARKS.md", *(root / g for g in GUIDES)]
    for folder in (root / "figures", *sorted(p for p in (root / "figures").iterdir() if p.is_dir())):
        if (folder / "README.md").is_file():  # its index, the tables and findings it lists
            md.append(folder / "README.md")
            md += sorted(p for p in folder.glob("*.md") if p.name != "README.md")
            md += sorted((folder / "tables").glob("*.md"))
    md = [p for p in md if p.is_file()]
    md_set = set(md)
    folders = {p.parent for p in wrapped} - {root / "docs" / "notebooks"}  # a dataset's pages get an index
    copied: set[Path] = set()

    def relink(text: str, src: Path, pattern: re.Pattern) -> str:
        def one(m: re.Match) -> str:
            p = _target(src, m.group(2), root)
            if p is None:
                return m.group(0)
            if p in wrapped:  # a notebook page: its wrapped page
                return m.group(1) + m.group(2).replace(".html", ".md", 1) + m.group(3)
            if p.is_dir():  # a folder: its README page, or the index of its notebook pages
                page = "README.md" if (p / "README.md") in md_set else "index.md" if p in folders else None
                if page is not None:
                    return m.group(1) + m.group(2).rstrip("/") + "/" + page + m.group(3)
            if p.is_file() and p.suffix != ".md":
                copied.add(p)
            return m.group(0)
        return pattern.sub(one, text)

    for src in md:
        rel = src.relative_to(root)
        dst = out / ("index.md" if rel == Path("README.md") else rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(relink(src.read_text(encoding="utf-8"), src, LINK), encoding="utf-8")
    for src, page in wrapped.items():
        html = src.read_text(encoding="utf-8")
        rel = page.relative_to(root)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(_wrap(relink(html, src, HTML_LINK), _title(html, src.stem)), encoding="utf-8")
    for folder in sorted(folders):
        pages = sorted(p for p in wrapped.values() if p.parent == folder)
        (out / folder.relative_to(root) / "index.md").write_text(
            f"# The notebooks on {folder.name}\n\nExecuted by `./reproduce.sh --dataset {folder.name} ...` (the "
            f"command is in the figures' index):\n\n" + "".join(
                f"- [{_title((p.with_suffix('.html')).read_text(encoding='utf-8'), p.stem)}]({p.name})\n"
                for p in pages), encoding="utf-8")
    for p in sorted(copied):
        (out / p.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, out / p.relative_to(root))
    (out / "stylesheets").mkdir()
    (out / "stylesheets" / "fercore.css").write_text(CSS)
    (out / "javascripts").mkdir()
    shutil.copy2(SHIM, out / "javascripts" / SHIM.name)

    def entry(p: Path) -> dict | str:
        rel = p.relative_to(root)
        return "index.md" if rel == Path("README.md") else str(rel.with_suffix(".md"))

    quick = [entry(p) for p in wrapped.values() if p.parent == root / "docs" / "notebooks"]
    by_dataset: dict[str, list] = {f.name: [str((f / "index.md").relative_to(root))] for f in sorted(folders)}
    for p in wrapped.values():
        if p.parent != root / "docs" / "notebooks":
            by_dataset[p.parent.name].append(entry(p))
    under_figures = [p for p in md if p.relative_to(root).parts[0] == "figures"]
    figures = [{("SynthFER" if p.parent == root / "figures" else p.parent.name) + " figures and tables": entry(p)}
               for p in under_figures if p.name == "README.md"]
    tables = [entry(p) for p in under_figures if p.name != "README.md"]
    nav = [{"Overview": "index.md"},
           {"Notebooks": quick + [{f"On real faces: {d}": pages} for d, pages in by_dataset.items()]},
           {"Guides": [entry(root / g) for g in GUIDES if (root / g).is_file()]},
           {"Figures and tables": figures + ([{"Tables": tables}] if tables else [])},
           {"Benchmarks": "BENCHMARKS.md"}]
    return {"nav": nav}, sorted(copied)


def config(nav: list, docs_dir: Path) -> dict:
    """mkdocs.yml: material, full-text search, no font or script from a CDN (`offline`: the folder
    opened from disk searches too)."""
    return {
        "site_name": "fercore", "docs_dir": str(docs_dir), "use_directory_urls": False,
        "site_description": "A reproducible reconstruction of MTAC and POI for facial expression recognition "
                            "under uncertain labels",
        "theme": {"name": "material", "font": False, "features": ["navigation.sections", "navigation.footer",
                                                                  "search.highlight", "content.code.copy"],
                  "palette": {"primary": "indigo"}},
        "plugins": ["search", "offline"],
        "markdown_extensions": ["tables", "toc", "admonition", "attr_list", "md_in_html",
                               {"pymdownx.highlight": {"use_pygments": True}}, "pymdownx.superfences"],
        "extra_css": ["stylesheets/fercore.css"],
        "extra": {"polyfills": [f"javascripts/{SHIM.name}"]},  # a local copy: `offline` would load it from unpkg
        "nav": nav,
        "validation": {"links": {"not_found": "warn", "absolute_links": "warn", "unrecognized_links": "warn"},
                       "nav": {"omitted_files": "info"}},
    }


def build(site: Path | str = ROOT / "site", work: Path | str = ROOT / "build" / "site-src",
          root: Path = ROOT) -> dict:
    """Stage the pages into `work`, build the site into `site` with `mkdocs build --strict` (a broken
    link or a missing page fails it) and return what was built: pages, files, seconds."""
    site, work = Path(site), Path(work)
    if site.exists() and not (site / "sitemap.xml").exists() and any(site.iterdir()):
        raise ConfigError(f"{site}: a folder fercore did not build (no sitemap.xml); choose another --out")
    t0 = time.perf_counter()
    if work.exists() and any(work.iterdir()) and not (work / MARK).is_file():
        raise ConfigError(f"{work}: a folder fercore did not stage (no {MARK}); choose another work folder")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARK).write_text("staged by fercore.site; rebuilt on every build\n")
    nav, copied = stage(work / "docs", root)
    cfg = work / "mkdocs.yml"
    cfg.write_text(yaml.safe_dump(config(nav["nav"], work / "docs"), sort_keys=False, allow_unicode=True))
    # not -q: a quiet mkdocs does not log its warnings, and --strict counts only the logged ones
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f", str(cfg),
                           "-d", str(site.resolve())], capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    said = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in (done.stderr + done.stdout).splitlines()]
    warnings = [line for line in said if line.startswith(("WARNING", "ERROR"))]
    if done.returncode != 0 or warnings:
        raise ConfigError("mkdocs build --strict: " + " | ".join(warnings or said[-5:])[:3000])
    pages = sorted(site.rglob("*.html"))
    return {"site": str(site), "pages": len([p for p in pages if p.name != "404.html"]),
            "linked_files": len(copied), "seconds": round(time.perf_counter() - t0, 1),
            "mib": round(sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 2**20, 1)}
