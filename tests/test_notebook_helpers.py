"""The notebooks' parameter check and figure/table records, and the figures index built from them."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from fercore import notebook  # noqa: E402


def scope(**extra):
    return {"PROFILE": "smoke", "DATASET": "synthfer", "DATA_ROOT": "", "DEVICE": "cpu", **extra}


def test_parameters_refuse_unknown_missing_and_mistyped_names():
    nb = notebook.parameters(scope(SEED=1), "99_x", SEED=int)
    assert nb.profile == "smoke" and str(nb.out_dir) == "../runs/smoke/runs" and "device=cpu" in nb.data
    with pytest.raises(AssertionError, match="unknown parameters: \\['EPOCS'\\]"):
        notebook.parameters(scope(SEED=1, EPOCS=3), "99_x", SEED=int)
    with pytest.raises(AssertionError, match="missing: \\['SEED'\\]"):
        notebook.parameters(scope(), "99_x", SEED=int)
    with pytest.raises(AssertionError, match="SEED must be int"):
        notebook.parameters(scope(SEED="1"), "99_x", SEED=int)
    with pytest.raises(AssertionError, match="PROFILE must be one of"):
        notebook.parameters({**scope(SEED=1), "PROFILE": "fast"}, "99_x", SEED=int)
    with pytest.raises(AssertionError, match="DATA_ROOT goes with a real DATASET"):
        notebook.parameters({**scope(SEED=1), "DATA_ROOT": "/x"}, "99_x", SEED=int)


def test_figures_and_tables_are_recorded_and_indexed(tmp_path, monkeypatch):
    monkeypatch.setitem(notebook.FIGURES, "smoke", str(tmp_path / "figs"))
    nb = notebook.parameters(scope(NOISE="sym:0.3"), "05_demo", NOISE=str)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    nb.figure(fig, "demo_curve.png", "A curve\nsecond line")
    nb.table(pd.DataFrame({"method": ["ce"], "acc": [0.5]}), "demo_acc", "Accuracy")
    nb.text("hello\n", "demo.txt", "A text")
    (tmp_path / "figs" / "stray.png").write_bytes(b"x")
    # a real dataset's folder beside them (figures/ferplus/, the real profile) has its own records and index
    (tmp_path / "figs" / "ferplus" / notebook.MANIFEST).mkdir(parents=True)
    (tmp_path / "figs" / "ferplus" / "tables").mkdir()
    (tmp_path / "figs" / "ferplus" / "tables" / "comparison.csv").write_text("method\nce\n")
    (tmp_path / "figs" / "other").mkdir()
    (tmp_path / "figs" / "other" / "lost.png").write_bytes(b"x")
    index = notebook.write_index(tmp_path / "figs").read_text()
    assert "ferplus/" not in index and "- other/lost.png" in index
    for f in ("demo_curve.png", "tables/demo_acc.md", "demo.txt"):
        assert f"[{f}]({f})" in index
    assert "05_demo" in index and "NOISE='sym:0.3'" in index and "A curve |" in index
    assert "Not recorded by any notebook" in index and "- stray.png" in index
    assert (tmp_path / "figs" / "tables" / "demo_acc.tex").is_file()
    assert "tables/demo_acc.tex" not in index.split("Not recorded")[-1]


def test_a_dotted_table_name_keeps_its_dots(tmp_path):
    from fercore.tables import write_table

    df = pd.DataFrame({"method": ["ce"], "acc": [0.5]})
    a = write_table(df, tmp_path / "comparison_sym0.3", "a")
    b = write_table(df, tmp_path / "comparison_sym0.3_regime", "b")
    assert [p.name for p in a] == ["comparison_sym0.3.md", "comparison_sym0.3.tex", "comparison_sym0.3.csv"]
    assert {p.name for p in a}.isdisjoint(p.name for p in b)  # two tables never overwrite each other


def test_readme_findings_are_written_from_the_verdict_table(tmp_path):
    from fercore import tables
    from fercore.errors import ConfigError

    rows = [{"method": m, "noise": n, "seed": s,
             "last_acc": 0.7 + 0.01 * s + d + (0.005 if s % 2 else 0) * (m == "poi")}
            for n, k in (("sym:0.3", 5), ("none", 3)) for s in range(k)
            for m, d in (("ce", 0), ("mtac", 0.02), ("poi", 0.001), ("eac", -0.05))]
    vs = tables.versus(pd.DataFrame(rows))
    tables.write_table(vs, tmp_path / "tables" / "noise_sweep_vs_ce", "verdicts")
    readme = tmp_path / "README.md"
    block = "<!-- findings:noise_sweep_vs_ce -->\nstale words\n<!-- /findings:noise_sweep_vs_ce -->"
    readme.write_text(f"intro\n{block}\nend\n")
    assert notebook.refresh_findings(readme, tmp_path) == ["noise_sweep_vs_ce"]
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("\nend\n")
    sym = next(line for line in text.splitlines() if line.startswith("- `sym:0.3`"))
    assert sym.startswith("- `sym:0.3` (5 seeds): beat ce: mtac +0.020 [+0.020, +0.020]; within noise: poi +0.003 [")
    assert "lose to ce: eac -0.050" in sym
    assert notebook.refresh_findings(readme, tmp_path) == ["noise_sweep_vs_ce"] and readme.read_text() == text
    # a table of the old rule cannot be rendered as verdicts
    pd.DataFrame({"method": ["mtac"], "noise": ["sym:0.3"], "difference": [0.03], "spread": [0.01],
                  "verdict": ["beats"]}).to_csv(tmp_path / "tables" / "noise_sweep_vs_ce.csv", index=False)
    with pytest.raises(ConfigError, match="no column.*ci_high.*run ./reproduce.sh --notebook 05"):
        notebook.refresh_findings(readme, tmp_path)


def test_the_readmes_findings_blocks_are_the_committed_tables():
    """Every README block that states results (between `<!-- findings:NAME -->` markers) reads exactly
    as `refresh_findings` writes it from the committed table, so a regenerated table cannot leave
    stale prose (./reproduce.sh refreshes them)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    blocks = [name for name in notebook.FINDINGS if f"<!-- findings:{name} -->" in text]
    assert blocks, "the README states the noise sweep from its table"
    for name in blocks:
        inside = text.split(f"<!-- findings:{name} -->\n", 1)[1].split(f"\n<!-- /findings:{name} -->", 1)[0]
        assert inside == notebook.findings_block(name, root / "figures"), f"README block {name} is stale"


