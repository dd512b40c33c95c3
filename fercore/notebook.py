"""What every notebook's second cell does: check the papermill parameters, then derive the paths
(docs/notebooks.md#4-the-validation-cell).

A notebook's `parameters` cell holds flat upper-case literals; papermill injects overrides after
it. `parameters(globals(), NOISE=str, ...)` then checks that exactly the expected upper-case names
are present (an injected typo such as `-p EPOCS 3` would otherwise be a silent new variable), each
of its type, that PROFILE is a known profile and DATA_ROOT goes with a real DATASET, and returns
the derived values the notebook uses in lower case.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from .config import PROFILES

COMMON = {"PROFILE": str, "DATASET": str, "DATA_ROOT": str, "DEVICE": str}  # reproduce.sh passes these four
FIGURES = {"smoke": "../runs/smoke/figures", "quick": "../figures", "paper": "../figures/paper"}


def parameters(scope: dict, **spec: type) -> SimpleNamespace:
    """Check the notebook's upper-case globals against COMMON + `spec` (name -> type) and return
    `profile`, `out_dir` (runs shared by all notebooks), `fig_dir` (where this profile's figures go),
    `work_dir` (scratch files) and `data` (the `key=value` overrides every run of the notebook takes)."""
    spec = {**COMMON, **spec}
    given = {k: v for k, v in scope.items() if k.isupper() and not k.startswith("_")}
    unknown, missing = sorted(set(given) - set(spec)), sorted(set(spec) - set(given))
    assert not unknown and not missing, f"unknown parameters: {unknown}, missing: {missing}"
    for k, t in spec.items():
        assert type(given[k]) is t, f"{k} must be {t.__name__}, got {given[k]!r}"
    profile = given["PROFILE"]
    assert profile in PROFILES, f"PROFILE must be one of {sorted(PROFILES)}, got {profile!r}"
    assert (given["DATASET"] == "synthfer") == (given["DATA_ROOT"] == ""), \
        "DATA_ROOT goes with a real DATASET, and only then"
    out_dir = Path(given.get("OUT_DIR") or f"../runs/{profile}/runs")
    fig_dir = Path(FIGURES.get(profile, f"../figures/{profile}"))
    data = [f"data.dataset={given['DATASET']}", f"data.data_root={given['DATA_ROOT']}",
            f"device={given['DEVICE']}", f"out_dir={out_dir}"]
    return SimpleNamespace(profile=profile, out_dir=out_dir, fig_dir=fig_dir, work_dir=Path(f"../runs/{profile}/data"),
                           data=data)
