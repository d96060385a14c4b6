"""HTML detection and a plain-text rendering of HTML, for the text part of an alternative.

The stdlib parser is enough here: the text part is a readable fallback, not a faithful
rendering, and a dependency such as html2text would add weight for little gain.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_HTML_HINT = re.compile(
    r"<\s*(?:!doctype\s+html|html|head|body|p|div|br|span|table|tr|td|th|a\s|b|i|u|strong|em|"
    r"ul|ol|li|h[1-6]|img|font|hr|blockquote|pre|center)\b[^>]*>|&(?:nbsp|amp|lt|gt|quot);",
    re.IGNORECASE)
_BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul",
          "ol", "blockquote", "pre", "hr", "section", "article", "header", "footer"}
_SKIP = {"script", "style", "head", "title"}


def looks_like_html(text: str) -> bool:
    """True when ``text`` contains HTML markup (tags such as <p>, <br>, <html> or entities)."""
    # every hint starts with "<" or "&": two C-speed scans spare the regex for plain text
    return ("<" in text or "&" in text) and bool(_HTML_HINT.search(text))


class _TextRenderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")
        if tag == "a":
            self.href.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.out.append("\n")
        if tag == "a" and self.href:
            href = self.href.pop()
            if href and not href.startswith(("#", "mailto:")):
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of ``html``: block elements become line breaks, links
    keep their target in parentheses, scripts and styles are dropped."""
    renderer = _TextRenderer()
    renderer.feed(html)
    renderer.close()
    lines = [line.strip() for line in "".join(renderer.out).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
