"""lossbook: a reproducible research book on what we optimize and why it generalizes."""

__version__ = "0.1.0"

from lossbook.session import Chapter, start  # noqa: E402

__all__ = ["Chapter", "start", "__version__"]
