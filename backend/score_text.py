"""How a person reads scores and item numbers: one number format and 1-based item names.

Every text a person reads (preview labels, node summaries, the web extension's badge and list) formats numbers
with `format_score`: 4 significant digits, trailing zeros dropped, scientific notation below 1e-4 (Python's
`{:.4g}`): 0.8123, 0.5, 1, 4.34e-05. web/format.js implements the same format for the browser.

Items are numbered from 1 where a person reads them ("image 1" is the first image of the batch). Index
*outputs* wired to other nodes stay 0-based, like ComfyUI's own batch indices.
"""

from __future__ import annotations

SIGNIFICANT_DIGITS = 4


def format_score(value: float) -> str:
    """A score (or any reward number) as people read it: 4 significant digits ('0.8123', '4.34e-05')."""
    return f"{float(value):.{SIGNIFICANT_DIGITS}g}"


def item_name(index: int, what: str = "image") -> str:
    """The 1-based name of the 0-based item `index`: item_name(0) == 'image 1'."""
    return f"{what} {index + 1}"
