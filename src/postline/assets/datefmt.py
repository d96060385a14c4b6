"""``${date:PATTERN}``: format a UTC time with a Java-style or strftime pattern.

* A pattern containing ``%`` is a Python strftime pattern: ``${date:%Y-%m-%d}``.
* Otherwise it is a Java ``DateTimeFormatter``-style pattern, as the layline.io platform
  uses: ``${date:yyyy-MM-dd'T'HH:mm:ss}``. Letters are pattern letters; text in single
  quotes is literal (``''`` is a quote); other characters are copied.

Supported letters: ``G`` era, ``y`` year (``yy`` two digits), ``M`` month (``M``/``MM``
number, ``MMM`` Jan, ``MMMM`` January), ``d`` day, ``D`` day of year, ``E`` weekday
(``EEE`` Mon, ``EEEE`` Monday), ``u`` ISO weekday 1-7, ``w`` ISO week, ``a`` AM/PM,
``H`` hour 0-23, ``k`` 1-24, ``K`` 0-11, ``h`` 1-12, ``m`` minute, ``s`` second,
``S`` fraction (``SSS`` milliseconds), ``z`` zone name, ``Z`` +0000, ``X`` Z/+00:00,
``x`` +00:00. We write this small formatter because no maintained library converts
Java patterns to Python; unknown letters are an error rather than a silent copy.
"""

from __future__ import annotations

import datetime as dt
import re

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_TOKEN = re.compile(r"'(?:[^']|'')*'|''|([A-Za-z])\1*|[^A-Za-z']+")


class DatePatternError(ValueError):
    """The pattern has a letter we do not know or an unclosed quote."""


def format_date(pattern: str, when: dt.datetime) -> str:
    """``when`` formatted with ``pattern`` (strftime if it contains ``%``, else Java-style).

    Raises :class:`DatePatternError` for an unknown pattern letter or unclosed quote.
    """
    if not pattern:
        raise DatePatternError("empty date pattern (e.g. ${date:yyyy-MM-dd})")
    if "%" in pattern:
        return when.strftime(pattern)
    out: list[str] = []
    pos = 0
    while pos < len(pattern):
        m = _TOKEN.match(pattern, pos)
        if m is None:  # only an unclosed quote fails to match
            raise DatePatternError(f"unclosed quote in date pattern {pattern!r}")
        token = m.group(0)
        pos = m.end()
        if token == "''":
            out.append("'")
        elif token.startswith("'"):
            out.append(token[1:-1].replace("''", "'"))
        elif token[0].isalpha():
            out.append(_field(token[0], len(token), when, pattern))
        else:
            out.append(token)
    return "".join(out)


def _pad(value: int, width: int) -> str:
    return str(value).zfill(width)


def _offset(when: dt.datetime, colon: bool, z_for_utc: bool) -> str:
    off = when.utcoffset() or dt.timedelta(0)
    if z_for_utc and not off:
        return "Z"
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h:02d}:{m:02d}" if colon else f"{sign}{h:02d}{m:02d}"


def _field(letter: str, n: int, t: dt.datetime, pattern: str) -> str:
    hour12 = t.hour % 12 or 12
    simple = {
        "d": t.day, "D": t.timetuple().tm_yday, "H": t.hour, "k": t.hour or 24,
        "K": t.hour % 12, "h": hour12, "m": t.minute, "s": t.second,
        "u": t.isoweekday(), "w": t.isocalendar()[1],
    }
    if letter in simple:
        return _pad(simple[letter], n)
    if letter == "y":
        return _pad(t.year % 100, 2) if n == 2 else _pad(t.year, n)
    if letter == "M":
        if n >= 4:
            return _MONTHS[t.month - 1]
        return _MONTHS[t.month - 1][:3] if n == 3 else _pad(t.month, n)
    if letter == "E":
        return _DAYS[t.weekday()] if n >= 4 else _DAYS[t.weekday()][:3]
    if letter == "S":
        return f"{t.microsecond:06d}"[:n].ljust(n, "0")
    if letter == "a":
        return "AM" if t.hour < 12 else "PM"
    if letter == "G":
        return "AD"
    if letter == "z":
        return t.tzname() or "UTC"
    if letter == "Z":
        return _offset(t, colon=False, z_for_utc=False)
    if letter == "X":
        return _offset(t, colon=n >= 3, z_for_utc=True)
    if letter == "x":
        return _offset(t, colon=n >= 3, z_for_utc=False)
    raise DatePatternError(f"unknown letter {letter!r} in date pattern {pattern!r} "
                           "(quote literal text: 'T')")
