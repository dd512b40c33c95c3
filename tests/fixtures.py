"""Small copies of every official layout (docs/datasets.md), written from SynthFER faces as JPEG/PNG with
the real file names, headers and label codes, for the reader, noise and doctor tests.

Each `write_*` returns the truth the reader must give back: per id, the canonical class name and
whatever else the layout carries. Codes are written from the tables in
docs/datasets.md#13-raw-code-to-canonical-index spelled out
here again (not imported from fercore), so a wrong mapping in fercore fails the tests.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from fercore.data.faceset import FaceSet

RAF_CODE = {"surprise": 1, "fear": 2, "disgust": 3, "happy": 4, "sad": 5, "anger": 6, "neutral": 7}
AFFECTNET_CODE = {"neutral": 0, "happy": 1, "sad": 2, "surprise": 3, "fear": 4, "disgust": 5, "anger": 6,
                  "contempt": 7}
FER2013_CODE = {"anger": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
FERPLUS_COLUMN = {"neutral": 0, "happy": 1, "surprise": 2, "sad": 3, "anger": 4, "disgust": 5, "fear": 6,
                  "contempt": 7}
CK_FOLDER = {"anger": "anger", "contempt": "contempt", "disgust": "disgust", "fear": "fear", "happy": "happy",
             "sad": "sadness", "surprise": "surprise"}
ABAW_CODE = {"neutral": 0, "anger": 1, "disgust": 2, "fear": 3, "happy": 4, "sad": 5, "surprise": 6, "other": 7}


def read(dataset: str, root, *overrides: str):
    """(train, test) read back by fercore's `dataset` reader from `root`, at 48 px, smoke profile."""
    from fercore.config import build_config
    from fercore.data.datasets import load_dataset

    cfg = build_config("smoke", overrides=[f"data.dataset={dataset}", f"data.data_root={root}",
                                           "data.image_size=48", *overrides])
    return load_dataset(cfg.data)


def name_of(fs: FaceSet, i: int) -> str:
    return fs.classes[int(fs.label[i])]


def rgb(fs: FaceSet, i: int) -> Image.Image:
    return Image.fromarray(fs.images[i].permute(1, 2, 0).numpy())


def write_rafdb(root: Path, train: FaceSet, test: FaceSet) -> dict[str, str]:
    """RAF-DB basic: `name code` lines (single space, LF, no final newline), aligned JPEGs."""
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    lines, truth = [], {}
    for split, fs, digits in (("train", train, 5), ("test", test, 4)):
        for i in range(len(fs)):
            name = f"{split}_{i + 1:0{digits}d}.jpg"
            rgb(fs, i).save(root / "Image" / "aligned" / f"{name[:-4]}_aligned.jpg", quality=95)
            lines.append(f"{name} {RAF_CODE[name_of(fs, i)]}")
            truth[name] = name_of(fs, i)
    (root / "EmoLabel" / "list_patition_label.txt").write_bytes("\n".join(lines).encode())
    return truth


def write_eac_noise(root: Path, file: str, train: FaceSet, flip_every: int = 4) -> dict[str, str]:
    """An EAC-format noise file: the training rows of the clean file in order, RAF codes, every
    `flip_every`-th label moved to the next RAF code; LF, no final newline."""
    lines, noisy = [], {}
    for i in range(len(train)):
        code = RAF_CODE[name_of(train, i)]
        if i % flip_every == 0:
            code = code % 7 + 1
        name = f"train_{i + 1:05d}.jpg"
        lines.append(f"{name} {code}")
        noisy[name] = {c: n for n, c in RAF_CODE.items()}[code]
    (root / "EmoLabel" / file).write_bytes("\n".join(lines).encode())
    return noisy


def _68(lm5: np.ndarray, offset=(0, 0)) -> np.ndarray:
    """68 points whose 5-point reduction (eye centres, nose 30, mouth 48/54) is `lm5` (+ offset)."""
    pts = np.tile(lm5.mean(0), (68, 1))
    pts[36:42], pts[42:48], pts[30], pts[48], pts[54] = lm5[0], lm5[1], lm5[2], lm5[3], lm5[4]
    return pts + np.asarray(offset, dtype=float)


