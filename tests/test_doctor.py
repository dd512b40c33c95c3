"""The data doctor: a clean fixture passes with counts, mapping and hashes; a damaged one lists every
problem with its file and line (not only the first, and no traceback); the CLI exits 1 on problems."""
import hashlib

import fixtures as fx
import pytest

from fercore.cli import main
from fercore.config import build_config
from fercore.data.doctor import check


@pytest.fixture
def faces(synth_small):
    train, test = synth_small
    return train.subset(range(20)), test.subset(range(10))


def doctor(dataset, root, *overrides, decode=-1):
    cfg = build_config("smoke", overrides=[f"data.dataset={dataset}", f"data.data_root={root}", *overrides])
    return check(cfg.data, decode=decode)


def test_clean_rafdb_copy(tmp_path, faces):
    truth = fx.write_rafdb(tmp_path, *faces)
    fx.write_eac_noise(tmp_path, "noise01.txt", faces[0], flip_every=5)
    r = doctor("rafdb", tmp_path)
    assert r.ok, r.problems
    happy = sum(1 for n, c in truth.items() if n.startswith("train_") and c == "happy")
    assert r.counts.loc["train", "happy"] == f"{happy} (4772)" and r.counts.loc["test", "total"] == "10 (3068)"
    assert any("differ from the published counts" in w for w in r.warnings)
    label = next(f for f in r.files if f["name"] == "list_patition_label.txt")
    raw = (tmp_path / "EmoLabel" / "list_patition_label.txt").read_bytes()
    assert label["sha256"] == hashlib.sha256(raw).hexdigest() == label["sha256_lf"]  # LF, no final newline
    assert label["verdict"] == "DIFFERS from the published file"
    assert r.facts["EAC noise files"]["eac10"] == "20 rows, 4 flipped (20.00%)"
    assert r.facts["EAC noise files"]["eac20"] == "absent"
    assert {"raw": 1, "canonical": "surprise", "head": 3} in r.mapping
    assert r.images["train"] == {"48x48 RGB": 20}
    text = r.text()
    assert "result: OK" in text and "1 -> surprise" in text and "problems: none" in text


def test_line_ending_normalised_hash_is_reported(tmp_path, faces):
    fx.write_rafdb(tmp_path, *faces)
    path = tmp_path / "EmoLabel" / "list_patition_label.txt"
    lf = path.read_bytes()
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))  # saved on Windows
    r = doctor("rafdb", tmp_path)
    f = next(f for f in r.files if f["name"] == "list_patition_label.txt")
    assert f["sha256_lf"] == hashlib.sha256(lf.rstrip(b"\n")).hexdigest()
    assert f["sha256"] != hashlib.sha256(lf).hexdigest()
    assert r.ok, r.problems  # read as its LF text (issue 21, case 8)


def test_damaged_copy_lists_every_problem_with_file_and_line(tmp_path, faces):
    fx.write_rafdb(tmp_path, *faces)
    path = tmp_path / "EmoLabel" / "list_patition_label.txt"
    lines = path.read_text().split("\n")
    lines[1] = "train_00002.jpg 9"
    lines[4] = "train_00005.jpg"
    path.write_text("\n".join(lines))
    (tmp_path / "Image" / "aligned" / "train_00007_aligned.jpg").unlink()
    (tmp_path / "Image" / "aligned" / "test_0003_aligned.jpg").write_bytes(b"broken")
    r = doctor("rafdb", tmp_path)
    assert len(r.problems) == 4, r.problems
    assert r.problems[0].endswith("list_patition_label.txt:2: label '9' out of range; "
                                  "expected one of [1, 2, 3, 4, 5, 6, 7]")
    assert r.problems[1].endswith("list_patition_label.txt:5: expected 2 space-separated columns 'name code', got 1: "
                                  "'train_00005.jpg'")
    assert "list_patition_label.txt:7: image" in r.problems[2] and "referenced but absent" in r.problems[2]
    assert "test_0003_aligned.jpg: cannot decode image" in r.problems[3] and r.problems[3].endswith(
        "listed at " + str(path) + ":23")
    assert r.counts.loc["train", "total"].startswith("17 ")  # the three bad rows are not counted


@pytest.mark.parametrize("dataset, write", [
    ("ferplus", lambda root, f: fx.write_fer(root, *f)),
    ("fer2013", lambda root, f: fx.write_fer(root, *f)),
    ("affectnet8", lambda root, f: fx.write_affectnet_csv(root, *f)),
    ("affectnet7", lambda root, f: fx.write_affectnet_npy(root, *f)),
    ("affwild2", lambda root, f: fx.write_affwild2(root, *f)),
    ("csv", lambda root, f: fx.write_csvlist(root, *f)),
])
def test_every_layout_passes_the_doctor(tmp_path, faces, dataset, write):
    write(tmp_path, faces)
    r = doctor(dataset, tmp_path, decode=4)
    assert r.ok, r.problems
    assert r.counts is not None and r.protocol


def test_ferplus_and_ckplus_facts(tmp_path, faces):
    fx.write_fer(tmp_path / "fer", *faces)
    r = doctor("ferplus", tmp_path / "fer")
    assert r.facts["tie_rule"] == "exclude" and len(r.facts["derived_labels_sha256"]) == 64
    assert {f["name"]: f["verdict"] for f in r.files}["fer2013new.csv"] == "DIFFERS from the published file"
    assert "val" in r.counts.index  # PublicTest is reported too
    assert doctor("ferplus", tmp_path / "fer", "data.ferplus_tie=first").facts["derived_labels_sha256"] != \
        r.facts["derived_labels_sha256"]
    truth, _ = fx.write_ckplus(tmp_path / "ck", faces[0], n_subjects=5)
    r = doctor("ckplus", tmp_path / "ck", "data.n_folds=5")
    assert r.ok and r.facts["subjects per fold"] == {str(k): 1 for k in range(5)}
    assert r.facts["subjects in both splits"] == 0 and r.facts["n_subjects"] == 5


def test_cli_data_check(tmp_path, faces, capsys):
    fx.write_rafdb(tmp_path, *faces)
    assert main(["data", "check", "--dataset", "rafdb", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"fercore data check: rafdb at {tmp_path} (protocol raf7)") and "result: OK" in out
    (tmp_path / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    assert main(["data", "check", "--dataset", "rafdb", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "list_patition_label.txt:2: image" in out and "Traceback" not in out and "result: 1 problem(s)" in out
    assert main(["data", "check", "--dataset", "rafdb", "--data-root", str(tmp_path / "nope")]) == 1
    assert "nope: data root folder missing" in capsys.readouterr().out
