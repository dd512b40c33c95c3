"""The sweep runner: a grid of methods x noise protocols x seeds x named variants, run by `fit`.

`python -m fercore sweep GRID.yaml [--workers N] [--backend local|submitit]` and
`fercore.sweep.run(Grid(...))` for notebooks (docs/architecture.md#sweeps). A grid file:

```yaml
profile: quick
base: {data.n_train: 2000}                # overrides of every cell
methods: [ce, scn, rul, eac, mtac, poi]
noise: [none, sym:0.2, sym:0.4, asym:0.3]
seeds: [0, 1, 2]
seeds_at: {sym:0.2: [0, 1, 2, 3, 4]}      # optional: other seeds for some noise settings
noise_draw: per_seed                       # per_seed: data.noise_seed = seed (default); fixed: as base says
variants:                                  # named override sets; default: {default: {}}
  default: {}
  no-relabel: {mtac.relabel: none}         # a variant that sets <method>.<key> runs for that method only
```

Every cell's run directory is named by its whole config (`RunConfig.cell_name`: readable prefix +
hash), so two variants never share a folder and no notebook needs hand-made names. A finished
identical run is reused, an interrupted one resumed from its last checkpoint; a failing cell is
recorded with its error while the others go on. `--workers N` runs N processes (one thread each
on CPU, one GPU each when there are several); the `submitit` backend sends the same cells to
Slurm (or to submitit's local executor). One tqdm bar over the grid, one line per finished cell;
`<out_dir>/sweeps/<name>.json` records every cell's status, error and run directory.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import time
import traceback
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from .config import METHOD_PARAMS, PROFILES, RunConfig, build_config, identity_of, load_yaml, raise_problems
from .errors import ConfigError, RunError, collected_notices
from .files import write_atomic
from .rundir import RunDir, code_hash

BACKENDS = ("local", "submitit")
NOISE_DRAWS = ("per_seed", "fixed")  # Grid.noise_draw
GRIDS = Path(__file__).with_name("grids")  # the grids the notebooks and the GPU check run


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _override(key: str, value) -> str:
    if isinstance(value, (list, tuple)):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value}"


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    method: str
    noise: str
    seed: int
    variant: str
    overrides: tuple[str, ...]       # every key=value of this cell, base first
    profile: str

    def config(self) -> RunConfig:
        return build_config(self.profile, overrides=list(self.overrides))

    @property
    def label(self) -> str:
        return f"{self.method}/{self.noise}/s{self.seed}/{self.variant}"


@dataclass
class Grid:
    """methods x noise x seeds x variants over a base config (module docstring)."""

    profile: str = "quick"
    methods: list[str] | dict = field(default_factory=lambda: ["ce"])
    noise: list[str] | dict = field(default_factory=lambda: ["none"])   # or {profile: [...], default: [...]}
    seeds: list[int] | dict = field(default_factory=lambda: [0])
    variants: dict[str, dict] = field(default_factory=lambda: {"default": {}})
    base: dict = field(default_factory=dict)
    name: str = "sweep"
    # {noise setting: seeds} replacing `seeds` for those settings (the headline setting over more seeds);
    # like the other keys it may map profiles to values ({smoke: {}, default: {sym:0.3: [0, 1, 2, 3, 4]}})
    seeds_at: dict = field(default_factory=dict)
    # per_seed: every cell draws its flips with data.noise_seed = its seed, so the spread and the paired
    # intervals over seeds cover the draw of the flipped labels too; fixed: data.noise_seed as the base
    # config says (one draw for every seed) [ours]
    noise_draw: str = "per_seed"

    @classmethod
    def from_yaml(cls, path: str | Path) -> Grid:
        """A grid file, or the name of one of fercore's own grids (GRIDS: noise_sweep, ablations, ...)."""
        if not Path(path).exists() and (GRIDS / f"{path}.yaml").is_file():
            path = GRIDS / f"{path}.yaml"
        data = load_yaml(path)
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown grid key(s) {unknown}; expected {sorted(known)}")
        data.setdefault("name", Path(path).stem)
        return cls(**data)

    def _variant_methods(self, overrides: dict) -> set[str]:
        """The methods a variant applies to: those whose parameters it sets (or its `method`); all if none."""
        flat = _flatten(overrides)
        named = {k.split(".", 1)[0] for k in flat if k.split(".", 1)[0] in METHOD_PARAMS}
        if "method" in flat:
            named.add(str(flat["method"]))
        return named

    def resolved(self, key: str):
        """A grid value, or its entry for this grid's profile when it maps profiles to values
        (`noise: {quick: [...], paper: [...]}`; a `default` entry serves the other profiles)."""
        value = getattr(self, key)
        if key == "seeds_at" and isinstance(value, dict) and (not value or not set(value) <= {*PROFILES, "default"}):
            return value  # keyed by noise settings, the same for every profile
        if isinstance(value, dict) and key != "variants" and key != "base":
            if self.profile not in value and "default" not in value:
                raise ConfigError(f"grid key {key!r} has no entry for profile {self.profile!r} (nor 'default')")
            return value.get(self.profile, value.get("default"))
        return value

    def seeds_for(self, noise: str) -> list[int]:
        """The seeds of one noise setting for this grid's profile: its `seeds_at` entry, else `seeds`."""
        return {str(k): v for k, v in self.resolved("seeds_at").items()}.get(str(noise), self.resolved("seeds"))

    def cells(self) -> list[Cell]:
        """Every cell, with its config checked (all problems of all cells reported at once)."""
        problems = []
        for key, kind in (("methods", list), ("noise", list), ("seeds", list), ("variants", dict), ("base", dict),
                          ("seeds_at", dict)):
            if not isinstance(self.resolved(key), kind):
                problems.append(f"grid key {key!r} must be a {kind.__name__}, got {self.resolved(key)!r}")
        raise_problems(problems)
        methods, noises, seeds = self.resolved("methods"), self.resolved("noise"), self.resolved("seeds")
        seeds_at = {str(k): v for k, v in self.resolved("seeds_at").items()}
        problems += [f"grid: unknown method {m!r}; expected one of {sorted(METHOD_PARAMS)}"
                     for m in methods if m not in METHOD_PARAMS]
        problems += [f"grid key 'seeds_at': {n!r} is not one of the grid's noise settings {[str(x) for x in noises]}"
                     for n in seeds_at if n not in map(str, noises)]
        axes = {"methods": methods, "noise": noises, "seeds": seeds, "variants": list(self.variants),
                **{f"seeds_at[{n!r}]": v for n, v in seeds_at.items()}}
        for key, values in axes.items():
            if key.startswith("seeds") and not (isinstance(values, list) and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)):
                problems.append(f"grid key {key!r} must be a list of seeds (integers >= 0), got {values!r}")
            elif not values:
                problems.append(f"grid {self.name!r}: key {key!r} is empty; give at least one value")
            elif repeated := sorted({str(v) for v in values if values.count(v) > 1}):
                problems.append(f"grid {self.name!r}: key {key!r} repeats {', '.join(repeated)}; give each value once")
        if self.noise_draw not in NOISE_DRAWS:
            problems.append(f"grid key 'noise_draw' must be one of {list(NOISE_DRAWS)}, got {self.noise_draw!r}")
        if self.noise_draw == "per_seed" and "data.noise_seed" in _flatten(self.base):
            problems.append("grid: base sets data.noise_seed while noise_draw is per_seed (data.noise_seed = seed); "
                            "set noise_draw: fixed to keep one draw for every seed")
        raise_problems(problems)
        base = [_override(k, v) for k, v in _flatten(self.base).items()]
        out = []
        for vname, vover in self.variants.items():
            targets = self._variant_methods(vover or {})
            flat = {k: v for k, v in _flatten(vover or {}).items() if k != "method"}
            for method in methods:
                if targets and method not in targets:
                    continue
                for noise in noises:
                    for seed in self.seeds_for(noise):
                        draw = (f"data.noise_seed={seed}",) if self.noise_draw == "per_seed" else ()
                        over = (*base, f"method={method}", f"data.noise={noise}", f"seed={seed}", *draw,
                                *(_override(k, v) for k, v in flat.items()))
                        cell = Cell(method, str(noise), int(seed), vname, over, self.profile)
                        try:
                            cell.config()
                        except ConfigError as e:
                            problems += [f"grid cell {cell.label}: {line}" for line in str(e).splitlines()]
                        out.append(cell)
        raise_problems(problems)
        return out


