"""Weak supervision on real layouts: AU / VA side files for any reader (format, merge rule, coverage,
one-line errors), MTAC's and POI's `auto` auxiliary tasks, AU metrics that say what they average,
and pseudo-labels written by one run and trained on by another (docs/datasets.md#side-files,
docs/mtac.md#weak-supervision-with-pseudo-labels)."""
import csv
import json

import fixtures as fx
import numpy as np
import pytest
import torch
from fixtures import read

from fercore.cli import main
from fercore.config import build_config
from fercore.data.datasets import load_dataset
from fercore.data.doctor import check
from fercore.engine import fit
from fercore.errors import ConfigError, DataError, RunError
from fercore.methods import get_method
from fercore.metrics import au_f1
from fercore.pseudo_label import parse_au_map, pseudo_label, target_data


def write(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture
def raf(tmp_path, faces):
    fx.write_rafdb(tmp_path / "raf", *faces)
    return tmp_path / "raf"


def by_id(fs):
    return {i: k for k, i in enumerate(fs.ids)}


# --- side files: format and merge rule -----------------------------------------------------------

def test_side_files_attach_au_and_va_by_id_with_masks_and_coverage(raf, tmp_path):
    # an AU table with the extra columns real tables carry, OpenFace-style names, one empty cell,
    # an intensity column, and a confidence column; a VA file with its own confidence
    au = write(tmp_path / "au.csv", [["id", "subject", "emotion", "AU01", "au4", "AU12_r", "confidence"],
                                     ["train_00001.jpg", "S1", "happy", "1", "0", "3", "0.9"],
                                     ["train_00002.jpg", "S1", "sad", "0", "", "1", "0.95"],
                                     ["train_00003.jpg", "S2", "sad", "1", "1", "0", "0.2"],    # below 0.5: mask 0
                                     ["test_0001.jpg", "S3", "fear", "0.7", "1", "5", ""]])
    va = write(tmp_path / "va.csv", [["id", "valence", "arousal", "va_confidence"],
                                     ["train_00001.jpg", "0.5", "-0.25", "1"], ["train_00004.jpg", "", "", "1"]])
    train, test = read("rafdb", raf, f"data.au_file={au}", f"data.va_file={va}", "data.side_min_confidence=0.5")
    assert train.meta["au_names"] == ["AU1", "AU4", "AU12"] and test.meta["au_names"] == ["AU1", "AU4", "AU12"]
    k = by_id(train)
    # AU12_r is a FACS intensity: >= 2 is present
    first = k["train_00001.jpg"]
    assert train.au[first].tolist() == [1, 0, 1] and train.au_mask[first].tolist() == [1, 1, 1]
    assert train.au_mask[k["train_00002.jpg"]].tolist() == [1, 0, 1] and train.au[k["train_00002.jpg"]][2] == 0
    assert train.au_mask[k["train_00003.jpg"]].sum() == 0                     # its confidence is below the bar
    assert train.au_mask[k["train_00005.jpg"]].sum() == 0                     # no row: mask 0
    assert test.au[0].tolist() == pytest.approx([0.7, 1, 1])                   # a probability is a soft target
    assert train.va[k["train_00001.jpg"]].tolist() == [0.5, -0.25] and train.va_mask[k["train_00001.jpg"]] == 1
    assert train.va_mask[k["train_00004.jpg"]] == 0 and train.va_mask.sum() == 1
    info = train.meta["side_files"]
    assert info["rule"] == "fill" and info["files"]["au"]["ignored_columns"] == ["subject", "emotion"]
    assert info["files"]["au"]["rows_below_confidence"] == 1
    assert info["coverage"]["train"]["au_after"] == 2 and info["coverage"]["test"]["au_after"] == 1
    assert info["coverage"]["train"]["va_after"] == 1 and info["coverage"]["train"]["au_before"] == 0
    # the side files are part of the data fingerprint: another file, another fingerprint
    bare, _ = read("rafdb", raf)
    assert bare.au is None and bare.fingerprint() != train.fingerprint()


def test_fill_keeps_a_readers_own_labels_and_replace_overrides_them(tmp_path, faces):
    truth = fx.write_affwild2(tmp_path / "aw", *faces)
    own, _ = read("affwild2", tmp_path / "aw")
    frame3 = "10-60-1280x720/00003"                                # AU1 is -1 (unannotated) there
    frame1 = "10-60-1280x720/00001"
    assert own.au_mask[by_id(own)[frame3], 0] == 0
    side = write(tmp_path / "au.csv", [["id", "AU1", "AU5"], [frame1, 1 - truth[frame1]["au"][0], "1"],
                                       [frame3, "1", "0"]])
    filled, _ = read("affwild2", tmp_path / "aw", f"data.au_file={side}")
    k = by_id(filled)
    assert filled.meta["au_names"] == own.meta["au_names"] + ["AU5"]          # the reader's columns first
    assert filled.au[k[frame1], 0] == truth[frame1]["au"][0]                  # its own label wins
    assert filled.au[k[frame3], 0] == 1 and filled.au_mask[k[frame3], 0] == 1  # filled where it had none
    assert filled.au[k[frame1], -1] == 1 and filled.au_mask[:, -1].sum() == 2
    assert filled.meta["side_files"]["coverage"]["train"]["au_file"]["ignored_own"] == 1
    replaced, _ = read("affwild2", tmp_path / "aw", f"data.au_file={side}", "data.side_merge=replace")
    assert replaced.au[by_id(replaced)[frame1], 0] == 1 - truth[frame1]["au"][0]
    assert replaced.meta["side_files"]["coverage"]["train"]["au_file"]["replaced_own"] == 1


def test_ckplus_facs_tables_with_extra_columns_and_split_subject_sequence(tmp_path, faces):
    _, au_file = fx.write_ckplus(tmp_path, faces[0])
    rows = list(csv.reader(open(au_file)))
    # the same codes as a NetFACS-style export: subject and sequence apart, the emotion beside them
    wide = write(tmp_path / "facs_wide.csv", [["subject", "sequence", "emotion", "AU1", "AU4", "AU12"]]
                 + [[r[0][:4], str(int(r[0][5:])), "happy", *r[1:]] for r in rows[1:]])
    a, _ = read("ckplus", tmp_path, "data.n_folds=3", f"data.au_file={au_file}")
    b, _ = read("ckplus", tmp_path, "data.n_folds=3", f"data.au_file={wide}")
    assert a.meta["au_names"] == b.meta["au_names"] == ["AU1", "AU4", "AU12"]
    assert torch.equal(a.au, b.au) and torch.equal(a.au_mask, b.au_mask) and a.au_mask.sum() > 0
    assert b.meta["side_files"]["files"]["au"]["key"] == "sequence"
    assert b.meta["side_files"]["files"]["au"]["ignored_columns"] == ["emotion"]


@pytest.mark.parametrize("rows, message", [
    ([["id", "AU1"], ["train_00001.jpg", "1"], ["train_99999.jpg", "0"]],
     r"au.csv:3: image id 'train_99999.jpg' is no sample of dataset 'rafdb'"),
    ([["id", "AU1", "AU2"], ["train_00001.jpg", "1", "0"], ["train_00002.jpg", "1"]],
     r"au.csv:3: expected 3 columns, got 2"),
    ([["id", "AU1"], ["train_00001.jpg", "1"], ["train_00002.jpg", "3"]],
     r"au.csv:3: AU1 value '3' is outside \[0, 1\] \(a FACS intensity 0-5\? name the column AU1_r"),
    ([["id", "AU1"], ["train_00001.jpg", "-0.5"]], r"au.csv:2: AU1 value '-0.5' is outside \[0, 1\]$"),
    ([["id", "AU1_r"], ["train_00001.jpg", "6"]], r"au.csv:2: AU1_r value '6' is outside \[0, 5\]"),
    ([["id", "AU1"], ["train_00001.jpg", "1"], ["train_00002.jpg", "0"], ["train_00001.jpg", "0"]],
     r"au.csv:4: train_00001.jpg given twice \(first at line 2\)"),
    ([["id", "AU1"], ["train_00001.jpg", "yes"]], r"au.csv:2: AU1 value 'yes' is not a number"),
    ([["image", "AU1"], ["train_00001.jpg", "1"]], r"au.csv:1: header 'image,AU1' has no key column"),
    ([["id", "AU1", "AU01"], ["train_00001.jpg", "1", "1"]], r"au.csv:1: columns 'AU1' and 'AU01' both give AU1"),
    ([["id", "subject"], ["train_00001.jpg", "1"]], r"au.csv:1: header 'id,subject' has no AU column"),
    ([["id", "AU1", "confidence"], ["train_00001.jpg", "1", "1.5"]],
     r"au.csv:2: confidence value '1.5' is outside \[0, 1\]"),
])
def test_bad_au_side_files_name_the_file_and_line(raf, tmp_path, rows, message):
    path = write(tmp_path / "au.csv", rows)
    with pytest.raises(DataError, match=message):
        read("rafdb", raf, f"data.au_file={path}")


@pytest.mark.parametrize("rows, message", [
    ([["id", "valence", "arousal"], ["train_00001.jpg", "0.2", "1.4"]], r"va.csv:2: arousal value '1.4' is outside"),
    ([["id", "valence", "arousal"], ["train_00001.jpg", "0.2", ""]], r"va.csv:2: valence and arousal must be given"),
    ([["id", "valence"], ["train_00001.jpg", "0.2"]], r"va.csv:1: header 'id,valence' lacks the column\(s\) arousal"),
    ([["id", "valence", "arousal"], ["train_00001.jpg", "0.2", "0.1"], ["train_00001.jpg", "0", "0"]],
     r"va.csv:3: train_00001.jpg given twice"),
])
def test_bad_va_side_files_name_the_file_and_line(raf, tmp_path, rows, message):
    path = write(tmp_path / "va.csv", rows)
    with pytest.raises(DataError, match=message):
        read("rafdb", raf, f"data.va_file={path}")


def test_a_bad_side_file_stops_the_cli_with_one_line_naming_file_and_line(raf, tmp_path, capsys):
    bad = write(tmp_path / "va.csv", [["id", "valence", "arousal"], ["train_00001.jpg", "0.1", "0.2"],
                                      ["train_00002.jpg", "0.1", "-3"]])
    out = tmp_path / "runs"
    assert main(["train", "--profile", "smoke", "method=mtac", "data.dataset=rafdb", f"data.data_root={raf}",
                 f"data.va_file={bad}", f"out_dir={out}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fercore: error:")]
    assert err == [f"fercore: error: {bad}:3: arousal value '-3' is outside [-1, 1]"]
    assert not out.exists() or not any(out.iterdir())                    # stopped before any run directory


def test_keys_are_checked_against_the_whole_layout_not_the_subsample(raf, tmp_path):
    path = write(tmp_path / "va.csv", [["id", "valence", "arousal"]]
                 + [[f"train_{i:05d}.jpg", "0.1", "0.2"] for i in range(1, 25)])
    train, _ = read("rafdb", raf, f"data.va_file={path}", "data.n_train=5")
    assert len(train) == 5 and train.va_mask.sum() == 5
    bad = write(tmp_path / "bad.csv", [["id", "valence", "arousal"], ["test_9999.jpg", "0", "0"]])
    with pytest.raises(DataError, match=r"bad.csv:2: image id 'test_9999.jpg' is no sample"):
        read("rafdb", raf, f"data.va_file={bad}", "data.n_train=5")


def test_synthfer_keeps_its_exact_labels_unless_told_to_replace(tmp_path):
    cfg = build_config("smoke", overrides=["data.n_train=16", "data.n_test=8", "data.image_size=32"])
    exact, _ = load_dataset(cfg.data)
    side = write(tmp_path / "va.csv", [["id", "valence", "arousal"], ["train_00003", "0.9", "-0.9"]])
    same, _ = load_dataset(build_config("smoke", overrides=["data.n_train=16", "data.n_test=8", "data.image_size=32",
                                                            f"data.va_file={side}"]).data)
    assert torch.equal(same.va, exact.va)
    assert same.meta["side_files"]["coverage"]["train"]["va_file"]["ignored_own"] == 1
    new, _ = load_dataset(build_config("smoke", overrides=["data.n_train=16", "data.n_test=8", "data.image_size=32",
                                                           f"data.va_file={side}", "data.side_merge=replace"]).data)
    assert new.va[3].tolist() == pytest.approx([0.9, -0.9]) and torch.equal(new.va[4], exact.va[4])


# --- the data doctor: coverage, and every side-file problem at once -------------------------------------

def test_doctor_reports_coverage_per_split_and_lists_every_side_file_problem(raf, tmp_path):
    ok = write(tmp_path / "au.csv", [["id", "AU1", "AU2"], ["train_00001.jpg", "1", "0"], ["test_0002.jpg", "0", "1"]])
    cfg = build_config("smoke", overrides=["data.dataset=rafdb", f"data.data_root={raf}", f"data.au_file={ok}"])
    r = check(cfg.data, decode=2)
    assert r.ok, r.problems
    assert r.coverage["train"]["au_after"] == 1 and r.coverage["test"]["au_after"] == 1
    assert r.coverage["train"]["images"] == 24 and r.coverage["train"]["va_after"] == 0
    text = r.text()
    assert "train: 24 images; AU targets 0 -> 1; VA targets 0 -> 0" in text and "au_file au.csv" in text
    plain = check(build_config("smoke", overrides=["data.dataset=rafdb", f"data.data_root={raf}"]).data, decode=2)
    assert "auxiliary targets (no side files): train: AU 0 / VA 0 of 24 images" in plain.text()
    bad = write(tmp_path / "bad.csv", [["id", "AU1"], ["train_00001.jpg", "2"], ["nope.jpg", "1"],
                                       ["train_00002.jpg"], ["train_00003.jpg", "1"], ["train_00003.jpg", "0"]])
    cfg = build_config("smoke", overrides=["data.dataset=rafdb", f"data.data_root={raf}", f"data.au_file={bad}"])
    r = check(cfg.data, decode=2)
    side = [p for p in r.problems if "bad.csv" in p]
    assert len(side) == 4 and not r.ok, r.problems
    for line, what in ((2, "outside [0, 1]"), (3, "no sample"), (4, "expected 2 columns"), (6, "given twice")):
        assert any(f"bad.csv:{line}: " in p and what in p for p in side), (line, side)


# --- AU metrics --------------------------------------------------------------------------------------

def test_au_f1_says_what_it_averages():
    """The headline (`mean`, and a run's `test_au_f1`) is the macro over the AUs present (issue 21, case 3)."""
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])     # AU3 has no positive
    p = np.array([[0.9, 0.2, 0.6], [0.2, 0.8, 0.1], [0.1, 0.9, 0.1], [0.7, 0.6, 0.2]])
    r = au_f1(y, p, None, ["AU1", "AU2", "AU3"])
    # AU1: tp 1 fp 1 fn 1 -> 0.5; AU2: tp 2 fp 1 -> 0.8; AU3: no positive -> 0 (and one false positive)
    assert r["per_au"] == pytest.approx({"AU1": 0.5, "AU2": 0.8, "AU3": 0.0})
    assert r["macro_all"] == pytest.approx(1.3 / 3)
    assert r["macro_present"] == r["mean"] == pytest.approx(0.65) and r["absent"] == ["AU3"] and r["n_absent"] == 1
    assert r["micro"] == pytest.approx(2 * 3 / (2 * 3 + 3 + 1))        # tp 3, fp 3, fn 1 pooled