def test_the_readmes_eac_sentence_holds_for_the_committed_verdicts():
    """The README's prose says EAC loses the most under flipped labels: at every injected-noise setting of the
    committed verdict table EAC's paired difference to ce is the lowest and its verdict is not 'beats'."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = " ".join((root / "README.md").read_text().split())
    assert "EAC loses the most under flipped labels" in text
    vs = pd.read_csv(root / "figures" / "tables" / "noise_sweep_vs_ce.csv")
    for noise, rows in vs[vs["noise"] != "none"].groupby("noise"):
        low = rows.loc[rows["difference"].idxmin()]
        assert low["method"] == "eac" and low["verdict"] != "beats", (noise, rows.to_dict("records"))


def test_a_real_datasets_index_names_its_command_and_the_files_it_read(tmp_path):
    """write_index with `command` and `data_record`: the command as given, every label file's sha256 and the
    decoded images' fingerprints of that dataset's runs (another dataset's runs and damaged records ignored)."""
    def run(name, dataset, sha, label_source="one_vote", px=48, fold=None):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        oof = {"oof_folds": 3, "oof_fold": fold} if fold is not None else {"oof_folds": 0, "oof_fold": 0}
        (d / "config.json").write_text(json.dumps({"data": {"dataset": dataset, **oof}}))
        (d / "env.json").write_text(json.dumps({"data": {
            "image_size": px, "label_source": label_source, "test_fingerprint": "b" * 64,
            "train_fingerprint": ("c" if fold is not None else "a") * 64,
            "votes": {"fer2013new.csv": {"path": "/x/fer2013new.csv", "sha256": sha, "version": "v1"}}}}))
    run("ferplus-ce-1", "ferplus", "1" * 64)
    run("ferplus-ce-2", "ferplus", "1" * 64)  # the same files: listed once
    run("ferplus-ce-3", "ferplus", "1" * 64, label_source="ferplus")
    run("ferplus-ce-0", "ferplus", "1" * 64, fold=2)  # an out-of-fold run trains on a part: named as such, last
    run("rafdb-ce-1", "rafdb", "2" * 64)
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "env.json").write_text("{bad")
    record = notebook.data_record(tmp_path / "runs", "ferplus")
    assert record == [f"`fer2013new.csv`: sha256 `{'1' * 64}` (v1)",
                      f"decoded images at 48 px, one_vote labels: train `{'a' * 16}`, test `{'b' * 16}` "
                      "(fercore's data fingerprints, env.json)",
                      f"decoded images at 48 px, ferplus labels: train `{'a' * 16}`, test `{'b' * 16}` "
                      "(fercore's data fingerprints, env.json)",
                      f"decoded images at 48 px, one_vote labels, fold 2 of 3 left out (an out-of-fold run): "
                      f"train `{'c' * 16}`, test `{'b' * 16}` (fercore's data fingerprints, env.json)"]
    (tmp_path / "figs").mkdir()
    cmd = "./reproduce.sh --dataset ferplus --data-root /data/ferplus --label-source one_vote --notebook 04,05,07"
    index = notebook.write_index(tmp_path / "figs", command=cmd, data=record).read_text()
    assert f"```\n{cmd}\n```" in index and "sha256 `" + "1" * 64 in index and "2" * 64 not in index