@dataclass
class CellResult:
    cell: Cell
    status: str                      # reused | trained | resumed | failed
    run_dir: str
    seconds: float = 0.0
    error: str = ""
    last_acc: float | None = None
    notices: list[str] = field(default_factory=list)  # what the cell's run said, each once, in order

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cell"] = {**asdict(self.cell), "overrides": list(self.cell.overrides)}
        return d


def run_cell(cell: Cell, threads: int = 0, device: str = "") -> CellResult:
    """Train (or reuse, or resume) one cell in this process; an exception becomes a failed result.
    `threads` and `device` are the worker's own settings: they do not change the cell's name. The
    notices the cell raises are collected, each once, into `CellResult.notices`: the sweep prints
    them as `fercore: notice:` lines beside the cell's line, in whichever process the cell ran."""
    t0 = time.perf_counter()
    run_dir = ""
    with collected_notices() as said:
        try:
            from .engine import fit  # the engine is imported in the worker that trains

            name = cell.config().cell_name()
            extra = [f"name={name}", "train.progress=false"]
            extra += ([f"train.num_threads={threads}"] if threads else []) + ([f"device={device}"] if device else [])
            cfg = build_config(cell.profile, overrides=[*cell.overrides, *extra])
            rd = RunDir(Path(cfg.out_dir) / cfg.run_name)
            run_dir = str(rd.path)
            mode = _mode(rd, cfg)
            before = _stamp(rd)
            fit(cfg, if_exists=mode)
            status = "resumed" if mode == "resume" else ("reused" if before is not None and _stamp(rd) == before
                                                         else "trained")
            result = CellResult(cell, status, run_dir, time.perf_counter() - t0,
                                last_acc=rd.summary["last"].get("test_acc"))
        except Exception as e:  # noqa: BLE001 - a failing cell is recorded, the sweep goes on
            tail = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()[-1]
            result = CellResult(cell, "failed", run_dir, time.perf_counter() - t0, error=tail)
    result.notices = said
    return result


