"""Readers of every official layout: mappings, exact read-back of fixture copies, the decode cache,
and a one-line error naming the file (and line) for every kind of bad input."""
import fixtures as fx
import numpy as np
import pytest
import torch
from fixtures import read
from PIL import Image

from fercore.config import build_config
from fercore.data import readers
from fercore.data.classes import (
    CKPLUS48_FOLDERS,
    CLASSES,
    CODINGS,
    PROTOCOL_CODING,
    PROTOCOLS,
    canonical_name,
    protocol_classes,
)
from fercore.data.datasets import READERS, load_dataset
from fercore.data.doctor import published_counts
from fercore.data.synthfer.dataset import RAFDB_TRAIN_COUNTS
from fercore.errors import ConfigError, DataError


def pil(path, box=None):
    im = Image.open(path).convert("RGB")
    return torch.from_numpy(
        np.array(im.crop((box[0], box[1], box[0] + 48, box[1] + 48)) if box else im)).permute(2, 0, 1)


def by_id(fs):
    return {i: k for k, i in enumerate(fs.ids)}


# --- one canonical label space (docs/datasets.md#13-raw-code-to-canonical-index)
# -------------------------------------------------

def test_every_coding_maps_bijectively_onto_its_protocol_and_round_trips():
    for protocol, coding in PROTOCOL_CODING.items():
        classes = protocol_classes(protocol)
        fwd, inv = CODINGS[coding].to_index(classes), CODINGS[coding].from_index(classes)
        assert sorted(fwd.values()) == list(range(len(classes))), protocol
        assert all(inv[fwd[raw]] == raw for raw in fwd) and all(fwd[inv[k]] == k for k in inv), protocol
    # the dropped codes: AffectNet contempt under the 7-class protocol, never 8-10
    assert 7 not in CODINGS["affectnet"].to_index(PROTOCOLS["affectnet7"])
    assert set(CODINGS["affectnet"].excluded) == {8, 9, 10}


def test_coding_tables_equal_the_datasets_doc():
    """The fixture tables restate docs/datasets.md#13-raw-code-to-canonical-index independently of fercore."""
    for coding, table in (("rafdb", fx.RAF_CODE), ("affectnet", fx.AFFECTNET_CODE), ("fer2013", fx.FER2013_CODE),
                          ("affwild2_expr", fx.ABAW_CODE)):
        assert {v: k for k, v in table.items()} == CODINGS[coding].codes
    assert {CODINGS["ferplus"].codes[col]: i for i, col in enumerate(("neutral", "happiness", "surprise", "sadness",
            "anger", "disgust", "fear", "contempt"))} == fx.FERPLUS_COLUMN
    assert {v: k for k, v in fx.CK_FOLDER.items()} == CODINGS["ckplus48"].codes
    assert CKPLUS48_FOLDERS == tuple(sorted(CKPLUS48_FOLDERS))  # the ImageFolder order fercore never uses
    assert {k: CODINGS["raf_peer"].codes[k - 1] for k in range(1, 8)} == CODINGS["rafdb"].codes
    assert protocol_classes("ckplus7") == CLASSES[1:8] and protocol_classes("affwild2_expr")[-1] == "other"


def test_synonyms_resolve_to_one_name():
    for a, b in (("happiness", "happy"), ("Happy", "happy"), ("sadness", "sad"), ("angry", "anger"),
                 ("ANGER", "anger"), ("surprised", "surprise")):
        assert canonical_name(a) == b
    with pytest.raises(KeyError, match="smirk"):
        canonical_name("smirk")


def test_published_counts_are_reproduced_after_mapping():
    raf = published_counts("rafdb", "raf7")
    assert raf["train"] == RAFDB_TRAIN_COUNTS and sum(raf["train"].values()) == 12271
    assert sum(raf["test"].values()) == 3068 and raf["test"]["neutral"] == 680 and raf["test"]["surprise"] == 329
    fer = published_counts("fer2013", "fer2013")  # docs/datasets.md#4-fer2013, by name
    assert fer["train"] == {"anger": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830,
                            "surprise": 3171, "neutral": 4965}
    assert sum(sum(s.values()) for s in fer.values()) == 35887


def test_registry_names_and_protocol_errors(tmp_path, faces):
    assert set(READERS) == {"synthfer", "rafdb", "affectnet7", "affectnet8", "ferplus", "fer2013", "affwild2",
                            "ckplus", "folder", "csv"}
    fx.write_rafdb(tmp_path, *faces)
    with pytest.raises(ConfigError, match="data.protocol: dataset 'rafdb' accepts"):
        read("rafdb", tmp_path, "data.protocol=affectnet8")


# --- read-back of every layout -----------------------------------------------------------------