def test_the_real_faces_blocks_are_refreshed_from_the_datasets_folder_only(tmp_path):
    """refresh_findings(folder="ferplus") rewrites the README blocks whose tables are in figures/ferplus/
    (the clean-reference verdicts and the swing among them) and leaves SynthFER's blocks alone, and the
    default leaves the dataset's blocks alone."""
    from fercore import tables

    rows = [{"method": m, "noise": "none", "seed": s, "last_acc": 0.6 + 0.01 * s + d}
            for s in range(3) for m, d in (("ce", 0.0), ("poi", -0.04), ("ce (majority labels)", 0.05))]
    df = pd.DataFrame(rows)
    vs = tables.versus(df, "ce (majority labels)", words=("above", "below"))
    tables.write_table(vs, tmp_path / "ferplus" / "tables" / "comparison_one_vote_vs_clean", "clean")
    regime = pd.DataFrame({"method": ["ce", "ce"], "seed": [0, 1], "peak acc": [0.66, 0.67], "peak epoch": [11, 12],
                           "last acc": [0.66, 0.665], "swing over last 3 epochs": [0.004, 0.012],
                           "rise over last 3 epochs": [0.001, 0.012], "still rising (> 1 point)": [False, True],
                           "flipped labels fitted, first": [0.1, 0.1], "flipped labels fitted, last": [0.3, 0.4]})
    tables.write_table(regime, tmp_path / "ferplus" / "tables" / "comparison_one_vote_regime", "regime")
    readme = tmp_path / "README.md"
    blocks = "".join(f"<!-- findings:{n} -->\nold\n<!-- /findings:{n} -->\n"
                     for n in ("ferplus_vs_clean", "ferplus_regime", "noise_sweep_vs_ce"))
    readme.write_text(blocks)
    synth = tables.versus(df[df["method"] != "ce (majority labels)"], "ce")
    tables.write_table(synth, tmp_path / "tables" / "noise_sweep_vs_ce", "synthfer")
    assert notebook.refresh_findings(readme, tmp_path) == ["noise_sweep_vs_ce"]
    assert readme.read_text().count("\nold\n") == 2  # the dataset's blocks untouched
    readme.write_text(blocks)
    assert notebook.refresh_findings(readme, tmp_path, "ferplus") == ["ferplus_vs_clean", "ferplus_regime"]
    text = readme.read_text()
    assert ("- poi trained on one annotator's vote: -0.090 [-0.090, -0.090] vs ce trained on the majority labels "
            "(below, 3 seeds).") in text
    assert "- ce trained on one annotator's vote: -0.050" in text
    assert ("- ce (2 seeds): peak 0.660-0.670 (epochs 11-12), last 0.660-0.665; training labels that differ from "
            "the crowd's majority fitted 0.10 after epoch 1, 0.30-0.40 at the last; moved 0.4-1.2 points over the "
            "last 3 epochs; 1 of 2 runs still rising") in text
    assert text.count("\nold\n") == 1  # SynthFER's block untouched


