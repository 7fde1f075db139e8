"""Split a file or stream capture holding several HL7 v2 messages into one bytes object per message.

Stage: ingest from files (the demo loader, replaying captures, the golden fixtures). Input: bytes with messages each
starting with MSH, optionally MLLP-framed (``\\x0b`` … ``\\x1c\\x0d``), blank lines between. Output: ``list[bytes]``,
framing and surrounding blank lines removed, inner segment separators untouched. Failure modes: none; non-blank bytes
before the first MSH come back as their own element so that ``peek_msh`` rejects them (never silently dropped).
"""

from __future__ import annotations

import re

# A message starts where "MSH" plus a field separator opens a segment: at the start, after a
# segment terminator or after an MLLP start block, spaces or tabs (indented captures) between.
_MESSAGE_START = re.compile(rb"(?:^|(?<=[\r\n\x0b\x1c]))[ \t]*(MSH)(?=[^A-Za-z0-9\r\n])")
_FRAMING = b"\x0b\x1c\r\n\t \xef\xbb\xbf"


def split_messages(data: bytes) -> list[bytes]:
    """The messages in ``data``, in order."""
    starts = [m.start(1) for m in _MESSAGE_START.finditer(data)]
    if not starts:
        chunk = data.strip(_FRAMING)
        return [chunk] if chunk else []
    bounds = ([0] if data[: starts[0]].strip(_FRAMING) else []) + starts + [len(data)]
    out = []
    for begin, end in zip(bounds, bounds[1:], strict=False):
        chunk = data[begin:end].strip(_FRAMING)
        if chunk:
            out.append(chunk)
    return out
