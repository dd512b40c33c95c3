import pytest
import torch

from fercore.cli import main
from fercore.config import build_config
from fercore.data.datasets import load_dataset
from fercore.data.readers.folder import read_folder
from fercore.data.synthfer.export import export_folder, export_rafdb
from fercore.errors import DataError


def test_missing_data_root_is_a_one_line_error(tmp_path, capsys):
    cfg = build_config("smoke", overrides=["data.dataset=folder"])
    with pytest.raises(DataError, match="data.data_root is required for dataset 'folder'"):
        load_dataset(cfg.data)
    cfg = build_config("smoke", overrides=["data.dataset=folder", f"data.data_root={tmp_path / 'nope'}"])
    with pytest.raises(DataError, match=f"data root {tmp_path / 'nope'} does not exist"):
        load_dataset(cfg.data)
    assert main(["train", "--profile", "smoke", "data.dataset=folder", f"data.data_root={tmp_path / 'nope'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_cli_reports_config_errors_in_one_line(capsys):
    assert main(["train", "--profile", "fast"]) == 2
    assert capsys.readouterr().err == ("fercore: error: unknown profile 'fast'; expected one of "
                                       "['paper', 'quick', 'real', 'smoke']\n")
    assert main(["train", "--profile", "smoke", "train.epoch=1"]) == 2
    assert "unknown config key 'train.epoch'" in capsys.readouterr().err


def test_unknown_dataset():
    cfg = build_config("smoke", overrides=["data.dataset=imagenet"])
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        load_dataset(cfg.data)


def test_folder_export_round_trip(synth_small, tmp_path):
    train, test = synth_small
    export_folder(train, test, tmp_path)
    back = read_folder(tmp_path / "train", 48)
    assert back.classes == train.classes          # canonical order, not alphabetical
    order = {i: k for k, i in enumerate(back.ids)}
    for i in range(len(train)):
        j = order[f"{train.classes[int(train.label[i])]}/{train.ids[i]}.png"]
        assert back.label[j] == train.label[i] and torch.equal(back.images[j], train.images[i])


def test_folder_reader_errors(tmp_path, synth_small):
    with pytest.raises(DataError, match="split folder missing"):
        read_folder(tmp_path / "train", 48)
    (tmp_path / "train" / "smirk").mkdir(parents=True)
    with pytest.raises(DataError, match="smirk: folder name is not an expression"):
        read_folder(tmp_path / "train", 48)
    (tmp_path / "train" / "smirk").rmdir()
    (tmp_path / "train" / "happy").mkdir()
    (tmp_path / "train" / "happy" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png: cannot decode image"):
        read_folder(tmp_path / "train", 48)


def test_rafdb_export_writes_the_official_layout(synth_small, tmp_path):
    train, test = synth_small
    export_rafdb(train, test, tmp_path)
    raw = (tmp_path / "EmoLabel" / "list_patition_label.txt").read_bytes()
    assert not raw.endswith(b"\n") and b"\r" not in raw
    lines = raw.decode().split("\n")
    assert len(lines) == len(train) + len(test)
    assert lines[0].startswith("train_00001.jpg ") and lines[len(train)].startswith("test_0001.jpg ")
    name, code = lines[0].split(" ")
    # canonical -> RAF code: neutral 7, happy 4, sad 5, surprise 1, fear 2, disgust 3, anger 6
    assert int(code) == {0: 7, 1: 4, 2: 5, 3: 1, 4: 2, 5: 3, 6: 6}[int(train.label[0])]
    assert (tmp_path / "Image" / "aligned" / "train_00001_aligned.jpg").is_file()


def test_cli_train_and_export(tmp_path, capsys):
    args = [f"out_dir={tmp_path}", "data.n_train=64", "data.n_test=32", "data.image_size=32",
            "model.backbone=resnet10t", "train.epochs=1"]
    assert main(["train", "--profile", "smoke", *args]) == 0
    assert "last-epoch test acc" in capsys.readouterr().out
    assert main(["data", "export", "--profile", "smoke", "--layout", "folder", "--out", str(tmp_path / "f"),
                 "data.n_train=20", "data.n_test=10", "data.image_size=32"]) == 0
    assert len(list((tmp_path / "f" / "train").rglob("*.png"))) == 20