def train(profile: str, overrides: list[str]) -> RunDir:
    """One run in this process, named as the sweep names its cells (`RunConfig.cell_name`), so a
    notebook's single runs and the sweeps' cells are the same runs, trained once. It trains on one CPU
    thread, as a sweep worker does (unless `train.num_threads` is given): torch's results depend on the
    thread count in the last decimals, and the name does not, so one run must not depend on which
    path trained it. The process's thread count is restored afterwards."""
    import torch

    from .engine import fit

    cfg = build_config(profile, overrides=overrides)
    threads = [] if any(o.startswith("train.num_threads=") for o in overrides) else ["train.num_threads=1"]
    cfg = build_config(profile, overrides=[*overrides, *threads, f"name={cfg.cell_name()}"])
    rd = RunDir(Path(cfg.out_dir) / cfg.run_name)
    before = torch.get_num_threads()
    try:
        return fit(cfg, if_exists=_mode(rd, cfg))
    finally:
        torch.set_num_threads(before)


def _stamp(rd: RunDir) -> int | None:
    """The finished run's summary file mtime (None: not finished): unchanged by fit means reused."""
    try:
        return rd.file("summary.json").stat().st_mtime_ns
    except OSError:
        return None


def _same_run(rd: RunDir, cfg: RunConfig, code: str) -> bool:
    """Whether `rd` holds a run (finished or not) of `cfg`'s identity under the code hashed as `code`."""
    try:
        return rd.started and identity_of(rd.config) == identity_of(json.loads(cfg.to_json())) \
            and rd.env.get("code_hash") == code
    except (OSError, ValueError, RunError):
        return False