def write_affectnet_csv(root: Path, train: FaceSet, test: FaceSet) -> dict[str, dict]:
    """Original AffectNet: face pasted into a larger JPEG at the face box; rows 2-4 carry codes 8-10
    (dropped), row 5 code 7 (contempt), row 1 the valence/arousal -2 sentinel."""
    (root / "Manually_Annotated_file_lists").mkdir(parents=True)
    truth = {}
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
              "expression", "valence", "arousal"]
    for split, fs, fname in (("train", train, "training.csv"), ("test", test, "validation.csv")):
        rows = []
        for i in range(len(fs)):
            rel = f"{100 + i % 3}/{split}{i:04d}abc.jpg"
            (root / "Manually_Annotated_Images" / rel).parent.mkdir(parents=True, exist_ok=True)
            x0, y0 = 7 + i % 5, 11
            canvas = Image.new("RGB", (fs.image_size + 20, fs.image_size + 25), (90, 90, 90))
            canvas.paste(rgb(fs, i), (x0, y0))
            canvas.save(root / "Manually_Annotated_Images" / rel, quality=95)
            lm = _68(fs.landmarks[i].numpy().astype(float), (x0, y0))
            va = (-2.0, -2.0) if i == 1 else tuple(round(float(v), 4) for v in fs.va[i])
            code = {2: 8, 3: 9, 4: 10, 5: 7}.get(i, AFFECTNET_CODE[name_of(fs, i)])  # 8-10 dropped, 7 contempt
            rows.append([rel, x0, y0, fs.image_size, fs.image_size, ";".join(f"{v:.2f}" for v in lm.reshape(-1)),
                         code, *va])
            if code <= 7:
                truth[rel] = {"label": "contempt" if code == 7 else name_of(fs, i), "va": None if i == 1 else va,
                              "landmarks": fs.landmarks[i].numpy()}
        with open(root / "Manually_Annotated_file_lists" / fname, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    return truth


def write_affectnet_npy(root: Path, train: FaceSet, test: FaceSet) -> dict[str, dict]:
    """Re-packaged AffectNet: `images/<id>.jpg` + `annotations/<id>_{exp,val,aro,lnd}.npy` (string
    scalars for exp/val/aro, 136 floats for the landmarks)."""
    truth = {}
    for d, fs in (("train_set", train), ("val_set", test)):
        (root / d / "images").mkdir(parents=True)
        (root / d / "annotations").mkdir(parents=True)
        for i in range(len(fs)):
            rgb(fs, i).save(root / d / "images" / f"{i}.jpg", quality=95)
            ann = root / d / "annotations"
            np.save(ann / f"{i}_exp.npy", np.array(str(AFFECTNET_CODE[name_of(fs, i)])))
            np.save(ann / f"{i}_val.npy", np.array(f"{float(fs.va[i, 0]):.4f}"))
            np.save(ann / f"{i}_aro.npy", np.array(f"{float(fs.va[i, 1]):.4f}"))
            np.save(ann / f"{i}_lnd.npy", _68(fs.landmarks[i].numpy().astype(float)).reshape(-1))
            truth[f"{d}/{i}.jpg"] = {"label": name_of(fs, i), "landmarks": fs.landmarks[i].numpy(),
                                     "va": (round(float(fs.va[i, 0]), 4), round(float(fs.va[i, 1]), 4))}
    return truth


def gray48(fs: FaceSet, i: int) -> np.ndarray:
    return np.array(rgb(fs, i).convert("L").resize((48, 48)))


CANONICAL_FER = ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # FER2013's classes
_FERPLUS_NAMES = ["neutral", "happy", "surprise", "sad", "anger", "disgust", "fear", "contempt", "unknown", "NF"]


def _plurality(votes: list[int]) -> str:
    """The vote file's strongest FER2013 class of a row (ties: the first column)."""
    return max((c for c in _FERPLUS_NAMES if c in CANONICAL_FER), key=lambda c: votes[_FERPLUS_NAMES.index(c)])


def write_fer(root: Path, train: FaceSet, test: FaceSet, n_val: int = 3, disagree: tuple[int, ...] = (),
              reuse: tuple[int, int] | None = None) -> dict:
    """fer2013.csv (Training rows, `n_val` PublicTest rows, then PrivateTest rows) and the paired
    fer2013new.csv whose votes come from SynthFER's annotators, plus hand-made rows: a happy/sad
    tie, an NF plurality, an empty image name and unknown-only votes (appended to Training).
    The FER2013 label of the rows in `disagree` is set to another class than the votes' majority
    (constructed real-label noise). `reuse=(a, b)`: row b carries row a's image name, as four names
    of the real fer2013new.csv do. Each truth row has the id fercore gives it (`None`: no image)."""
    root.mkdir(parents=True, exist_ok=True)
    fer_rows, vote_rows, truth = [], [], []
    items = ([("Training", train, i) for i in range(len(train))]
             + [("PublicTest", test, i) for i in range(n_val)]
             + [("PrivateTest", test, i) for i in range(n_val, len(test))])
    specials = {"tie": [0, 5, 0, 5, 0, 0, 0, 0, 0, 0], "nf": [3, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                "noname": [0, 9, 0, 0, 0, 0, 0, 0, 1, 0], "unknown": [0, 0, 0, 0, 0, 0, 0, 0, 10, 0]}
    items[1:1] = [("Training", name, None) for name in specials]
    for row, (usage, fs, i) in enumerate(items):
        if i is None:
            pixels = np.full((48, 48), 100 + row, dtype=np.uint8)
            votes, fer_label = specials[fs], "happy"
            name = "" if fs == "noname" else f"fer{row:07d}.png"
        else:
            pixels = gray48(fs, i)
            votes = [0] * 10
            for k, v in enumerate(fs.extras["votes"][i].tolist()):
                votes[FERPLUS_COLUMN[fs.classes[k]]] += int(v)
            fer_label, name = name_of(fs, i), f"fer{row:07d}.png"
            if row in disagree:  # the next FER2013 class after the votes' plurality
                top = CANONICAL_FER[(CANONICAL_FER.index(_plurality(votes)) + 1) % len(CANONICAL_FER)]
                fer_label = top
        if reuse and row == reuse[1]:
            name = truth[reuse[0]]["name"]
        fer_rows.append([FER2013_CODE[fer_label], " ".join(map(str, pixels.reshape(-1))), usage])
        vote_rows.append([usage, name, *votes])
        truth.append({"row": row, "usage": usage, "name": name, "votes": votes, "fer_label": fer_label,
                      "pixels": pixels})
    for t in truth:  # the image name; a name a later row reuses (its PNG overwritten) keeps its row
        t["id"] = None if not t["name"] else t["name"] if all(
            u["name"] != t["name"] for u in truth[t["row"] + 1:]) else f"{t['name']}#{t['row']}"
    with open(root / "fer2013.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows(fer_rows)
    with open(root / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                    "fear", "contempt", "unknown", "NF"])
        w.writerows(vote_rows)
    return {"rows": truth}


FERPLUS_FOLDER = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


def generate_ferplus_pngs(csv_root: Path, root: Path, label_csv: bool = True, vote_file: bool = False) -> None:
    """What FERPlus's `src/generate_training_data.py` does, restated: the pixels of row i of fer2013.csv
    saved as a PNG under the name on row i of fer2013new.csv, in the Usage's folder (a repeated name:
    the later row's pixels win); no image for an empty name. Then each folder's `label.csv` (no header:
    name, "(0, 0, 48, 48)", 10 votes; one line per PNG, the votes of the row whose pixels it holds)
    and, with `vote_file`, fer2013new.csv copied into `root`."""
    with open(csv_root / "fer2013.csv", newline="") as f:
        fer = list(csv.reader(f))[1:]
    with open(csv_root / "fer2013new.csv", newline="") as f:
        votes = list(csv.reader(f))
    lines: dict[str, dict[str, list]] = {folder: {} for folder in FERPLUS_FOLDER.values()}
    for (_, pixels, usage), row in zip(fer, votes[1:]):
        if row[1]:
            folder = root / FERPLUS_FOLDER[usage]
            folder.mkdir(parents=True, exist_ok=True)
            img = np.array(pixels.split(), dtype=np.uint8).reshape(48, 48)
            Image.fromarray(img).save(folder / row[1], compress_level=0)
            lines[FERPLUS_FOLDER[usage]][row[1]] = [row[1], "(0, 0, 48, 48)", *row[2:]]
    if label_csv:
        for folder, rows in lines.items():
            with open(root / folder / "label.csv", "w", newline="") as f:
                csv.writer(f).writerows(rows.values())
    if vote_file:
        with open(root / "fer2013new.csv", "w", newline="") as f:
            csv.writer(f).writerows(votes)


def write_affwild2(root: Path, train: FaceSet, test: FaceSet) -> dict[str, dict]:
    """ABAW-style frames and EXPR/AU/VA files: two training videos and one validation video. In every
    video frame 2 is unannotated (EXPR -1), frame 3 has AU1 = -1, frame 4 has no cropped image and
    frame 5 the VA marker -5; the second training video has no VA file."""
    truth = {}
    rng = np.random.default_rng(0)
    videos = {"Train_Set": [("10-60-1280x720", train, range(0, 8)), ("video5", train, range(8, 14))],
              "Validation_Set": [("118-30-640x480", test, range(0, 7))]}
    for sdir, vids in videos.items():
        for v, (video, fs, rows) in enumerate(vids):
            (root / "cropped_aligned" / video).mkdir(parents=True, exist_ok=True)
            expr, au, va = ["Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"], \
                ["AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"], ["valence,arousal"]
            for frame, i in enumerate(rows, 1):
                name = f"{frame:05d}.jpg"
                if frame != 4:
                    rgb(fs, i).save(root / "cropped_aligned" / video / name, quality=95)
                code = -1 if frame == 2 else ABAW_CODE[name_of(fs, i)]
                expr.append(str(code))
                aus = rng.integers(0, 2, 12).tolist()
                if frame == 3:
                    aus[0] = -1
                au.append(",".join(map(str, aus)))
                vals = (-5.0, -5.0) if frame == 5 else (round(float(fs.va[i, 0]), 3), round(float(fs.va[i, 1]), 3))
                va.append(f"{vals[0]},{vals[1]}")
                if code >= 0 and frame != 4:
                    truth[f"{video}/{frame:05d}"] = {"label": name_of(fs, i), "au": aus,
                                                     "va": None if frame == 5 or v == 1 else vals}
            for task, lines in (("EXPR_Classification_Challenge", expr), ("AU_Detection_Challenge", au),
                                ("VA_Estimation_Challenge", va)):
                if task.startswith("VA") and v == 1:
                    continue
                d = root / "annotations" / task / sdir
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{video}.txt").write_text("\n".join(lines) + "\n")
    return truth


def write_ckplus(root: Path, train: FaceSet, n_subjects: int = 6) -> tuple[dict[str, str], Path]:
    """CK+48: grey 48x48 PNGs `<folder>/S<subject>_<sequence>_<frame>.png`, three frames per
    sequence, plus a FACS table `sequence,AU1,...` (one sequence left out)."""
    truth, facs = {}, [["sequence", "AU1", "AU4", "AU12"]]
    keep = [i for i in range(len(train)) if name_of(train, i) != "neutral"][:n_subjects * 2]
    for j, i in enumerate(keep):
        subject, seq = f"S{50 + j // 2:03d}", f"{j % 2 + 1:03d}"
        folder = root / "CK+48" / CK_FOLDER[name_of(train, i)]
        folder.mkdir(parents=True, exist_ok=True)
        for frame in (10, 11, 12):
            name = f"{subject}_{seq}_{frame:08d}.png"
            Image.fromarray(gray48(train, i)).save(folder / name)
            truth[f"{folder.name}/{name}"] = name_of(train, i)
        if j:
            facs.append([f"{subject}_{seq}", j % 2, 1, (j + 1) % 2])
    au_file = root / "facs.csv"
    with open(au_file, "w", newline="") as f:
        csv.writer(f).writerows(facs)
    return truth, au_file


def write_csvlist(root: Path, train: FaceSet, test: FaceSet) -> dict[str, dict]:
    """Generic CSV list with synonyms as labels and one row without valence/arousal."""
    synonym = {"happy": "Happiness", "sad": "sadness", "anger": "angry"}
    truth = {}
    for split, fs in (("train", train), ("test", test)):
        (root / "imgs").mkdir(parents=True, exist_ok=True)
        rows = [["path", "label", "valence", "arousal"]]
        for i in range(len(fs)):
            rel = f"imgs/{split}_{i}.png"
            rgb(fs, i).save(root / rel)
            va = ("", "") if i == 0 else (f"{float(fs.va[i, 0]):.4f}", f"{float(fs.va[i, 1]):.4f}")
            rows.append([rel, synonym.get(name_of(fs, i), name_of(fs, i)), *va])
            truth[rel] = {"label": name_of(fs, i), "va": None if i == 0 else tuple(float(v) for v in va)}
        with open(root / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return truth
