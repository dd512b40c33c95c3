"""What every notebook's second cell does, and how notebooks write figures and tables
(docs/notebooks.md#4-the-validation-cell).

A notebook's `parameters` cell holds flat upper-case literals; papermill injects overrides after
it. `nb = parameters(globals(), "05_noise_sweep", NOISE=str, ...)` then checks that exactly the
expected upper-case names are present (an injected typo such as `-p EPOCS 3` would otherwise be a
silent new variable), each of its type, that PROFILE is a known profile and DATA_ROOT goes with a
real DATASET, and returns a `Notebook` with the derived paths.

Every figure and table goes through `nb.figure`, `nb.table` or `nb.text`: the file is written under
the profile's figure folder and recorded with its caption, the notebook, the profile, the dataset
and the parameters in `<fig_dir>/.manifest/<notebook>.json`; `write_index(fig_dir)` turns the
manifests into `<fig_dir>/README.md` (docs/notebooks.md#7-figures-and-tables).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .config import PROFILES
from .errors import ConfigError
from .files import write_atomic

COMMON = {"PROFILE": str, "DATASET": str, "DATA_ROOT": str, "DEVICE": str}  # reproduce.sh passes these four
FIGURES = {"smoke": "../runs/smoke/figures", "quick": "../figures", "paper": "../figures/paper"}
MANIFEST = ".manifest"


class Notebook:
    """A notebook's checked parameters, its paths, and the writer of its figures and tables."""

    def __init__(self, name: str, params: dict) -> None:
        self.name, self.params = name, params
        self.profile = params["PROFILE"]
        self.out_dir = Path(params.get("OUT_DIR") or f"../runs/{self.profile}/runs")  # runs shared by all notebooks
        # real faces: one folder per dataset (figures/ferplus/), as ./reproduce.sh writes them
        own = params["DATASET"] if self.profile == "real" else self.profile
        self.fig_dir = Path(FIGURES.get(self.profile, f"../figures/{own}"))
        self.table_dir = self.fig_dir / "tables"
        self.work_dir = Path(f"../runs/{self.profile}/data")                           # scratch files
        # the overrides every run of the notebook takes
        self.data = [f"data.dataset={params['DATASET']}", f"data.data_root={params['DATA_ROOT']}",
                     f"device={params['DEVICE']}", f"out_dir={self.out_dir}"]
        self._entries: list[dict] = []

    # --- writing ---------------------------------------------------------------------------------
    def _record(self, path: Path, caption: str, kind: str) -> Path:
        rel = path.relative_to(self.fig_dir).as_posix()
        self._entries = [e for e in self._entries if e["file"] != rel]
        self._entries.append({"file": rel, "kind": kind, "caption": caption, "notebook": self.name,
                              "profile": self.profile, "dataset": self.params["DATASET"],
                              "parameters": {k: v for k, v in self.params.items() if k not in COMMON}})
        manifest = self.fig_dir / MANIFEST / f"{self.name}.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(manifest, json.dumps(self._entries, indent=1, default=str))
        return path

    def figure(self, fig, filename: str, caption: str) -> Path:
        """Save a matplotlib figure as PNG under the figure folder (and close it); record it."""
        from .plots import save

        path = self._record(save(fig, self.fig_dir / filename), caption, "figure")
        _show(path)  # in a notebook: the saved PNG in the cell's output, so the rendered page has it
        return path

    def table(self, df, name: str, caption: str, digits: int = 3) -> Path:
        """Write a table as Markdown, LaTeX (booktabs) and CSV under `<fig_dir>/tables/`; record it."""
        from .tables import write_table

        paths = write_table(df, self.table_dir / name, caption, digits)
        return self._record(paths[0], caption, "table")

    def text(self, content: str, filename: str, caption: str) -> Path:
        """Write a text or Markdown file under the figure folder; record it."""
        path = self.fig_dir / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, content)
        return self._record(path, caption, "text")