def _mode(rd: RunDir, cfg: RunConfig) -> str:
    """'resume' an interrupted run of the same config and code, else 'reuse' (fit reuses or restarts)."""
    return "resume" if not rd.finished and _same_run(rd, cfg, code_hash()) else "reuse"


def cell_run_dir(cell: Cell) -> RunDir:
    """Where a cell's run lives (without training it)."""
    cfg = cell.config()
    return RunDir(Path(cfg.out_dir) / cfg.cell_name())


def measured_seconds(out_dir: str | Path, profile: str, per_epoch: bool = False) -> dict[str, float]:
    """Method -> median in-run seconds (`summary.json`'s `wall_time_s`; divided by its `epochs` when
    `per_epoch`) of the finished runs of `profile` under `out_dir`, whatever their data, noise, seed or
    variant: what `plan` (and `fercore.suite.plan`, per epoch) estimates a run to cost. Start-up
    (imports, data, weights) is not in it."""
    times: dict[str, list[float]] = {}
    for summary in Path(out_dir).glob("*/summary.json"):
        try:
            s = json.loads(summary.read_text())
            config = json.loads((summary.parent / "config.json").read_text())
            if config.get("profile") == profile and "wall_time_s" in s:
                times.setdefault(s["method"], []).append(
                    float(s["wall_time_s"]) / (int(s["epochs"]) if per_epoch else 1))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            continue
    return {m: statistics.median(v) for m, v in times.items()}


def plan(grid: Grid, out_dir: str | None = None) -> list[dict]:
    """What `run(grid)` would do, without training: per cell its run directory, `finished` (a finished run
    of the same config and code: reused, unless its data changed), `resumable` (interrupted, same config
    and code) or `to train`, and the seconds a run of its method has taken here (`measured_seconds`;
    None where no run of that method has finished)."""
    if out_dir:
        grid = Grid(**{**asdict(grid), "base": {**grid.base, "out_dir": out_dir}})
    cells = grid.cells()
    code = code_hash()
    measured = measured_seconds(cells[0].config().out_dir, grid.profile) if cells else {}
    rows = []
    from .models.backbone import unknown_model

    for cell in cells:
        try:
            cfg = cell.config()
            error = unknown_model(cfg.model.backbone, "model.backbone")
            if error is not None:
                raise error
        except ConfigError as e:  # a cell `run` would record as failed
            rows.append({"cell": cell.label, "run_dir": "", "method": cell.method, "status": "refused",
                         "seconds": None, "error": str(e)})
            continue
        rd = cell_run_dir(cell)
        status = ("finished" if rd.finished else "resumable") if _same_run(rd, cfg, code) else "to train"
        rows.append({"cell": cell.label, "run_dir": str(rd.path), "method": cell.method, "status": status,
                     "seconds": measured.get(cell.method)})
    return rows


def plan_text(rows: list[dict], workers: int) -> str:
    """The plan as lines, then the totals: runs to train and the estimated time on `workers` processes."""
    lines = [f"{r['status']:>10}  {r['cell']}" + (f"  ~{r['seconds']:.0f} s" if r["seconds"] is not None
                                                 and r["status"] != "finished" else "")
             + (f"  ({r['error']})" if r.get("error") else "") for r in rows]
    todo = [r for r in rows if r["status"] in ("to train", "resumable")]
    known = [r["seconds"] for r in todo if r["seconds"] is not None]
    unknown = sorted({r["method"] for r in todo if r["seconds"] is None})
    refused = sum(r["status"] == "refused" for r in rows)
    lines.append(f"{len(rows)} runs: {len(rows) - len(todo) - refused} finished (reused), {len(todo)} to train or "
                 f"resume" + (f", {refused} refused (their config does not build)" if refused else ""))
    if todo:
        lines.append(f"estimated training: {sum(known):.0f} s of runs, about {sum(known) / workers / 60:.1f} min on "
                     f"{workers} worker(s), from the median in-run time of this profile's finished runs of each method "
                     "(start-up not counted)"
                     + (f"; no finished run to measure for {', '.join(unknown)} (not counted)" if unknown else ""))
    return "\n".join(lines)