def test_rafdb_reads_back_exactly(tmp_path, faces):
    truth = fx.write_rafdb(tmp_path, *faces)
    train, test = read("rafdb", tmp_path)
    assert (len(train), len(test)) == (24, 12) and train.classes == PROTOCOLS["raf7"]
    assert train.ids[0] == "train_00001.jpg" and test.ids[0] == "test_0001.jpg"
    for fs in (train, test):
        for k, name in enumerate(fs.ids):
            assert fs.classes[int(fs.label[k])] == truth[name]
            assert torch.equal(fs.images[k], pil(tmp_path / "Image" / "aligned" / f"{name[:-4]}_aligned.jpg"))
    assert train.meta["coding"] == "rafdb" and len(train.meta["label_files"]["list_patition_label.txt"]) == 64
    assert torch.equal(train.label, faces[0].label)  # SynthFER's synth7 order is raf7's order


def test_subsampling_happens_before_decoding_and_is_seeded(tmp_path, faces):
    fx.write_rafdb(tmp_path, *faces)
    a, _ = read("rafdb", tmp_path, "data.n_train=7", "data.n_test=5")
    b, t = read("rafdb", tmp_path, "data.n_train=7", "data.n_test=5")
    assert len(a) == 7 and len(t) == 5 and a.ids == b.ids and a.ids == sorted(a.ids)
    assert a.meta["n_rows"] == 24


@pytest.mark.parametrize("dataset", ["affectnet8", "affectnet7"])
def test_affectnet_csv_crops_the_face_box_and_masks_the_va_sentinel(tmp_path, faces, dataset):
    truth = fx.write_affectnet_csv(tmp_path, *faces)
    train, test = read(dataset, tmp_path)
    keep = {k: v for k, v in truth.items() if dataset == "affectnet8" or v["label"] != "contempt"}
    assert sorted(train.ids + test.ids) == sorted(keep)
    assert train.meta["dropped"]["train"] == {"none": 1, "uncertain": 1, "no-face": 1,
                                              **({"contempt (not in protocol)": 1} if dataset == "affectnet7" else {})}
    for fs in (train, test):
        for k, rel in enumerate(fs.ids):
            t = truth[rel]
            assert fs.classes[int(fs.label[k])] == t["label"]
            assert torch.equal(fs.images[k], pil(tmp_path / "Manually_Annotated_Images" / rel,
                                                 (7 + int(rel[-11:-7]) % 5, 11)))
            assert torch.allclose(fs.landmarks[k], torch.as_tensor(t["landmarks"], dtype=torch.float), atol=0.01)
            if t["va"] is None:
                assert fs.va_mask[k] == 0
            else:
                assert fs.va_mask[k] == 1 and torch.allclose(fs.va[k], torch.tensor(t["va"]), atol=1e-6)


def test_affectnet_npy_layout(tmp_path, faces):
    truth = fx.write_affectnet_npy(tmp_path, *faces)
    train, test = read("affectnet8", tmp_path)
    assert train.meta["layout"] == "npy" and len(train) == 24 and len(test) == 12
    assert train.ids[:3] == ["train_set/0.jpg", "train_set/1.jpg", "train_set/2.jpg"]  # numeric, not text order
    for fs in (train, test):
        for k, rel in enumerate(fs.ids):
            assert fs.classes[int(fs.label[k])] == truth[rel]["label"]
            assert torch.allclose(fs.va[k], torch.tensor(truth[rel]["va"]), atol=1e-6)
            assert torch.allclose(fs.landmarks[k], torch.as_tensor(truth[rel]["landmarks"], dtype=torch.float),
                                  atol=1e-5)


def test_fer2013_reads_pixels_and_its_own_labels(tmp_path, faces):
    truth = fx.write_fer(tmp_path, *faces)["rows"]
    train, test = read("fer2013", tmp_path)
    rows = {f"fer2013_{t['row']:05d}": t for t in truth}
    assert len(train) == 24 + 4 and len(test) == 12 - 3 and train.classes == PROTOCOLS["fer2013"]
    for fs in (train, test):
        for k, i in enumerate(fs.ids):
            assert fs.classes[int(fs.label[k])] == rows[i]["fer_label"]
            assert torch.equal(fs.images[k], torch.from_numpy(rows[i]["pixels"]).expand(3, -1, -1))


