"""RAF-DB basic emotion subset (docs/datasets.md#21-layout): `EmoLabel/list_patition_label.txt` (sic) with one
`name code` line per image (single space, no header, codes 1..7 in RAF order), the split given by
the name prefix (`train_XXXXX.jpg`, `test_XXXX.jpg`), images at `Image/aligned/<stem>_aligned.jpg`.

`[lineage: SCN/RUL/EAC readers]` for the layout; unlike those, every name must have its image.
Ids are the label-file names, so EAC's noise files (same names, same order) apply by name.
"""
from __future__ import annotations

import re
from pathlib import Path

from ...config import DataConfig
from ..classes import CODINGS, protocol_classes, resolve_protocol
from .toolkit import Problems, Scan, Split, check_images_exist, read_lines, require_dir

LABEL_FILE = "EmoLabel/list_patition_label.txt"
IMAGE_DIR = "Image/aligned"
NAME = re.compile(r"(train_\d{5}|test_\d{4})\.jpg")


def parse_name_code(path: Path, problems: Problems, valid: dict, name_re: re.Pattern | None = None
                    ) -> list[tuple[int, str, int]]:
    """(line, name, raw code) of a `name code` label file, each line checked: two fields split by
    one space, a name matching `name_re`, an integer code among `valid`, no duplicate names."""
    rows, seen = [], {}
    for line, text in read_lines(path, problems):
        where = f"{path}:{line}"
        parts = text.split(" ")
        if len(parts) != 2:
            problems.add(where, f"expected 2 space-separated columns 'name code', got {len(parts)}: {text!r}")
            continue
        name, code = parts
        if name_re is not None and not name_re.fullmatch(name):
            problems.add(where, f"image name {name!r} does not match {name_re.pattern}")
            continue
        if not re.fullmatch(r"-?\d+", code) or int(code) not in valid:
            problems.add(where, f"label {code!r} out of range; expected one of {sorted(valid)}")
            continue
        if name in seen:
            problems.add(where, f"{name} already labelled at line {seen[name]}")
            continue
        seen[name] = line
        rows.append((line, name, int(code)))
    return rows


def scan(cfg: DataConfig, problems: Problems) -> Scan:
    root = Path(cfg.data_root)
    protocol = resolve_protocol("rafdb", cfg.protocol)
    classes = protocol_classes(protocol)
    to_index = CODINGS["rafdb"].to_index(classes)
    label_file = root / LABEL_FILE
    require_dir(root / IMAGE_DIR, problems, "RAF-DB aligned images")
    rows = parse_name_code(label_file, problems, to_index, NAME)
    splits = {}
    for split in ("train", "test"):
        mine = [r for r in rows if r[1].startswith(split + "_")]
        s = Split(ids=[r[1] for r in mine], label=[to_index[r[2]] for r in mine],
                  sources=[root / IMAGE_DIR / f"{r[1][:-4]}_aligned.jpg" for r in mine],
                  where=[f"{label_file}:{r[0]}" for r in mine])
        splits[split] = check_images_exist(s, problems)
        if not mine and label_file.is_file():
            problems.add(label_file, f"no {split}_* lines: the {split} split is empty")
    return Scan("rafdb", root, protocol, classes, "rafdb", splits, {"list_patition_label.txt": label_file},
                meta={"label_file": LABEL_FILE})