# --- MTAC and POI decide their auxiliary tasks from the data ---------------------------------------------

def test_explicit_auxiliary_tasks_without_targets_report_every_problem_at_once(tiny_config, synth_small):
    bare = synth_small[0].replace(au=None, au_mask=None, va=None, va_mask=None)
    with pytest.raises(ConfigError) as e:
        get_method("mtac")(tiny_config("mtac.au=graph", "mtac.va=ccc", method="mtac"), bare)
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("mtac.au=graph needs AU labels") and "mtac.au=auto" in lines[0]
    assert lines[1].startswith("mtac.va=ccc needs valence-arousal labels") and "data.va_file" in lines[1]
    # a mask of zeros is no target either
    masked = synth_small[0].replace(au_mask=torch.zeros_like(synth_small[0].au_mask))
    m = get_method("mtac")(tiny_config("mtac.au=auto", "mtac.va=auto", method="mtac"), masked)
    assert m.au_head is None and m.va_head is not None and m.describe()["auxiliary"]["au"]["used"] == "none"


def test_poi_au_supervision_auto(tiny_config, synth_small, capsys):
    bare = synth_small[0].replace(au=None, au_mask=None)
    poi = get_method("poi")
    with pytest.raises(ConfigError, match=r"poi.au_weight=1.0.*poi.au_supervision=auto"):
        poi(tiny_config("poi.au_weight=1.0", "poi.au_supervision=required", method="poi"), bare)
    m = poi(tiny_config("poi.au_weight=1.0", "poi.au_supervision=auto", method="poi"), bare)
    assert not m.au_supervised and "poi: PIN AU supervision off (auto: dataset 'synthfer' has no labels" in \
        capsys.readouterr().out
    m = poi(tiny_config("poi.au_weight=1.0", "poi.au_supervision=auto", method="poi"), synth_small[0])
    assert m.au_supervised and m.describe()["au_supervision"]["used"] is True


