"""The notebooks' parameter check and figure/table records, and the figures index built from them."""
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
    index = notebook.write_index(tmp_path / "figs").read_text()
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
