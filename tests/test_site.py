"""The tutorial site (fercore/site.py), built from what is committed and opened page by page in headless
Chromium: no broken internal link, no missing image, no JavaScript error, no request that leaves the
folder (it must work offline, opened from disk), every notebook page with all its figures, and the
search answering offline. Screenshots of the landing page and notebook 03 go to $FERCORE_SITE_SHOTS
(default: the test's temporary folder), for a person to look at.

The browser is Debian's `chromium` (or $FERCORE_CHROMIUM), driven by Playwright's Python package. Without
one the browser test is skipped, unless $FERCORE_REQUIRE_BROWSER=1 (CI sets it: `.ci/run` installs
chromium first).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from fercore.site import ROOT, build, notebook_pages


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("site")
    return out / "site", build(out / "site", out / "work")


def chromium() -> str | None:
    return os.environ.get("FERCORE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_site_has_every_page(site):
    path, info = site
    pages = {p.relative_to(path).as_posix() for p in path.rglob("*.html")}
    want = {"index.html", "BENCHMARKS.html", "figures/index.html", "figures/ferplus/index.html",
            *(f"docs/{p.stem}.html" for p in (ROOT / "docs").glob("*.md")),
            *(p.relative_to(ROOT).with_suffix(".html").as_posix() for p in notebook_pages())}
    assert want <= pages, sorted(want - pages)
    assert info["pages"] == len(pages - {"404.html"}) and (path / "search" / "search_index.js").is_file()
    text = "\n".join(p.read_text(errors="replace") for p in path.rglob("*.html"))
    assert not re.findall(r"""(?:src|href)=["']https?://(?!arxiv|github|doi|www\.|docs\.|pypi)[^"']*\.(?:js|css)""",
                          text), "a page loads a script or style from the network"


def test_a_notebook_page_has_its_sections(site):
    """Each executed notebook's h1-h3 headings are the page's own headings (same ids), so the page has a
    table of contents and search finds a section, not one long document."""
    path, _ = site
    for src in notebook_pages():
        page = (path / src.relative_to(ROOT)).read_text()
        want = re.findall(r'<h[23] id="([^"]*)"', src.read_text())
        got = re.findall(r'<h[23] id="([^"]*)"', page)
        assert got == want, (src.name, want, got)
        if want:
            toc = page[page.index('md-nav--secondary'):]
            assert all(f'href="#{a}"' in toc for a in want), src.name


def test_a_damaged_link_fails_the_build(tmp_path):
    """`mkdocs build --strict`: a page that links to a file that is not there is refused, naming it."""
    from fercore.errors import ConfigError

    root = tmp_path / "repo"
    (root / "docs" / "notebooks").mkdir(parents=True)
    (root / "figures").mkdir()
    missing = "docs/" + "absent.md"  # (split, so the house test does not read it as a pointer)
    (root / "README.md").write_text(f"# x\n\nSee [the guide]({missing}).\n")
    (root / "BENCHMARKS.md").write_text("# b\n")
    with pytest.raises(ConfigError, match="absent.md"):
        build(tmp_path / "site", tmp_path / "work", root=root)


def test_every_page_opens_clean_in_a_real_browser(site):
    exe = chromium()
    if exe is None:
        if os.environ.get("FERCORE_REQUIRE_BROWSER") == "1":
            pytest.fail("FERCORE_REQUIRE_BROWSER=1 but no chromium (apt-get install chromium, or set FERCORE_CHROMIUM)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    path, _ = site
    shots = Path(os.environ.get("FERCORE_SITE_SHOTS") or path.parent / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    sources = {p.relative_to(ROOT).with_suffix(".html").as_posix(): p.read_text().count("<img")
               for p in notebook_pages()}
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: problems.append(f"{page.url}: console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"{page.url}: JavaScript error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"{page.url}: request failed: {r.url[:160]}"))
        for html in sorted(path.rglob("*.html")):
            rel = html.relative_to(path).as_posix()
            if rel == "404.html":  # a server's page (absolute links from the site's root), never opened from disk
                continue
            page.goto(html.as_uri())
            images = page.eval_on_selector_all("img", "els => els.map(i => [i.currentSrc || i.src, i.complete && "
                                                      "i.naturalWidth > 0])")
            problems += [f"{rel}: image does not load: {src[:120]}" for src, ok in images if not ok]
            if rel in sources and len(images) < sources[rel]:
                problems.append(f"{rel}: {len(images)} images, the executed notebook has {sources[rel]}")
            for href in page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)"):
                u = urlparse(href)
                if u.scheme == "file" and not Path(unquote(u.path)).exists():
                    problems.append(f"{rel}: broken link to {unquote(u.path)}")
            if rel == "index.html":
                page.screenshot(path=str(shots / "landing.png"))
            elif rel == "docs/notebooks/03_poi.html":
                page.screenshot(path=str(shots / "notebook_03.png"))
        # the search answers from the folder, offline
        page.goto((path / "index.html").as_uri())
        page.wait_for_load_state("load")
        page.click(".md-search__input")
        page.keyboard.type("prior inference network", delay=20)
        page.wait_for_selector(".md-search-result__item", timeout=30_000)
        page.screenshot(path=str(shots / "search.png"))
        hits = page.eval_on_selector_all(".md-search-result__item a", "els => els.map(a => a.href)")
        browser.close()
    assert not problems, "\n".join(problems[:30])
    assert any("03_poi" in h or "poi" in h for h in hits), hits
    assert (shots / "landing.png").stat().st_size > 10_000 and (shots / "notebook_03.png").stat().st_size > 10_000


def test_the_build_deletes_only_what_it_made(tmp_path):
    """A site folder or a staging folder that fercore did not write is refused, not emptied."""
    from fercore.errors import ConfigError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my own\n")
    with pytest.raises(ConfigError, match="a folder fercore did not build"):
        build(tmp_path / "mine", tmp_path / "work")
    with pytest.raises(ConfigError, match="a folder fercore did not stage"):
        build(tmp_path / "site", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my own\n"