@pytest.mark.parametrize("dataset", ["fer2013", "ferplus", "rafdb"])
def test_mtac_trains_on_a_layout_without_au_or_va_in_one_start(tmp_path, faces, tiny_config, capsys, dataset):
    root = tmp_path / dataset
    (fx.write_rafdb if dataset == "rafdb" else fx.write_fer)(root, *faces)
    cfg = tiny_config(f"data.dataset={dataset}", f"data.data_root={root}", "mtac.au=auto", "mtac.va=auto",
                      method="mtac")
    run = fit(cfg)
    out = capsys.readouterr().out
    assert f"mtac: AU task off (auto: dataset {dataset!r} has no AU targets" in out
    assert f"VA task off (auto: dataset {dataset!r} has no valence-arousal targets" in out
    aux = run.env["method"]["auxiliary"]
    assert aux["au"]["used"] == aux["va"]["used"] == "none" and run.finished


# --- pseudo-labels: written by one run, trained on by another ---------------------------------------------

@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A tiny MTAC run on SynthFER, where exact AUs and VA exist (the pseudo-label source)."""
    out = tmp_path_factory.mktemp("source")
    cfg = build_config("smoke", overrides=[f"out_dir={out}", "method=mtac", "data.n_train=128", "data.n_test=32",
                                           "data.image_size=32", "train.batch_size=32", "data.synthfer.seed=1",
                                           "mtac.relabel=none"])
    return fit(cfg)


def test_au_mapping_is_explicit_and_checked():
    aus = ["AU1", "AU2", "AU12"]
    assert parse_au_map("", aus) == [("AU1", "AU1"), ("AU2", "AU2"), ("AU12", "AU12")]
    assert parse_au_map("AU12:AU012, AU1", aus) == [("AU12", "AU12"), ("AU1", "AU1")]
    with pytest.raises(ConfigError) as e:
        parse_au_map("AU1,AU9,AU2:smile,AU12:AU1", aus)
    lines = str(e.value).splitlines()
    assert "the run has no AU 'AU9'" in lines[0] and "'smile' (for the run's AU2) is not an AU name" in lines[1]
    assert "file AU 'AU1' is given twice" in lines[2]
    with pytest.raises(ConfigError, match="'au3' .* is not an AU name"):
        parse_au_map("", ["au3"])


def test_the_labelled_dataset_is_read_with_its_defaults_not_the_runs_data_keys(source_run):
    conf = json.loads(json.dumps(source_run.config))
    conf["data"].update(oof_folds=3, oof_fold=1, protocol="rafdb7", noise="sym:0.3", n_train=128,
                        au_file="x.csv", fold=2)                      # what the source trained on
    d = target_data(conf, "ferplus", "/data/ferplus", ["data.label_source=fer2013"])
    assert (d.dataset, d.data_root, d.image_size) == ("ferplus", "/data/ferplus", 32)   # the run's image size
    assert (d.oof_folds, d.protocol, d.noise, d.n_train, d.n_test, d.au_file, d.fold) == (0, "", "none", 0, 0, "", 0)
    assert d.synthfer.seed == 0 and d.label_source == "fer2013"       # not the source's SynthFER draw 1
    with pytest.raises(ConfigError, match=r"only data.<key>=<value> overrides .* \['seed=3'\]"):
        target_data(conf, "rafdb", "/data/raf", ["seed=3"])


def test_pseudo_labels_from_one_run_are_used_by_another(source_run, raf, tmp_path, tiny_config, capsys):
    m = source_run.metrics()                       # every AU number says what it averages
    assert {"test_au_f1_macro_present", "test_au_f1_micro", "test_au_n_absent", "test_au_f1_macro_all"} <= set(m)
    assert (m["test_au_f1"] == m["test_au_f1_macro_present"]).all()   # the headline is the present-AU macro
    out = tmp_path / "pseudo.csv"
    s = pseudo_label(source_run.path, "rafdb", str(raf), out, au_threshold=0.2, va_threshold=0.5)
    rows = list(csv.reader(open(out)))
    aus = source_run.env["method"]["au_nodes"]
    assert rows[0] == ["id", *aus, "au_confidence", "valence", "arousal", "va_confidence"]
    assert [r[0] for r in rows[1:]] == [f"train_{i:05d}.jpg" for i in range(1, 25)]   # training split only
    kept = np.array([[c != "" for c in r[1:1 + len(aus)]] for r in rows[1:]])
    assert kept.mean() == pytest.approx(s["splits"]["train"]["au_entries_kept"]) and 0 < kept.mean()
    assert {c for r in rows[1:] for c in r[1:1 + len(aus)]} <= {"", "0", "1"}          # hard labels, or none
    assert json.loads((tmp_path / "pseudo.csv.json").read_text())["sha256"] == s["sha256"]
    # a stricter threshold keeps fewer entries, and the summary says so
    strict = pseudo_label(source_run.path, "rafdb", str(raf), tmp_path / "strict.csv", au_threshold=0.9)
    assert strict["splits"]["train"]["au_entries_kept"] <= s["splits"]["train"]["au_entries_kept"]
    capsys.readouterr()
    cfg = tiny_config("data.dataset=rafdb", f"data.data_root={raf}", f"data.au_file={out}", f"data.va_file={out}",
                      "mtac.au=auto", "mtac.va=auto", method="mtac")
    train, test = load_dataset(cfg.data)
    files = train.meta["side_files"]["files"]
    assert files["au"]["ignored_columns"] == files["va"]["ignored_columns"] == []   # one file serves both
    assert test.au_mask.sum() == 0 and test.va_mask.sum() == 0                      # the test split is not labelled
    run = fit(cfg)
    line = capsys.readouterr().out
    assert f"AU task graph (auto: {s['splits']['train']['images_with_au']} of 24 training images have AU targets, " \
           f"{len(aus)} AUs)" in line and "VA task ccc (auto:" in line
    assert run.env["method"]["au_nodes"] == aus and "train_au_bce" in run.metrics().columns
    assert run.metrics()["train_au_bce"].gt(0).all()


def test_pseudo_labels_on_a_fer2013_layout_are_used_in_one_start(source_run, faces, tmp_path, tiny_config, capsys):
    root = tmp_path / "fer"
    fx.write_fer(root, *faces)
    out = tmp_path / "fer_pseudo.csv"
    s = pseudo_label(source_run.path, "fer2013", str(root), out, au_threshold=0.0, va_threshold=0.0)
    ids = [r[0] for r in list(csv.reader(open(out)))[1:]]
    bare, _ = read("fer2013", root)
    assert ids == bare.ids and ids[0].startswith("fer2013_")              # the reader's own ids
    assert s["splits"]["train"]["images_with_au"] == s["splits"]["train"]["images_with_va"] == len(ids)
    capsys.readouterr()
    run = fit(tiny_config("data.dataset=fer2013", f"data.data_root={root}", f"data.au_file={out}",
                          f"data.va_file={out}", "mtac.au=auto", "mtac.va=auto", method="mtac"))
    line = capsys.readouterr().out
    assert f"AU task graph (auto: {len(ids)} of {len(ids)} training images have AU targets" in line
    assert f"VA task ccc (auto: {len(ids)} of {len(ids)} training images have valence-arousal targets)" in line
    assert run.finished and run.metrics()["train_au_bce"].gt(0).all() and run.metrics()["train_va"].notna().all()


def test_pseudo_label_cli_and_refusals(source_run, raf, tmp_path, tiny_config, capsys):
    assert main(["pseudo-label", str(source_run.path), "--dataset", "rafdb", "--data-root", str(raf),
                 "--out", str(tmp_path / "p.csv"), "--tasks", "va", "--splits", "train,test"]) == 0
    out = capsys.readouterr().out
    assert "pseudo-labels for rafdb from" in out and "train: 24 images" in out and "test: 12 images" in out
    assert "VA (flip agreement >= 0.9)" in out and f"use with: data.va_file={tmp_path / 'p.csv'}" in out
    assert list(csv.reader(open(tmp_path / "p.csv")))[0] == ["id", "valence", "arousal", "va_confidence"]
    assert main(["pseudo-label", str(source_run.path), "--dataset", "rafdb", "--data-root", str(raf),
                 "--out", str(tmp_path / "q.csv"), "--va-threshold", "2"]) == 2
    err = capsys.readouterr().err
    assert "--va-threshold must be in [0, 1], got 2.0" in err
    ce = fit(tiny_config())
    with pytest.raises(RunError, match="predicts no AUs or valence-arousal"):
        pseudo_label(ce.path, "rafdb", str(raf), tmp_path / "r.csv")


def test_auto_is_the_default(tiny_config, synth_small):
    """MTAC and POI on data without AU/VA targets start in one go by default, and use them where they exist."""
    bare = synth_small[0].replace(au=None, au_mask=None, va=None, va_mask=None)
    m = get_method("mtac")(tiny_config(method="mtac"), bare)
    assert m.au_head is None and m.va_head is None
    full = get_method("mtac")(tiny_config(method="mtac"), synth_small[0])
    assert full.au_head is not None and full.va_head is not None
    assert not get_method("poi")(tiny_config("poi.au_weight=1.0", method="poi"), bare).au_supervised
