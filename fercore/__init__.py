"""fercore: a reproducible reconstruction of MTAC and POI for facial expression recognition.

Importing fercore sets HF_HUB_OFFLINE=1 (before timm is imported) so nothing is ever downloaded,
and imports the method registry, so that the config layer knows every method's parameters
(docs/architecture.md#layers: this file is the package's face, above every layer).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"

from . import methods as _methods  # noqa: E402,F401  (registers every method and its Params)
from .data import noise as _noise  # noqa: E402,F401  (registers the noise grammar's config check)
from .errors import install_notice_format  # noqa: E402

install_notice_format()  # a notice is one `fercore: notice: ...` line in a notebook too, as on the CLI