def ferplus_rule(votes, rule):
    """Reference of docs/datasets.md#53-deriving-labels, restated: max over all 10 columns."""
    cols = ["neutral", "happy", "surprise", "sad", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
    top = [c for c, v in zip(cols, votes) if v == max(votes)]
    if rule == "exclude":
        return top[0] if len(top) == 1 and top[0] not in ("unknown", "NF") else None
    top = [c for c in top if c not in ("unknown", "NF")]
    return min(top, key=CLASSES.index) if top else None


@pytest.mark.parametrize("rule", ["exclude", "first"])
def test_ferplus_pairs_by_row_and_applies_the_tie_rule(tmp_path, faces, rule):
    truth = fx.write_fer(tmp_path, *faces)["rows"]
    train, test = read("ferplus", tmp_path, f"data.ferplus_tie={rule}")
    got = {i: (fs, k) for fs in (train, test) for k, i in enumerate(fs.ids)}
    expected = {}
    for t in truth:
        label = ferplus_rule(t["votes"], rule)
        if t["usage"] != "PublicTest" and t["name"] and sum(t["votes"][:8]) and label:
            expected[t["id"]] = (label, t)
    assert set(got) == set(expected)
    for i, (label, t) in expected.items():
        fs, k = got[i]
        assert fs.classes[int(fs.label[k])] == label
        emo = np.array(t["votes"][:8], dtype=float)
        soft = {c: emo[j] / emo.sum() for c, j in fx.FERPLUS_COLUMN.items()}
        assert torch.allclose(fs.soft_label[k], torch.tensor([soft[c] for c in fs.classes], dtype=torch.float))
        assert fs.classes[int(fs.extras["fer2013_label"][k])] == t["fer_label"]
        assert torch.equal(fs.images[k], torch.from_numpy(t["pixels"]).expand(3, -1, -1))
    # the hand-made rows: row 1 a happy/sad tie, row 2 an NF plurality, row 3 no image name, row 4 unknown only
    assert ("fer0000001.png" in got) == (rule == "first") and "fer0000002.png" not in got
    if rule == "first":
        assert train.classes[int(got["fer0000001.png"][0].label[got["fer0000001.png"][1]])] == "happy"
    assert train.meta["excluded"]["no_image"] == 1 and train.meta["excluded"]["no_emotion_votes"] == 1
    assert train.meta["tie_rule"] == rule and len(train.meta["derived_labels_sha256"]) == 64


def test_ferplus_real_noise_marks_exactly_the_constructed_disagreement(tmp_path, faces):
    """data.label_source=fer2013: train on FER2013's labels, test on the FERPlus majority, and mark
    as wrong exactly the images whose two labels disagree (here: rows built to disagree)."""
    from fercore.data.doctor import check

    disagree = (5, 6, 9, 12, 15, 21)
    truth = fx.write_fer(tmp_path, *faces, disagree=disagree)["rows"]
    train, test = read("ferplus", tmp_path, "data.label_source=fer2013")
    ref_train, ref_test = read("ferplus", tmp_path)
    by_id = {t["id"]: t for t in truth}
    assert train.ids == ref_train.ids and test.ids == ref_test.ids
    assert [train.classes[int(k)] for k in train.label] == [by_id[i]["fer_label"] for i in train.ids]
    assert torch.equal(train.clean_label, ref_train.label)          # the reference: the FERPlus majority
    assert torch.equal(test.label, ref_test.label)                  # tested on the FERPlus majority
    constructed = {t["id"] for t in truth if t["row"] in disagree} & set(train.ids)
    marked = {i for i, w in zip(train.ids, train.extras["flipped"].tolist()) if w}
    assert len(constructed) >= 4 and marked == constructed
    assert train.meta["train_fer2013_disagrees"]["images"] == len(constructed)
    report = check(build_config("smoke", overrides=["data.dataset=ferplus", f"data.data_root={tmp_path}",
                                                    "data.label_source=fer2013"]).data)
    assert f'"images": {len(constructed)}' in report.text() and "vote rows per split (published)" in report.text()


def test_ferplus_real_noise_round_trips_through_a_run(tmp_path, faces):
    from fercore.engine import fit

    disagree = (5, 6, 9, 12, 15, 21)
    truth = fx.write_fer(tmp_path / "fer", *faces, disagree=disagree)
    constructed = {r["id"] for r in truth["rows"] if r["row"] in disagree}
    cfg = build_config("smoke", overrides=["data.dataset=ferplus", f"data.data_root={tmp_path / 'fer'}",
                                           "data.label_source=fer2013", "data.image_size=32", "train.epochs=1",
                                           "model.backbone=resnet10t", f"out_dir={tmp_path / 'runs'}"])
    train, _ = load_dataset(cfg.data)
    d = fit(cfg).diagnostics()
    assert d["id"].tolist() == train.ids
    assert (d["label_given"] != d["clean_label"]).tolist() == train.extras["flipped"].tolist()
    assert int((d["label_given"] != d["clean_label"]).sum()) == train.meta["train_fer2013_disagrees"]["images"]
    marked = {i for i, f in zip(train.ids, train.extras["flipped"].tolist()) if f}
    kept = set(train.ids) & constructed
    assert marked and marked == kept, (marked, kept)  # exactly the constructed disagreement
    assert len(kept) == sum(1 for r in truth["rows"] if r["row"] in disagree and r["usage"] == "Training")


@pytest.mark.parametrize("profile", ["real", "smoke"])
def test_a_real_dataset_says_and_records_the_faces_and_size_it_used(tmp_path, faces, profile):
    """A real dataset never shrinks silently: under `real` (the profile ./reproduce.sh picks for real faces)
    and under `smoke` (the same code path, as CI runs it) a run says how many of the split's faces it trains
    on, and at which size, and env.json records both; a subset is a seeded one, said as such."""
    from fercore.engine import fit
    from fercore.errors import Notice

    fx.write_fer(tmp_path / "fer", *faces)
    data = ["data.dataset=ferplus", f"data.data_root={tmp_path / 'fer'}", "data.label_source=one_vote"]
    cfg = build_config(profile, overrides=[*data, "train.epochs=1", "model.weights=", f"out_dir={tmp_path / 'r'}"])
    size = {"real": 48, "smoke": 32}[profile]
    assert cfg.data.image_size == size and cfg.data.n_train > len(faces[0])  # the profile's cap, above the fixture
    with pytest.warns(Notice, match=rf"data.n_train={cfg.data.n_train} asks for more than the (\d+) images of the "
                                    rf"train split of ferplus .*: using all \1, at {size} px") as said:
        rd = fit(cfg)
    n = int(next(w for w in said if "n_train" in str(w.message)).message.args[0].split("than the ")[1].split()[0])
    env = rd.env["data"]
    assert (env["train_size"], env["train_rows"], env["image_size"]) == (n, n, size)
    assert env["test_size"] == env["test_rows"] > 0
    from fercore.tables import data_text  # what the comparison tables' captions say of it

    said = f"ferplus (one_vote labels), {n:,} training faces at {size} px, tested on {env['test_size']}"
    assert data_text(rd) == said
    # a subset: said, seeded (the same faces every time), recorded beside the split's size
    sub = [*data, f"data.n_train={n // 2}"]
    with pytest.warns(Notice, match=rf"data.n_train={n // 2}: using a seeded subset of {n // 2} of the {n} "
                                    rf"images of the train split of ferplus, at {size} px"):
        a, _ = load_dataset(build_config(profile, overrides=sub).data)
    b, _ = load_dataset(build_config(profile, overrides=sub).data)
    assert len(a) == n // 2 and a.ids == b.ids and a.meta["n_rows"] == n


def test_label_source_is_for_ferplus_only():
    with pytest.raises(ConfigError, match="label_source"):
        build_config("smoke", overrides=["data.dataset=rafdb", "data.data_root=/x", "data.label_source=fer2013"])


def test_ferplus7_drops_contempt_votes(tmp_path, faces):
    fx.write_fer(tmp_path, *faces)
    train, _ = read("ferplus", tmp_path, "data.protocol=ferplus7")
    assert train.classes == PROTOCOLS["ferplus7"] and train.soft_label.shape[1] == 7
    assert torch.allclose(train.soft_label.sum(1), torch.ones(len(train)))


@pytest.mark.parametrize("votes", ["fer2013new.csv", "label.csv"])
def test_ferplus_generator_layout_reads_what_the_csv_layout_reads(tmp_path, faces, votes):
    """The PNG folders FERPlus's generator writes give the csv layout's images, labels, votes and ids;
    the one image the csv layout has in addition is the row whose PNG the generator overwrote."""
    truth = fx.write_fer(tmp_path / "csv", *faces, reuse=(6, 9))["rows"]
    assert truth[6]["id"] == f"{truth[6]['name']}#6" and truth[9]["id"] == truth[6]["name"]
    fx.generate_ferplus_pngs(tmp_path / "csv", tmp_path / "png", label_csv=votes == "label.csv",
                             vote_file=votes == "fer2013new.csv")
    ref, got = read("ferplus", tmp_path / "csv"), read("ferplus", tmp_path / "png")
    for r, g in zip(ref, got):
        assert (r.meta["layout"], g.meta["layout"]) == ("csv", "png")
        assert set(g.ids) <= set(r.ids) and set(r.ids) - set(g.ids) <= {truth[6]["id"]}
        for k, i in enumerate(g.ids):
            j = r.ids.index(i)
            assert torch.equal(g.images[k], r.images[j]) and g.label[k] == r.label[j]
            assert torch.equal(g.soft_label[k], r.soft_label[j])
            assert torch.equal(g.extras["votes"][k], r.extras["votes"][j])
    train = got[0]
    assert truth[6]["id"] in ref[0].ids and "fer2013_label" not in train.extras
    assert train.meta["excluded"].get("overwritten") == (1 if votes == "fer2013new.csv" else None)
    usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
    assert train.meta["png_rows_per_split"] == {
        split: len({t["name"] for t in truth if t["name"] and t["usage"] == u}) for split, u in usage.items()}
    files = {"fer2013new.csv"} if votes == "fer2013new.csv" else {f"{d}/label.csv" for d in fx.FERPLUS_FOLDER.values()}
    assert set(train.meta["votes"]) == files
    assert all(v["version"].startswith("not a published version") and len(v["sha256"]) == 64
               for v in train.meta["votes"].values())


def test_doctor_names_the_ferplus_layout_and_vote_version(tmp_path, faces):
    from fercore.data.doctor import check

    fx.write_fer(tmp_path / "csv", *faces)
    fx.generate_ferplus_pngs(tmp_path / "csv", tmp_path / "png", vote_file=True)
    for layout, rows in (("png", "PNG rows per split (published)"), ("csv", "vote rows per split (published)")):
        report = check(build_config("smoke", overrides=["data.dataset=ferplus",
                                                        f"data.data_root={tmp_path / layout}"]).data)
        text = report.text()
        assert report.ok and f"layout: {layout}" in text and rows in text, text
        assert "votes read from fer2013new.csv: not a published version" in text
        assert "per split differ from the published sizes" in text  # a fixture, and the doctor says so


def test_ferplus_layout_and_vote_file_can_be_named(tmp_path, faces):
    fx.write_fer(tmp_path / "both", *faces)
    fx.generate_ferplus_pngs(tmp_path / "both", tmp_path / "both", label_csv=True)
    (tmp_path / "both" / "fer2013new.csv").rename(tmp_path / "votes.csv")
    train, _ = read("ferplus", tmp_path / "both", f"data.ferplus_votes={tmp_path / 'votes.csv'}", "data.layout=png")
    assert train.meta["layout"] == "png" and set(train.meta["votes"]) == {"votes.csv"}
    with pytest.raises(DataError, match="FER2013Train/label.csv:1: header"):  # data.ferplus_votes is a fer2013new.csv
        read("ferplus", tmp_path / "both", f"data.ferplus_votes={tmp_path / 'both' / 'FER2013Train' / 'label.csv'}")
    with pytest.raises(ConfigError, match="data.layout"):
        build_config("smoke", overrides=["data.dataset=ferplus", "data.data_root=/x", "data.layout=npy"])
    with pytest.raises(ConfigError, match="data.layout"):
        build_config("smoke", overrides=["data.dataset=rafdb", "data.data_root=/x", "data.layout=png"])


def test_one_vote_marks_exactly_the_images_whose_drawn_vote_differs_from_the_majority(tmp_path, faces):
    """data.label_source=one_vote: each training image carries one annotator's vote (one the votes hold),
    the test split and the reference keep the majority, and the wrong labels are exactly the images whose
    drawn vote is not the majority; the draw depends on data.vote_seed and the id only."""
    truth = fx.write_fer(tmp_path / "csv", *faces)["rows"]
    fx.generate_ferplus_pngs(tmp_path / "csv", tmp_path / "png")
    train, test = read("ferplus", tmp_path / "csv", "data.label_source=one_vote")
    ref_train, ref_test = read("ferplus", tmp_path / "csv")
    by_id = {t["id"]: t for t in truth}
    assert train.ids == ref_train.ids and torch.equal(test.label, ref_test.label)
    assert torch.equal(train.clean_label, ref_train.label)
    drawn = [train.classes[int(k)] for k in train.label]
    assert all(by_id[i]["votes"][fx.FERPLUS_COLUMN[c]] > 0 for i, c in zip(train.ids, drawn))  # a vote someone cast
    differs = {i for i, c in zip(train.ids, drawn) if c != ferplus_rule(by_id[i]["votes"], "exclude")}
    marked = {i for i, f in zip(train.ids, train.extras["flipped"].tolist()) if f}
    assert marked == differs and 0 < len(marked) < len(train), (len(marked), len(train))
    unanimous = {i for i in train.ids if sum(v > 0 for v in by_id[i]["votes"][:8]) == 1}
    assert unanimous and not unanimous & marked
    report = train.meta["noise"]["label_source"]
    assert report["source"] == "one_vote" and report["n_flipped"] == len(marked)
    assert train.meta["train_one_vote_differs"]["images"] == len(marked)
    lab = dict(zip(train.ids, train.label.tolist()))
    png, _ = read("ferplus", tmp_path / "png", "data.label_source=one_vote")
    sub, _ = read("ferplus", tmp_path / "csv", "data.label_source=one_vote", "data.n_train=10")
    other, _ = read("ferplus", tmp_path / "csv", "data.label_source=one_vote", "data.vote_seed=1")
    assert [lab[i] for i in png.ids] == png.label.tolist() and [lab[i] for i in sub.ids] == sub.label.tolist()
    assert other.label.tolist() != train.label.tolist() and torch.equal(other.clean_label, train.clean_label)


def test_one_vote_round_trips_through_a_run(tmp_path, faces):
    """A one_vote run's diagnostics mark as wrong exactly the drawn votes that differ from the majority, and
    env.json records the realised rate, its confusion matrix and the vote file."""
    import json

    from fercore.engine import fit

    fx.write_fer(tmp_path / "csv", *faces)
    fx.generate_ferplus_pngs(tmp_path / "csv", tmp_path / "png")
    cfg = build_config("smoke", overrides=["data.dataset=ferplus", f"data.data_root={tmp_path / 'png'}",
                                           "data.label_source=one_vote", "data.image_size=32", "train.epochs=1",
                                           "model.backbone=resnet10t", "model.weights=",
                                           f"out_dir={tmp_path / 'runs'}"])
    train, _ = load_dataset(cfg.data)
    rd = fit(cfg)
    d = rd.diagnostics()
    assert d["id"].tolist() == train.ids
    wrong = (d["label_given"] != d["clean_label"]).tolist()
    assert wrong == train.extras["flipped"].tolist() and 0 < sum(wrong) < len(wrong)
    env = json.loads((rd.path / "env.json").read_text())["data"]
    got = env["noise"]["label_source"]
    assert got["n_flipped"] == sum(wrong) and abs(got["rate_realised"] - sum(wrong) / len(wrong)) < 1e-6
    confusion = np.array(got["confusion"])
    assert confusion.sum() == len(wrong) and confusion.sum() - np.trace(confusion) == sum(wrong)
    assert env["label_source"] == "one_vote" and env["layout"] == "png" and "FER2013Train/label.csv" in env["votes"]


def test_affwild2_frames_expr_au_va_and_markers(tmp_path, faces):
    truth = fx.write_affwild2(tmp_path, *faces)
    train, test = read("affwild2", tmp_path)
    assert train.classes == PROTOCOLS["affwild2_expr"] and train.meta["au_names"][0] == "AU1"
    assert sorted(train.ids + test.ids) == sorted(truth)
    assert train.meta["frames_skipped"]["train"] == {"unannotated": 2, "no_image": 2}
    for fs in (train, test):
        for k, i in enumerate(fs.ids):
            t = truth[i]
            assert fs.classes[int(fs.label[k])] == t["label"]
            mask = torch.tensor([float(a != -1) for a in t["au"]])
            assert torch.equal(fs.au_mask[k], mask)
            assert torch.equal(fs.au[k], torch.tensor([float(a == 1) for a in t["au"]]))
            if t["va"] is None:
                assert fs.va_mask[k] == 0
            else:
                assert fs.va_mask[k] == 1 and torch.allclose(fs.va[k], torch.tensor(t["va"]))


def test_ckplus_folds_are_subject_independent_and_facs_codes_attach(tmp_path, faces):
    truth, au_file = fx.write_ckplus(tmp_path, faces[0])
    seen = {}
    for fold in range(3):
        train, test = read("ckplus", tmp_path, "data.n_folds=3", f"data.fold={fold}", f"data.au_file={au_file}")
        assert train.classes == PROTOCOLS["ckplus7"] and len(train) + len(test) == len(truth)
        assert not set(train.extras["subject"].tolist()) & set(test.extras["subject"].tolist())
        for k, i in enumerate(test.ids):
            assert test.classes[int(test.label[k])] == truth[i]
            seen[i] = fold
        assert train.meta["au_names"] == ["AU1", "AU4", "AU12"]
    assert set(seen) == set(truth)  # every image is tested exactly once over the folds
    import csv
    table = {row[0]: [float(v) for v in row[1:]] for row in list(csv.reader(open(au_file)))[1:]}
    train, test = read("ckplus", tmp_path, "data.n_folds=3", f"data.au_file={au_file}")
    for fs in (train, test):
        for k, i in enumerate(fs.ids):
            seq = i.split("/")[1][:8]
            if seq in table:
                assert torch.equal(fs.au[k], torch.tensor(table[seq])) and fs.au_mask[k].sum() == 3
            else:  # S050_001 is not in the FACS table
                assert seq == "S050_001" and fs.au_mask[k].sum() == 0


def test_csv_list_with_synonyms_and_missing_va(tmp_path, faces):
    truth = fx.write_csvlist(tmp_path, *faces)
    train, test = read("csv", tmp_path)
    assert train.classes == tuple(c for c in CLASSES if c in {t["label"] for r, t in truth.items() if "/train_" in r})
    for fs in (train, test):
        for k, rel in enumerate(fs.ids):
            assert fs.classes[int(fs.label[k])] == truth[rel]["label"]
            assert torch.equal(fs.images[k], pil(tmp_path / rel))
            if truth[rel]["va"] is None:
                assert fs.va_mask[k] == 0
            else:
                assert torch.allclose(fs.va[k], torch.tensor(truth[rel]["va"]))


def test_folder_reader_follows_the_protocol_not_folder_sorting(tmp_path, faces):
    from fercore.data.synthfer.export import export_folder
    export_folder(*faces, tmp_path)
    train, _ = read("folder", tmp_path, "data.protocol=affectnet8")
    assert train.classes == CLASSES[:8]
    for k, i in enumerate(train.ids):
        assert train.classes[int(train.label[k])] == i.split("/")[0]


# --- the decode cache ------------------------------------------------------------------------

def test_decode_cache_is_reused_until_a_source_file_changes(tmp_path, faces, monkeypatch):
    fx.write_rafdb(tmp_path, *faces)
    first, _ = read("rafdb", tmp_path)
    calls = []
    real = readers.decode.decode
    monkeypatch.setattr(readers.decode, "decode", lambda *a: calls.append(a) or real(*a))
    again, _ = read("rafdb", tmp_path)
    assert calls == [] and torch.equal(first.images, again.images)
    img = tmp_path / "Image" / "aligned" / "train_00003_aligned.jpg"
    Image.new("RGB", (48, 48), (255, 0, 0)).save(img)
    changed, _ = read("rafdb", tmp_path)
    assert len(calls) == 24 and changed.images[2, 0].float().mean() > 240  # only the train split re-decodes


# --- bad input: one clear error naming the file and line -----------------------------------------

@pytest.fixture
def raf(tmp_path, faces):
    fx.write_rafdb(tmp_path, faces[0].subset(range(6)), faces[1].subset(range(3)))
    return tmp_path


def label_file(root):
    return root / "EmoLabel" / "list_patition_label.txt"


def edit_line(root, line, text):
    lines = label_file(root).read_text().split("\n")
    lines[line - 1] = text
    label_file(root).write_text("\n".join(lines))


@pytest.mark.parametrize("text, message", [
    ("train_00002.jpg 4 extra", "list_patition_label.txt:2: expected 2 space-separated columns"),
    ("train_00002.jpg", "list_patition_label.txt:2: expected 2 space-separated columns"),
    ("", "list_patition_label.txt:2: empty line"),
    ("train_00002.jpg 8", "list_patition_label.txt:2: label '8' out of range"),
    ("train_00002.jpg 0", "list_patition_label.txt:2: label '0' out of range"),
    ("train_00002.jpg  4", "list_patition_label.txt:2: expected 2 space-separated columns"),
    ("train_2.jpg 4", "list_patition_label.txt:2: image name 'train_2.jpg' does not match"),
    ("train_00001.jpg 4", "list_patition_label.txt:2: train_00001.jpg already labelled at line 1"),
])
def test_malformed_label_lines(raf, text, message):
    edit_line(raf, 2, text)
    with pytest.raises(DataError, match=message):
        read("rafdb", raf)


@pytest.mark.parametrize("saved", ["crlf", "bom", "crlf+bom"])
def test_a_label_file_saved_on_windows_reads_as_its_lf_text_with_one_notice(raf, saved):
    """Issue 21, case 8: CRLF line endings and a UTF-8 byte-order mark are accepted, said once."""
    from fercore.errors import Notice

    lf = label_file(raf).read_bytes()
    before = read("rafdb", raf)
    data = lf.replace(b"\n", b"\r\n") if "crlf" in saved else lf
    label_file(raf).write_bytes((b"\xef\xbb\xbf" if "bom" in saved else b"") + data)
    with pytest.warns(Notice) as caught:
        after = read("rafdb", raf)
    said = [str(w.message) for w in caught if issubclass(w.category, Notice) and "saved on Windows" in str(w.message)]
    assert len(said) == 1 and "list_patition_label.txt" in said[0], said
    assert ("CRLF" in said[0]) == ("crlf" in saved) and ("byte-order mark" in said[0]) == ("bom" in saved)
    for a, b in zip(before, after):
        assert a.ids == b.ids and torch.equal(a.label, b.label)


def test_a_lone_cr_is_still_refused_naming_the_line(raf):
    label_file(raf).write_bytes(label_file(raf).read_bytes().replace(b"\n", b"\r", 2))
    with pytest.raises(DataError, match=r"list_patition_label.txt:1: a CR without LF"):
        read("rafdb", raf)


def test_published_hashes_are_checked_on_the_lf_text(tmp_path):
    from fercore.files import lf_sha256, normalised_sha256, sha256_file

    (tmp_path / "lf.txt").write_bytes(b"a 1\nb 2\n")
    (tmp_path / "win.txt").write_bytes(b"\xef\xbb\xbfa 1\r\nb 2\r\n")
    assert sha256_file(tmp_path / "lf.txt") == lf_sha256(tmp_path / "win.txt") != sha256_file(tmp_path / "win.txt")
    assert normalised_sha256(tmp_path / "lf.txt") == normalised_sha256(tmp_path / "win.txt")


def test_missing_folder_and_file(raf):
    (raf / "Image" / "aligned").rename(raf / "Image" / "elsewhere")
    with pytest.raises(DataError, match=r"Image/aligned: folder missing"):
        read("rafdb", raf)
    (raf / "Image" / "elsewhere").rename(raf / "Image" / "aligned")
    label_file(raf).unlink()
    with pytest.raises(DataError, match="list_patition_label.txt: label file missing"):
        read("rafdb", raf)


def test_image_referenced_but_absent(raf):
    (raf / "Image" / "aligned" / "train_00003_aligned.jpg").unlink()
    with pytest.raises(DataError,
                       match=r"list_patition_label.txt:3: image .*train_00003_aligned.jpg referenced but absent"):
        read("rafdb", raf)


def test_corrupt_image(raf):
    (raf / "Image" / "aligned" / "train_00004_aligned.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match="train_00004_aligned.jpg: cannot decode image"):
        read("rafdb", raf)


def test_empty_split(raf):
    lines = [ln for ln in label_file(raf).read_text().split("\n") if ln.startswith("train_")]
    label_file(raf).write_text("\n".join(lines))
    with pytest.raises(DataError, match="list_patition_label.txt: no test_\\* lines: the test split is empty"):
        read("rafdb", raf)


def test_bad_input_in_the_other_layouts(tmp_path, faces):
    fx.write_fer(tmp_path / "fer", *faces)
    votes = tmp_path / "fer" / "fer2013new.csv"
    votes.write_text("\n".join(votes.read_text().split("\n")[:-3]) + "\n")  # two rows short
    with pytest.raises(DataError,
                       match=r"fer2013new.csv:\d+: missing line: fer2013new.csv has 38 rows, fer2013.csv 40"):
        read("ferplus", tmp_path / "fer")
    fer = tmp_path / "fer" / "fer2013.csv"
    lines = fer.read_text().split("\n")
    lines[5] = lines[5].replace(" ", " 7 ", 1)
    fer.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"fer2013.csv:6: pixels field has 2305 values"):
        read("fer2013", tmp_path / "fer")

    fx.write_affectnet_csv(tmp_path / "an", *faces)
    csv_file = tmp_path / "an" / "Manually_Annotated_file_lists" / "training.csv"
    lines = csv_file.read_text().split("\n")
    lines[3] = lines[3].rsplit(",", 3)[0] + ",11,0.1,0.2"
    csv_file.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"training.csv:4: expression '11' out of range 0..10"):
        read("affectnet8", tmp_path / "an")
    csv_file.write_text("path,expression\n" + "\n".join(lines[1:]))
    with pytest.raises(DataError, match=r"training.csv:1: header 'path,expression' differs"):
        read("affectnet8", tmp_path / "an")

    fx.write_affwild2(tmp_path / "aw", *faces)
    expr = tmp_path / "aw" / "annotations" / "EXPR_Classification_Challenge" / "Train_Set" / "video5.txt"
    expr.write_text("Neutral,Happiness,Anger" + expr.read_text()[expr.read_text().index("\n"):])
    with pytest.raises(DataError, match=r"video5.txt:1: header 'Neutral,Happiness,Anger' differs from the expected"):
        read("affwild2", tmp_path / "aw")

    fx.write_ckplus(tmp_path / "ck", faces[0])
    Image.new("L", (48, 48)).save(tmp_path / "ck" / "CK+48" / "fear" / "subject7.png")
    with pytest.raises(DataError, match=r"subject7.png: file name does not match"):
        read("ckplus", tmp_path / "ck")
    (tmp_path / "ck" / "CK+48" / "fear" / "subject7.png").unlink()
    (tmp_path / "ck" / "CK+48" / "neutral").mkdir()
    with pytest.raises(DataError, match=r"CK\+48/neutral: folder name is not a CK\+48 class"):
        read("ckplus", tmp_path / "ck")

    fx.write_csvlist(tmp_path / "cl", *faces)
    (tmp_path / "cl" / "test.csv").write_text("path,label\nimgs/test_0.png,smirk\n")
    with pytest.raises(DataError, match=r"test.csv:2: label 'smirk' is not an expression"):
        read("csv", tmp_path / "cl")
