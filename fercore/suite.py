"""The suite `./reproduce.sh` runs, notebook by notebook: which runs each notebook trains, and the plan
(`python -m fercore plan`): what a command will train, what is already finished, and what it costs.

The grids of notebooks 04-08 are built here, and those notebooks call these functions, so the plan and
the notebooks cannot disagree about a notebook's cells. The single runs of notebooks 00, 02 and 03
(`sweep.train` calls, written out in those notebooks for the reader) are described here as one-cell
grids with the same overrides. A run's directory is named by its whole config (`RunConfig.cell_name`),
so a run two notebooks ask for is trained once, by the first: the plan says which notebook trains it.
Each notebook's defaults are read from its `parameters` cell.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

from .config import load_yaml
from .errors import ConfigError
from .rundir import RunDir, code_hash
from .sweep import Grid, _same_run, cell_run_dir, measured_seconds

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"  # a checkout's notebooks (the plan reads them)
COSTS = Path(__file__).with_name("costs.yaml")  # measured per-epoch seconds of one run of each method
SUITE = ("00_quickstart", "01_data_and_noise", "02_mtac", "03_poi", "04_comparison", "05_noise_sweep",
         "06_ablations", "07_uncertainty", "08_weak_supervision")


def defaults(notebook: str, folder: Path = NOTEBOOKS) -> dict:
    """The upper-case literals of a notebook's `parameters` cell (what papermill would override)."""
    nb = json.loads((folder / f"{notebook}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def _with_source(base: dict, label_source: str) -> dict:
    return {**base, "data.label_source": label_source} if label_source else dict(base)


def comparison_grid(profile: str, noise: str, seeds: list[int], methods: list[str], base: dict,
                    label_source: str = "") -> Grid:
    """Notebook 04: every method at one noise setting; empty `seeds`: the noise sweep's seeds there, so
    these are the same cells as notebook 05's column at `noise`, trained once."""
    sweep = Grid.from_yaml("noise_sweep")
    sweep.profile = profile
    return Grid(profile=profile, methods=list(methods), noise=[noise], seeds=list(seeds) or sweep.seeds_for(noise),
                base=_with_source(base, label_source), name="comparison", noise_draw=sweep.noise_draw)


REAL_NOISE = ("fer2013", "one_vote")  # FERPlus label sources whose training labels carry real noise


def clean_reference_grid(profile: str, seeds: list[int], base: dict, label_source: str = "") -> Grid | None:
    """Notebook 04 on real label noise (`label_source` fer2013 or one_vote): `ce` on the crowd's majority
    labels (`ferplus`), no injected noise, over the comparison's `seeds`: what the methods are measured
    against when the noise is the annotators' own `[ours]`. None for any other label source."""
    if label_source not in REAL_NOISE:
        return None
    return Grid(profile=profile, methods=["ce"], noise=["none"], seeds=list(seeds),
                base=_with_source(base, "ferplus"), name="clean_reference")


def noise_sweep_grid(profile: str, grid: str, noise: list[str], seeds: list[int], base: dict,
                     label_source: str = "") -> Grid:
    """Notebook 05: a grid file (fercore's `noise_sweep` by default); `noise` and `seeds` replace its own
    where given (SEEDS serve every setting; a grid's extra seeds stay only where its setting is still run)."""
    g = Grid.from_yaml(grid)
    g.profile = profile
    g.base = _with_source({**g.base, **base}, label_source)
    if noise:
        g.noise = list(noise)
    if seeds:
        g.seeds = list(seeds)
    if noise or seeds:
        g.seeds_at = {} if seeds else {n: s for n, s in g.resolved("seeds_at").items() if n in noise}
    return g


def ablation_grid(profile: str, grid: str, noise: str, seeds: list[int], variants: list[str], base: dict,
                  label_source: str = "") -> Grid:
    """Notebook 06: the ablation grid at one noise setting; empty `variants`: all of them (smoke: three,
    to prove the code path)."""
    g = Grid.from_yaml(grid)
    g.profile = profile
    g.base = _with_source({**g.base, **base}, label_source)
    g.noise = [noise]
    if seeds:
        g.seeds = list(seeds)
    chosen = list(variants) or (["default", "mtac-no-relabel", "poi-no-prior"] if profile == "smoke"
                                else list(g.variants))
    if not set(chosen) <= set(g.variants) or "default" not in chosen:
        raise ConfigError(f"VARIANTS: unknown variant(s) {sorted(set(chosen) - set(g.variants))} or no 'default' "
                          f"(the full method); expected names of {grid!r}: {list(g.variants)}")
    g.variants = {k: v for k, v in g.variants.items() if k in chosen}
    return g


def uncertainty_grids(profile: str, noise: str, seeds: list[int], methods: list[str], folds: int, base: dict,
                      label_source: str = "") -> tuple[Grid, Grid]:
    """Notebook 07: every method over `seeds` (empty: [0] in smoke, [0, 1, 2] otherwise: notebook 04's
    runs), and `folds` out-of-fold ce runs at the first seed (cleanlab's score)."""
    seeds = default_seeds(profile, seeds)
    base = _with_source(base, label_source)
    grid = Grid(profile=profile, methods=list(methods), noise=[noise], seeds=seeds, base=base, name="uncertainty")
    oof = Grid(profile=profile, methods=["ce"], noise=[noise], seeds=seeds[:1], base=base, name="uncertainty_oof",
               variants={f"fold{k}": {"data.oof_folds": folds, "data.oof_fold": k} for k in range(folds)})
    return grid, oof


def default_seeds(profile: str, seeds: list[int]) -> list[int]:
    """Notebooks 07's and 08's seeds: SEEDS, else [0] in smoke and [0, 1, 2] otherwise."""
    return list(seeds) or ([0] if profile == "smoke" else [0, 1, 2])


def weak_source_grid(profile: str, device: str, out_dir: str, source_seed: int) -> Grid:
    """Notebook 08's pseudo-label source: MTAC with exact AUs and VA on its own SynthFER draw."""
    return Grid(profile=profile, methods=["mtac"], noise=["none"], seeds=[0], name="weak_supervision_source",
                base={"device": device, "out_dir": str(out_dir), "data.synthfer.seed": source_seed,
                      "mtac.au": "graph", "mtac.va": "ccc", "mtac.relabel": "none"})


def weak_grid(profile: str, noise: str, seeds: list[int], device: str, out_dir: str, target: dict,
              variants: dict) -> Grid:
    """Notebook 08's comparison: MTAC on the target dataset with each variant's AU/VA side files."""
    return Grid(profile=profile, methods=["mtac"], noise=[noise], seeds=default_seeds(profile, seeds),
                name="weak_supervision", variants=variants,
                base={"device": device, "out_dir": str(out_dir), "data.dataset": target["dataset"],
                      "data.data_root": str(target["root"]), "mtac.au": "auto", "mtac.va": "auto"})


def _single(profile: str, name: str, runs: list[tuple[str, list[str]]]) -> list[Grid]:
    """(variant, overrides) of `sweep.train(profile, overrides)` calls as one-cell grids (fixed noise draw:
    the overrides as the notebook gives them)."""
    grids = []
    for variant, overrides in runs:
        flat = dict(o.split("=", 1) for o in overrides)
        method, noise, seed = flat.pop("method"), flat.pop("data.noise"), int(flat.pop("seed"))
        grids.append(Grid(profile=profile, methods=[method], noise=[noise], seeds=[seed], base=flat,
                          variants={variant: {}}, name=name, noise_draw="fixed"))
    return grids


def notebook_grids(notebook: str, profile: str, params: dict | None = None, folder: Path = NOTEBOOKS) -> list[Grid]:
    """The grids `notebook` runs in `profile` with `params` over its parameters cell, as the notebook
    builds them (cwd: notebooks/, so paths are relative to it, as in the notebooks)."""
    own = defaults(notebook, folder)  # a notebook reads only the names it has, of its own types (as papermill's)
    p = {**own, **{k: v for k, v in (params or {}).items() if k in own and type(v) is type(own[k])}, "PROFILE": profile}
    out_dir = p.get("OUT_DIR") or f"../runs/{profile}/runs"
    base = {"data.dataset": p["DATASET"], "data.data_root": p["DATA_ROOT"], "device": p["DEVICE"], "out_dir": out_dir}
    source = p.get("LABEL_SOURCE", "")
    common = [f"{k}={v}" for k, v in base.items()]
    if notebook == "00_quickstart":
        one = [*common, f"seed={p['SEED']}", "method=ce"]
        runs = [("default", [*one, f"data.noise={n}"]) for n in ("none", p["NOISE"])]
        from .config import build_config

        if build_config(profile, overrides=one).model.weights:  # the random start beside the pretrained one
            runs.append(("random-init", [*one, f"data.noise={p['NOISE']}", "model.weights="]))
        return _single(profile, notebook, runs)
    if notebook in ("02_mtac", "03_poi"):
        one = [*common, f"data.noise={p['NOISE']}", f"seed={p['SEED']}"]
        method, compared, switches = (("mtac", ("ce", "scn", "mtac"), p["ABLATIONS"]) if notebook == "02_mtac"
                                      else ("poi", ("ce", "poi"), [p["ABLATION"]]))
        runs = [("default", [*one, f"method={m}"]) for m in compared]
        for switch in switches:
            over = [f"{k}={v}" for k, v in switch.items()]
            runs.append((" ".join(over), [*one, f"method={method}", *over]))
        return _single(profile, notebook, runs)
    if notebook == "04_comparison":
        grid = comparison_grid(profile, p["NOISE"], p["SEEDS"], p["METHODS"], base, source)
        clean = clean_reference_grid(profile, grid.resolved("seeds"), base, source)
        return [grid] + ([clean] if clean else [])
    if notebook == "05_noise_sweep":
        return [noise_sweep_grid(profile, p["GRID"], p["NOISE"], p["SEEDS"], base, source)]
    if notebook == "06_ablations":
        return [ablation_grid(profile, p["GRID"], p["NOISE"], p["SEEDS"], p["VARIANTS"], base, source)]
    if notebook == "07_uncertainty":
        return list(uncertainty_grids(profile, p["NOISE"], p["SEEDS"], p["METHODS"], p["OOF_FOLDS"], base, source))
    if notebook == "08_weak_supervision":
        work = Path(f"../runs/{profile}") / "data" / "weak_supervision"  # Notebook.work_dir / "weak_supervision"
        synthetic = p["DATASET"] == "synthfer"
        target = ({"dataset": "rafdb", "root": work / "synthfer_rafdb"} if synthetic
                  else {"dataset": p["DATASET"], "root": Path(p["DATA_ROOT"])})
        side = {"pseudo": work / "pseudo_au_va.csv", **({"full": work / "exact_au_va.csv"} if synthetic else {})}
        variants = {k: {"data.au_file": str(f), "data.va_file": str(f)} for k, f in side.items()} | {"none": {}}
        if synthetic:
            variants = {"full": variants.pop("full"), **variants}
        return [weak_source_grid(profile, p["DEVICE"], out_dir, p["SOURCE_SEED"]),
                weak_grid(profile, p["NOISE"], p["SEEDS"], p["DEVICE"], out_dir, target, variants)]
    return []  # 01 trains nothing


def epoch_seconds(out_dir: Path, profile: str) -> tuple[dict[str, float], str]:
    """Method -> seconds per epoch of one run of `profile` (in-run time, start-up not counted), and where
    they come from: the median over this checkout's finished runs of the method
    (`sweep.measured_seconds`), else fercore's measured table (costs.yaml, its CPU named)."""
    here = measured_seconds(out_dir, profile, per_epoch=True)
    table = load_yaml(COSTS).get(profile, {})
    table_used = sorted(set(table.get("seconds_per_epoch", {})) - set(here))
    out = {**table.get("seconds_per_epoch", {}), **here}
    source = (f"this checkout's finished runs ({', '.join(sorted(here))})" if here else "")
    if table_used:
        source += ("; " if source else "") + f"costs.yaml for {', '.join(table_used)} ({table['measured']})"
    return out, source or "no measurement"


@dataclass
class PlannedRun:
    notebook: str
    grid: str
    cell: str
    method: str
    run_dir: Path
    status: str              # finished | resumable | to train | shared (an earlier notebook trains it)
    seconds: float | None    # estimated in-run seconds: the method's seconds per epoch x the run's epochs
    by: str = ""             # for `shared`: the notebook that trains it
    start: tuple[str, str] = ("", "")  # the run's (model.weights, model.backbone)


@dataclass
class Plan:
    runs: list[PlannedRun]
    cost_source: str         # where the seconds per epoch come from (`epoch_seconds`)
    pretrain: list[tuple[str, bool, float | None]]  # (backbone preset, cached, measured seconds) the runs start from


def plan(profile: str = "quick", notebooks: tuple[str, ...] = SUITE, params: dict | None = None,
         folder: Path = NOTEBOOKS) -> Plan:
    """Every run of `notebooks` in order, each once: the first notebook that asks for a run trains it
    (or reuses or resumes it), later ones share it. `params` (name -> value) override the notebooks'
    parameters of that name (as `./reproduce.sh` passes PROFILE, DATASET, DATA_ROOT, DEVICE); a notebook
    reads only the names it has."""
    code = code_hash()
    rows, seen = [], {}
    per_epoch: dict[str, float] | None = None
    source = "no run to estimate"
    for nb in notebooks:
        for grid in notebook_grids(nb, profile, params, folder):
            for cell in grid.cells():
                cfg = cell.config()
                rd = cell_run_dir(cell)
                path = (folder / rd.path) if not rd.path.is_absolute() else rd.path
                if per_epoch is None:
                    per_epoch, source = epoch_seconds(path.parent, profile)
                if path.name in seen:
                    rows.append(PlannedRun(nb, grid.name, cell.label, cell.method, path, "shared", None,
                                           seen[path.name]))
                    continue
                seen[path.name] = nb
                here = RunDir(path)
                status = ("finished" if here.finished else "resumable") if _same_run(here, cfg, code) else "to train"
                sec = per_epoch.get(cell.method)
                rows.append(PlannedRun(nb, grid.name, cell.label, cell.method, path, status,
                                       None if sec is None else sec * cfg.train.epochs,
                                       start=(cfg.model.weights, cfg.model.backbone)))
    return Plan(rows, source, _pretraining(rows, profile))


def _pretraining(rows: list[PlannedRun], profile: str) -> list[tuple[str, bool, float | None]]:
    """The `pretrain:` backbones the runs to train start from: cached or not, and their measured cost."""
    from .pretrain import PREFIX, folder_of, preset

    seconds = load_yaml(COSTS).get(profile, {}).get("pretrain_s", {})
    out = {}
    for r in rows:
        if r.status not in ("to train", "resumable"):
            continue
        spec, backbone = r.start
        if spec.startswith(PREFIX) and (spec, backbone) not in out:
            cached = (folder_of(preset(spec, backbone)) / "backbone.pt").is_file()
            out[spec, backbone] = (f"{spec} for {backbone}", cached, seconds.get(spec[len(PREFIX):]))
    return list(out.values())


def check_plan(nb, used) -> None:
    """A notebook's last check: the runs it used (run directories) are exactly those the plan lists for it
    (`nb`: the notebook's `fercore.notebook.Notebook`), so `python -m fercore plan` tells the truth."""
    planned = {r.run_dir.name for r in plan(nb.profile, (nb.name,), nb.params).runs}
    got = {Path(getattr(u, "path", u)).name for u in used}
    if got != planned:
        raise AssertionError(f"{nb.name}: runs used but not in the plan {sorted(got - planned)}, planned but not "
                             f"used {sorted(planned - got)}: fercore/suite.py no longer describes this notebook")


def plan_text(p: Plan, workers: int = 2, verbose: bool = False) -> str:
    """Per notebook: runs it trains, reuses (finished) and shares with an earlier notebook, and the
    estimated training time; then the suite's totals. `verbose` lists every run."""
    rows, lines, total, unknown = p.runs, [], 0.0, set()
    for nb in dict.fromkeys(r.notebook for r in rows):
        mine = [r for r in rows if r.notebook == nb]
        todo = [r for r in mine if r.status in ("to train", "resumable")]
        secs = sum(r.seconds for r in todo if r.seconds is not None)
        unknown |= {r.method for r in todo if r.seconds is None}
        total += secs
        finished, shared = (sum(r.status == s for r in mine) for s in ("finished", "shared"))
        lines.append(f"{nb}: {len(mine)} runs: {len(todo)} to train or resume (~{secs / workers / 60:.1f} min on "
                     f"{workers} workers), {finished} finished, {shared} shared with "
                     f"{', '.join(sorted({r.by for r in mine if r.by})) or 'no earlier notebook'}")
        if verbose:
            lines += [f"    {r.status:>10}  {r.cell}  {r.run_dir.name}" + (f"  (trained by {r.by})" if r.by else "")
                      + (f"  ~{r.seconds:.0f} s" if r.seconds is not None and r.status != "finished" else "")
                      for r in mine]
    distinct = [r for r in rows if r.status != "shared"]
    todo = [r for r in distinct if r.status in ("to train", "resumable")]
    lines.append(f"suite: {len(distinct)} distinct runs, {len(todo)} to train or resume; estimated training "
                 f"{total:.0f} s of runs, about {total / workers / 60:.1f} min on {workers} workers (seconds per "
                 f"epoch from {p.cost_source}; start-up, pretraining and the notebooks' "
                 "own analysis not counted)"
                 + (f"; no measurement for {', '.join(sorted(unknown))} (not counted)" if unknown else ""))
    for name, cached, seconds in p.pretrain:
        lines.append(f"pretraining {name}: " + ("cached" if cached else "to train first, alone" + (
            f" (~{seconds:.0f} s measured, costs.yaml)" if seconds is not None else "")))
    return "\n".join(lines)