def _prepare_data(cells: list[Cell]) -> list[str]:
    """Generate or decode each distinct dataset, and train each distinct `pretrain:` backbone, once
    before the workers start (they then read the caches). Returns the notices raised, each once."""
    from .data.datasets import load_dataset
    from .pretrain import PREFIX, resolve

    seen = set()
    with collected_notices() as said:
        for cell in cells:
            cfg = cell.config()
            key = json.dumps(asdict(cfg.data), sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                load_dataset(cfg.data)
            weights = (cfg.model.weights, cfg.model.backbone)
            if cfg.model.weights.startswith(PREFIX) and weights not in seen:
                seen.add(weights)
                with contextlib.suppress(ConfigError):  # e.g. an unknown backbone: its cells fail, each with the error
                    resolve(*weights)
    return said


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


@dataclass
class SweepResult:
    grid: Grid
    results: list[CellResult]
    path: Path

    @property
    def failed(self) -> list[CellResult]:
        return [r for r in self.results if r.status == "failed"]

    def runs(self) -> list[tuple[Cell, RunDir]]:
        """(cell, run directory) of every finished cell, in grid order."""
        return [(r.cell, RunDir(r.run_dir)) for r in self.results if r.status != "failed"]

    def summary(self) -> str:
        counts = {s: sum(r.status == s for r in self.results) for s in ("trained", "resumed", "reused", "failed")}
        lines = [f"sweep {self.grid.name}: {len(self.results)} cells: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items())]
        lines += [f"  failed {r.cell.label}: {r.error}" for r in self.failed]
        return "\n".join(lines)


def run(grid: Grid, *, workers: int = 1, backend: str = "local", out_dir: str | None = None,
        progress: bool = True, submitit_folder: str | None = None, slurm: dict | None = None,
        retries: int = 3) -> SweepResult:
    """Run every cell of `grid`; returns the results (failed cells included, with their errors).
    With local workers, a cell whose worker died is run again (resumed) up to `retries` times."""
    if backend not in BACKENDS:
        raise ConfigError(f"sweep backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if workers < 1:
        raise ConfigError(f"sweep --workers must be >= 1, got {workers}")
    if out_dir:
        grid = Grid(**{**asdict(grid), "base": {**grid.base, "out_dir": out_dir}})
    cells = grid.cells()
    summary_path = Path(cells[0].config().out_dir if cells else (out_dir or "runs")) / "sweeps" / f"{grid.name}.json"
    results: list[CellResult | None] = [None] * len(cells)
    said: set[str] = set()

    def say(text: str, where: str = "") -> None:
        """A notice in the CLI's one-line format, in whichever process it was raised; each text once per
        sweep (a dataset's notice is every cell's: the summary JSON keeps each cell's own list)."""
        if text in said:
            return
        said.add(text)
        line = f"fercore: notice: {where}{text}"
        tqdm.write(line, file=sys.stderr) if progress else print(line, file=sys.stderr, flush=True)

    for text in _prepare_data(cells):
        say(text)
    bar = tqdm(total=len(cells), desc=f"sweep {grid.name}", disable=not progress)

    def done(i: int, r: CellResult) -> None:
        results[i] = r
        bar.update(1)
        acc = f" last acc {r.last_acc:.4f}" if r.last_acc is not None else ""
        msg = f"{r.status:8s} {r.cell.label}{acc} ({r.seconds:.0f} s)" + (f": {r.error}" if r.error else "")
        tqdm.write(msg) if progress else print(msg, flush=True)
        for text in r.notices:
            say(text, f"{r.cell.label}: ")
        _write_summary(summary_path, grid, results)

    if backend == "submitit":
        _run_submitit(cells, done, submitit_folder or str(summary_path.parent / f"{grid.name}-submitit"), slurm)
    elif workers == 1:
        for i, cell in enumerate(cells):
            done(i, run_cell(cell))
    else:
        _run_local(cells, done, workers, retries)
    bar.close()
    out = SweepResult(grid, [r for r in results if r is not None], summary_path)
    return out


def _run_local(cells: list[Cell], done, workers: int, retries: int) -> None:
    """The cells on `workers` spawned processes. A worker that dies (killed, out of memory) breaks
    the pool: a new pool takes the cells that had not finished, and each resumes from its last
    checkpoint. A cell seen running when its pool broke `retries` + 1 times is recorded as failed, so
    a cell that kills its worker cannot loop (when no broken cell was seen running, the first
    `workers` of them are blamed: every broken pool counts against some cell)."""
    gpus = _gpu_count()
    ctx = multiprocessing.get_context("spawn")
    deaths = [0] * len(cells)
    todo = list(range(len(cells)))
    while todo:
        with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = {pool.submit(run_cell, cells[i], 0 if gpus else 1, f"cuda:{i % gpus}" if gpus > 1 else ""): i
                       for i in todo}
            broken, running, pending = [], set(), set(futures)
            while pending:
                finished, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    i = futures[fut]
                    try:
                        done(i, fut.result())
                    except BrokenProcessPool:  # a worker died; the cells it may have held run again
                        broken.append(i)
                    except Exception as e:  # noqa: BLE001 - the cell could not be sent or its result returned
                        done(i, CellResult(cells[i], "failed", "", error=f"worker failed: {type(e).__name__}: {e}"))
                if pending:  # polled while the pool works (not after it broke): which cells a death may hit
                    running = {futures[f] for f in pending if f.running()}
        blamed = [i for i in todo if i in broken and i in running] or [i for i in todo if i in broken][:workers]
        todo = []
        for i in sorted(broken):
            deaths[i] += i in blamed
            if deaths[i] > retries:
                done(i, CellResult(cells[i], "failed", str(cell_run_dir(cells[i]).path),
                                   error=f"its worker died {deaths[i]} times (killed, or out of memory)"))
            else:
                todo.append(i)


def _run_submitit(cells: list[Cell], done, folder: str, slurm: dict | None) -> None:
    """Each cell as one submitit job: Slurm when available, else submitit's local executor."""
    import submitit  # optional: only this backend needs it

    executor = submitit.AutoExecutor(folder=folder, cluster=None if _has_slurm() else "local")
    executor.update_parameters(**(slurm or {"timeout_min": 60}))
    jobs = [executor.submit(run_cell, cell, 1) for cell in cells]
    for i, job in enumerate(jobs):
        try:
            done(i, job.result())
        except Exception as e:  # noqa: BLE001 - the job itself failed (killed, node lost)
            done(i, CellResult(cells[i], "failed", "", error=f"job {job.job_id} failed: {type(e).__name__}: "
                                                             f"{str(e).splitlines()[0] if str(e) else ''}"))


def _has_slurm() -> bool:
    return any(os.access(Path(p) / "sbatch", os.X_OK) for p in os.environ.get("PATH", "").split(os.pathsep))


def _write_summary(path: Path, grid: Grid, results: list[CellResult | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"grid": asdict(grid), "cells": [r.to_dict() for r in results if r is not None]},
                                  indent=2, default=str))


def load_summary(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def grid_yaml(grid: Grid) -> str:
    return yaml.safe_dump(asdict(grid), sort_keys=False)
