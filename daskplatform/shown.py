"""How a refused value appears in an error message: as the JSON the client sent (NaN,
true, "a"), ASCII only and cut short, so a hostile value can neither flood a message nor
break the HTTP reason phrase it may end up in."""

from __future__ import annotations

import json

MAX_SHOWN = 60


def shown(value: object) -> str:
    try:
        text = json.dumps(value, default=repr)
    except ValueError:  # an integer beyond Python's digit limit for str()
        return "a number too long to show"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."
