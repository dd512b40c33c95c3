"""Write SynthFER splits in real datasets' on-disk layouts, so the real readers run on it end to end."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..classes import RAFDB_CODES
from ..faceset import FaceSet


def _pil(fs: FaceSet, i: int) -> Image.Image:
    return Image.fromarray(fs.images[i].permute(1, 2, 0).numpy())


def export_rafdb(train: FaceSet, test: FaceSet, root: str | Path, quality: int = 95) -> Path:
    """RAF-DB basic: `EmoLabel/list_patition_label.txt` (`name code` lines, codes 1..7, LF, no final
    newline) and `Image/aligned/<stem>_aligned.jpg` (docs/datasets.md#21-layout)."""
    root = Path(root)
    code = {name: c for c, name in RAFDB_CODES.items()}
    missing = set(train.classes) - set(code)
    if missing:
        raise ValueError(f"RAF-DB has no code for {sorted(missing)}; export a 7-class (synth7) SynthFER")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    lines = []
    for split, fs, digits in (("train", train, 5), ("test", test, 4)):
        for i in range(len(fs)):
            name = f"{split}_{i + 1:0{digits}d}"
            _pil(fs, i).save(root / "Image" / "aligned" / f"{name}_aligned.jpg", quality=quality)
            lines.append(f"{name}.jpg {code[fs.classes[int(fs.label[i])]]}")
    (root / "EmoLabel" / "list_patition_label.txt").write_bytes("\n".join(lines).encode())
    return root


def export_folder(train: FaceSet, test: FaceSet, root: str | Path) -> Path:
    """Generic layout `<split>/<class name>/<id>.png`."""
    root = Path(root)
    for split, fs in (("train", train), ("test", test)):
        for i in range(len(fs)):
            d = root / split / fs.classes[int(fs.label[i])]
            d.mkdir(parents=True, exist_ok=True)
            _pil(fs, i).save(d / f"{fs.ids[i]}.png")
    return root
