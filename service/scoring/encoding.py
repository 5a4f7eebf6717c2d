"""The text encoding of a CSV file, for the files people export from Excel.

UTF-8 (with or without a byte-order mark, which Excel's "CSV UTF-8" writes) is read as it is. Excel in Chinese
saves "CSV (Comma delimited)" in GBK, so a file that is not valid UTF-8 is handed to charset-normalizer: when it
finds the bytes to be GBK/GB2312/GB18030 the file is read as GB18030 (their superset), and the caller names the
encoding in a warning. Anything else (UTF-16 from "Unicode Text", a Western code page) is refused with the line of
the first undecodable byte and how to save the file as UTF-8.

Only lines that fail to decode as UTF-8 are sampled for detection: contract files are mostly ASCII (ids, numbers,
English category codes), and a detector given a whole file would see little but digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import charset_normalizer
import numpy as np

SAVE_AS_UTF8 = "save it as UTF-8 (Excel: File > Save As > 'CSV UTF-8 (Comma delimited) (*.csv)')"
GB_ENCODINGS = frozenset({"gb2312", "gbk", "gb18030", "cp936", "hz"})  # charset-normalizer's names, GB family
READ_AS = "gb18030"  # the superset of GB2312 and GBK: every GBK file decodes the same way as GB18030
_SAMPLE_LINES = 200  # undecodable lines given to the detector, enough for a few Chinese cells
_CHUNK = 1 << 22
_WIDE_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\xff\xfe", "UTF-16"),
              (b"\xfe\xff", "UTF-16"))


class UnreadableText(ValueError):
    """The file is not UTF-8 nor a Chinese encoding we can read; the message says where and what to do."""


@dataclass(frozen=True)
class Detected:
    """How to read a file that is not UTF-8: ``encoding`` for the reader, ``detected`` as charset-normalizer named
    it, and the first undecodable byte and its line (1-based, as an editor counts lines)."""

    encoding: str
    detected: str
    line: int
    byte: int


def wide_bom(path: Path) -> str | None:
    """'UTF-16' or 'UTF-32' when the file starts with that byte-order mark (Excel's "Unicode Text")."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return next((name for bom, name in _WIDE_BOMS if head.startswith(bom)), None)


def _undecodable_lines(path: Path) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The header line and up to _SAMPLE_LINES lines (number, bytes) that are not valid UTF-8. Non-ASCII bytes
    are found a chunk at a time with numpy; only lines holding one are decoded."""
    found: list[tuple[int, bytes]] = []
    header = b""
    lines_before = 0
    carry = b""
    with path.open("rb") as fh:
        while len(found) < _SAMPLE_LINES:
            chunk = fh.read(_CHUNK)
            buf = carry + chunk
            cut = len(buf) if not chunk else buf.rfind(b"\n") + 1
            body, carry = buf[:cut], buf[cut:]
            if not body:
                if not chunk:
                    break
                continue
            if lines_before == 0:
                header = body.split(b"\n", 1)[0]
            arr = np.frombuffer(body, dtype=np.uint8)
            newlines = np.flatnonzero(arr == 10)
            high = np.flatnonzero(arr >= 0x80)
            for li in np.unique(np.searchsorted(newlines, high)):
                start = int(newlines[li - 1]) + 1 if li > 0 else 0
                end = int(newlines[li]) if li < newlines.size else len(body)
                line = body[start:end]
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    found.append((lines_before + int(li) + 1, line))
                    if len(found) >= _SAMPLE_LINES:
                        break
            lines_before += newlines.size
            if not chunk:
                break
    return header, found


def detect(path: Path) -> Detected:
    """How to read ``path``, which is not valid UTF-8; raises UnreadableText when it is not a GB encoding."""
    name = wide_bom(path)
    if name is not None:
        raise UnreadableText(f"it is {name} text (Excel's 'Unicode Text'), not UTF-8; {SAVE_AS_UTF8}")
    header, bad = _undecodable_lines(path)
    if not bad:
        raise UnreadableText(f"it is not valid UTF-8; {SAVE_AS_UTF8}")
    line, first = bad[0]
    error = _utf8_error(first)
    byte = first[error]
    matches = charset_normalizer.from_bytes(b"\n".join([header] + [b for _, b in bad]))
    names = [m.encoding for m in matches]
    where = f"byte 0x{byte:02x} on line {line} is not UTF-8"
    # Short samples (a few Chinese cells) often rank Big5 or a Japanese code page first; a Chinese lender's
    # files are GB when GB is among the readings that make sense at all.
    gb = next((n for n in names if n.replace("-", "").replace("_", "").lower() in GB_ENCODINGS), None)
    if gb is None:
        seen = f" (it looks like {names[0]})" if names else ""
        raise UnreadableText(f"{where}{seen}; {SAVE_AS_UTF8}")
    return Detected(encoding=READ_AS, detected=gb, line=line, byte=byte)


def _utf8_error(line: bytes) -> int:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return 0
