"""Readers of the official on-disk layouts (docs/datasets.md): one module per layout, each a `scan`
function that parses a layout into records (`common.Scan`), decoded by `common.read`."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ...config import DataConfig
from . import affectnet, affwild2, ckplus, csvlist, ferplus, folder, rafdb
from .assemble import read
from .toolkit import Problems, Scan

# dataset name -> scan(cfg, problems); `data.dataset` picks one.
SCANNERS: dict[str, Callable[[DataConfig, Problems], Scan]] = {
    "rafdb": rafdb.scan,
    "affectnet7": partial(affectnet.scan, protocol="affectnet7"),
    "affectnet8": partial(affectnet.scan, protocol="affectnet8"),
    "ferplus": ferplus.scan_plus,
    "fer2013": ferplus.scan_fer,
    "affwild2": affwild2.scan,
    "ckplus": ckplus.scan,
    "folder": folder.scan,
    "csv": csvlist.scan,
}

# What the datasets notebook and the README list: layout and label coding per reader.
LAYOUTS: dict[str, str] = {
    "rafdb": f"{rafdb.LABEL_FILE} + {rafdb.IMAGE_DIR}/<stem>_aligned.jpg",
    "affectnet7": f"{affectnet.CSV_DIR}/{{training,validation}}.csv + {affectnet.CSV_IMAGES}/, or "
                  "{train_set,val_set}/images + annotations/*_{exp,val,aro,lnd}.npy",
    "affectnet8": "as affectnet7, contempt kept",
    "ferplus": f"{ferplus.FER_FILE} + {ferplus.VOTE_FILE} (paired by row), or the generator's "
               f"{{{','.join(ferplus.PNG_DIRS.values())}}}/*.png + {ferplus.LABEL_FILE} (or {ferplus.VOTE_FILE})",
    "fer2013": f"{ferplus.FER_FILE} (emotion,pixels,Usage)",
    "affwild2": f"{affwild2.IMAGE_DIR}/<video>/<frame>.jpg + {affwild2.ANNOTATION_DIR}/<task>/<split>/<video>.txt",
    "ckplus": "CK+48/<class>/S<subject>_<sequence>_<frame>.png (+ data.au_file FACS csv)",
    "folder": "{train,test}/<class name>/<image>",
    "csv": "{train,test}.csv with path,label[,valence,arousal]",
}

__all__ = ["LAYOUTS", "SCANNERS", "Problems", "Scan", "read"]