def test_the_readmes_real_faces_sentences_hold_for_the_committed_tables():
    """Each sentence of the README's "What these numbers show" on FERPlus (one annotator's vote) holds for the
    committed tables in figures/ferplus/tables/: the verdicts against ce and the clean reference, the order of
    the scores against the crowd's disagreement, the relabel harm, the gap of mean per-class accuracy."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = " ".join((root / "README.md").read_text().split())
    t = root / "figures" / "ferplus" / "tables"

    assert "No method beats ce on one annotator's vote." in text
    vs = pd.read_csv(t / "comparison_one_vote_vs_ce.csv")
    assert not vs["verdict"].eq("beats").any(), vs.to_dict("records")

    assert ("One vote per face costs ce itself accuracy against the majority labels, and no method wins it back: "
            "none ends above the clean reference.") in text
    clean = pd.read_csv(t / "comparison_one_vote_vs_clean.csv").set_index("method")
    assert clean.loc["ce", "verdict"] == "below" and not clean["verdict"].eq("above").any(), clean.to_dict("index")

    assert ("POI's u follows the crowd's disagreement most closely and MTAC's confidence comes next, while SCN's, "
            "RUL's and EAC's scores barely follow it (|rho| below 0.1); ce's label-aware per-sample loss follows it "
            "more closely than any method's own score.") in text
    amb = pd.read_csv(t / "uncertainty_ambiguity.csv")
    own = amb[amb["kind"] == "the method's own score"].assign(m=lambda d: d["score"].str.split(":").str[0])
    order = own.sort_values("rho", ascending=False)["m"].tolist()
    assert order[:2] == ["poi", "mtac"], order
    assert own.loc[own["m"].isin(["scn", "rul", "eac"]), "rho"].abs().lt(0.1).all(), own[["m", "rho"]]
    small = amb.loc[amb["score"] == "small loss (ce)", "rho"].iloc[0]
    assert small > own["rho"].max(), (small, own["rho"].max())

    assert "Most of the labels SCN and MTAC change (seed 0) agreed with the majority." in text
    relabel = pd.read_csv(t / "uncertainty_relabel.csv").set_index("method")
    for m in ("scn", "mtac"):
        assert relabel.loc[m, "harmed (right labels changed)"] > relabel.loc[m, "relabelled"] / 2, relabel.loc[m]

    assert "Mean per-class accuracy is far below accuracy (by more than 0.2) for every method" in text
    mean = {name: pd.read_csv(t / f"noise_sweep_{name}.csv").set_index("method").iloc[:, 0]
            .map(lambda v: float(str(v).split(" ± ")[0])) for name in ("last_acc", "mean_class_acc")}
    assert (mean["last_acc"] - mean["mean_class_acc"]).gt(0.2).all(), mean


def test_a_rendered_page_names_no_folder_of_the_machine_that_made_it(tmp_path):
    """`./reproduce.sh` scrubs every page it renders: the checkout, the cache, the data root and the
    kernel's cell files become names a reader can use (a committed page held /work/... and /tmp/...)."""
    from fercore.notebook import scrub_paths

    page = tmp_path / "04.html"
    page.write_text('<pre>/clone/fercore/data/readers/assemble.py:58: Notice: 4,000 of ferplus at /data/FER+\n'
                    '/clone/cache/pretrain/x/backbone.pt\n/tmp/ipykernel_29763/1493811921.py:11: Pandas4Warning\n'
                    'DATA_ROOT = "/data/FER+"</pre>')
    assert scrub_paths(page, data_root="/data/FER+", root="/clone", cache="/clone/cache") == 5
    assert page.read_text() == ('<pre>fercore/data/readers/assemble.py:58: Notice: 4,000 of ferplus at DIR\n'
                                '$FERCORE_CACHE/pretrain/x/backbone.pt\n[notebook cell]:11: Pandas4Warning\n'
                                'DATA_ROOT = "DIR"</pre>')
    assert scrub_paths(page, data_root="/data/FER+", root="/clone", cache="/clone/cache") == 0


def test_no_committed_page_or_figure_index_names_a_machine_folder():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pages = [*root.glob("docs/notebooks/**/*.html"), *root.glob("figures/**/*.md")]
    found = [f"{p.relative_to(root)}: {m}" for p in pages
             for m in re.findall(r"(?:/tmp/|/work/|/root/|/home/)[^\s\"<]*", p.read_text())]
    assert not found, found[:5]