def parameters(scope: dict, name: str, **spec: type) -> Notebook:
    """Check the notebook's upper-case globals against COMMON + `spec` (name -> type); `name` is the
    notebook's file stem (it labels the figures it writes)."""
    spec = {**COMMON, **spec}
    given = {k: v for k, v in scope.items() if k.isupper() and not k.startswith("_")}
    unknown, missing = sorted(set(given) - set(spec)), sorted(set(spec) - set(given))
    assert not unknown and not missing, f"unknown parameters: {unknown}, missing: {missing}"
    for k, t in spec.items():
        assert type(given[k]) is t, f"{k} must be {t.__name__}, got {given[k]!r}"
    assert given["PROFILE"] in PROFILES, f"PROFILE must be one of {sorted(PROFILES)}, got {given['PROFILE']!r}"
    assert (given["DATASET"] == "synthfer") == (given["DATA_ROOT"] == ""), \
        "DATA_ROOT goes with a real DATASET, and only then"
    return Notebook(name, given)


def _show(path: Path) -> None:
    """Display a saved image in the running IPython kernel, if there is one (no-op in scripts)."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(Image(filename=str(path)))


def data_record(runs: str | Path, dataset: str) -> list[str]:
    """What the runs of `dataset` under `runs` read, from their env.json: each label/vote file with its
    sha256 and version, and the fingerprints of the decoded train and test images (one line per distinct
    value; a real dataset is named by its files, never copied)."""
    seen: dict[str, None] = {}
    for env in sorted(Path(runs).glob("*/env.json")):
        try:
            data = json.loads(env.read_text()).get("data", {})
            own_data = json.loads((env.parent / "config.json").read_text())["data"]
        except (OSError, ValueError, KeyError):
            continue
        if own_data.get("dataset") != dataset or "train_fingerprint" not in data:
            continue
        for name, v in sorted(data.get("votes", {}).items()):
            seen[f"`{name}`: sha256 `{v.get('sha256')}` ({v.get('version')})"] = None
        labels = data.get("label_source") or dataset
        part = (f", fold {own_data['oof_fold']} of {own_data['oof_folds']} left out (an out-of-fold run)"
                if own_data.get("oof_folds") else "")
        train, test = data["train_fingerprint"][:16], data.get("test_fingerprint", "")[:16]
        seen[f"decoded images at {data.get('image_size')} px, {labels} labels{part}: train `{train}`, "
             f"test `{test}` (fercore's data fingerprints, env.json)"] = None
    return sorted(seen, key=lambda line: "an out-of-fold run" in line)  # the runs' own data first


def write_index(fig_dir: str | Path, title: str = "Figures and tables", command: str = "",
                data: list[str] | None = None) -> Path:
    """`<fig_dir>/README.md`: every recorded figure and table with its notebook, parameters, profile
    and dataset, from the notebooks' manifests; files in the folder that no notebook recorded are
    listed as such (they should not exist). `command` and `data` (`data_record`), where given, say what
    made the folder and from which data."""
    fig_dir = Path(fig_dir)
    entries = []
    for m in sorted((fig_dir / MANIFEST).glob("*.json")):
        entries += json.loads(m.read_text())
    recorded = {e["file"] for e in entries}
    companions = {str(Path(f).with_suffix(s)) for f in recorded if f.startswith("tables/") for s in (".tex", ".csv")}
    # a sub-folder with its own records is another profile's or dataset's (figures/paper/, figures/ferplus/)
    own = {"paper"} | {m.parent.name for m in fig_dir.glob(f"*/{MANIFEST}")}
    stray = sorted(p.relative_to(fig_dir).as_posix() for p in fig_dir.rglob("*")
                   if p.is_file() and MANIFEST not in p.parts and p.name != "README.md"
                   and p.relative_to(fig_dir).as_posix() not in recorded | companions
                   and p.relative_to(fig_dir).parts[0] not in own)
    lines = [f"# {title}", "",
             "Every file here is written by a notebook (`./reproduce.sh` runs them all); this page is written "
             "from the notebooks' records by `fercore.notebook.write_index`. These are fercore's runs, never "
             "a paper's numbers. Tables come as `.md`, `.tex` (booktabs) and `.csv`.", ""]
    if command:
        lines += ["Made by:", "", "```", command, "```", ""]
    if data:
        lines += ["Data read (the dataset itself stays outside the repository):", "", *[f"- {d}" for d in data], ""]
    for nb in sorted({e["notebook"] for e in entries}):
        mine = [e for e in entries if e["notebook"] == nb]
        first = mine[0]
        params = ", ".join(f"{k}={v!r}" for k, v in first["parameters"].items()) or "defaults"
        lines += [f"## {nb}", "", f"`notebooks/{nb}.ipynb`, profile `{first['profile']}`, dataset "
                  f"`{first['dataset']}`, parameters: {params}.", "", "| file | what |", "|---|---|"]
        lines += [f"| [{e['file']}]({e['file']}) | {e['caption'].splitlines()[0] if e['caption'] else ''} |"
                  for e in mine]
        lines.append("")
    if stray:
        lines += ["## Not recorded by any notebook", "", *[f"- {s}" for s in stray], ""]
    path = fig_dir / "README.md"
    write_atomic(path, "\n".join(lines))
    return path


# README blocks written from tables: name -> (the CSV under figures/, how it is stated: "table" as it
# is, "verdicts" one line per setting (tables.verdict_lines), "reference" one line per method against
# notebook 04's clean reference (tables.reference_lines), "regime" one line per method
# (tables.regime_lines), "ambiguity" one line per score (tables.ambiguity_lines))
FINDINGS = {"noise_sweep_last_acc": ("tables/noise_sweep_last_acc.csv", "table"),
            "noise_sweep_vs_ce": ("tables/noise_sweep_vs_ce.csv", "verdicts"),
            "uncertainty_auroc": ("tables/uncertainty_auroc.csv", "table"),
            "uncertainty_relabel": ("tables/uncertainty_relabel.csv", "table"),
            "uncertainty_calibration": ("tables/uncertainty_calibration.csv", "table"),
            "uncertainty_ambiguity": ("tables/uncertainty_ambiguity.csv", "ambiguity"),
            "comparison_sym03_regime": ("tables/comparison_sym03_regime.csv", "regime"),
            "noise_sweep_relabel_clean": ("tables/noise_sweep_relabel_clean.csv", "table"),
            "weak_comparison": ("tables/weak_comparison.csv", "table"),
            # FERPlus in the real profile, one annotator's vote per training face (./reproduce.sh --dataset
            # ferplus --label-source one_vote --notebook 04,05,07): figures/ferplus/
            "ferplus_comparison": ("ferplus/tables/comparison_one_vote.csv", "table"),
            "ferplus_vs_ce": ("ferplus/tables/comparison_one_vote_vs_ce.csv", "verdicts_real"),
            "ferplus_vs_clean": ("ferplus/tables/comparison_one_vote_vs_clean.csv", "reference"),
            "ferplus_regime": ("ferplus/tables/comparison_one_vote_regime.csv", "regime_real"),
            "ferplus_auroc": ("ferplus/tables/uncertainty_auroc.csv", "table"),
            "ferplus_relabel": ("ferplus/tables/uncertainty_relabel.csv", "table"),
            "ferplus_ambiguity": ("ferplus/tables/uncertainty_ambiguity.csv", "ambiguity")}


def findings_block(name: str, fig_dir: str | Path) -> str:
    """The Markdown of README block `name`, written from its table under `fig_dir` (FINDINGS)."""
    import pandas as pd

    from .tables import ambiguity_lines, markdown_table, reference_lines, regime_lines, verdict_lines

    csv, form = FINDINGS[name]
    path = Path(fig_dir) / csv
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if form == "table":
        return markdown_table(df).rstrip("\n")
    if form == "ambiguity":
        return "\n".join(ambiguity_lines(df))
    if form == "regime":
        return "\n".join(regime_lines(df))
    if form == "regime_real":  # real label noise: the wrong labels are those that are not the crowd's majority
        return "\n".join(regime_lines(df, "training labels that differ from the crowd's majority"))
    if form == "reference":
        return "\n".join(reference_lines(df, "ce trained on the majority labels", "one annotator's vote"))
    if form == "verdicts_real":  # noise "none" on a dataset's real label noise is that noise: named by its source
        source = Path(csv).stem.removeprefix("comparison_").removesuffix("_vs_ce")  # comparison_<source>_vs_ce
        df = df.assign(noise=df["noise"].replace({"none": source}))
    missing = sorted({"difference", "ci_low", "ci_high", "verdict", "n_seeds"} - set(df.columns))
    if missing:
        raise ConfigError(f"{path}: no column(s) {missing}; expected a paired comparison "
                          "(fercore.tables.versus, notebook 05); run ./reproduce.sh --notebook 05")
    return "\n".join(verdict_lines(df))


def refresh_findings(readme: str | Path, fig_dir: str | Path, folder: str = "") -> list[str]:
    """Rewrite every findings block of `readme` (between `<!-- findings:NAME -->` and
    `<!-- /findings:NAME -->`) from the tables under `fig_dir`, so prose that states a verdict is
    written from the table it reads; returns the names of the blocks found (the file is written
    only when one changed). `folder`: only the blocks whose table is in that sub-folder of `fig_dir`
    (a dataset's, e.g. "ferplus"); empty: those of `fig_dir/tables/` (SynthFER's)."""
    readme = Path(readme)
    before = text = readme.read_text()
    done = []
    for name, (csv, _) in FINDINGS.items():
        if Path(csv).parts[0] != (folder or "tables"):
            continue
        start, end = f"<!-- findings:{name} -->", f"<!-- /findings:{name} -->"
        if start not in text:
            continue
        head, rest = text.split(start, 1)
        if end not in rest:
            raise ConfigError(f"{readme}: block {start} has no closing {end}")
        text = f"{head}{start}\n{findings_block(name, fig_dir)}\n{end}{rest.split(end, 1)[1]}"
        done.append(name)
    if text != before:
        write_atomic(readme, text)
    return done


def scrub_paths(page: str | Path, data_root: str = "", root: str | Path | None = None,
                cache: str | Path | None = None) -> int:
    """Replace this machine's absolute paths in a rendered notebook page with names a reader can use:
    the checkout (`root`, default this fercore's) with a relative path, the cache (`cache`, default
    `$FERCORE_CACHE`'s folder) with `$FERCORE_CACHE`, a real dataset's `data_root` with `DIR` (as the
    README writes `--data-root DIR`), the kernel's temporary file of a cell with `[notebook cell]`.
    Returns how many were replaced; `./reproduce.sh` calls it on every page it renders, so a
    committed page names no folder of the machine that made it."""
    from .files import cache_dir

    root = Path(root) if root else Path(__file__).resolve().parents[1]
    names = {f"{root}/": "", str(cache or cache_dir()): "$FERCORE_CACHE"}
    if data_root and Path(data_root).is_absolute():
        names[str(Path(data_root)).rstrip("/")] = "DIR"
    elif data_root:
        names[str(Path(data_root).resolve())] = "DIR"
    page = Path(page)
    text, n = page.read_text(encoding="utf-8"), 0
    for old in sorted(names, key=len, reverse=True):  # the longest first: a cache inside the checkout
        n += text.count(old)
        text = text.replace(old, names[old])
    # a warning raised by a cell's own code names the kernel's temporary file of that cell
    text, k = re.subn(r"(?:/[\w.-]+)*/ipykernel_\d+/\d+\.py", "[notebook cell]", text)
    n += k
    if n:
        write_atomic(page, text)
    return n
