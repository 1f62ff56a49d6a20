"""Check every internal link and image of the built HTML docs (files and #anchors exist). Run after `make docs`.

``python scripts/check_links.py [docs/_build/html]``; exits 1 listing the broken links.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) and not (tag == "link" and a.get("rel") in ("canonical",)):
                self.links.append(a[key])


def main(root: str = "docs/_build/html") -> int:
    base = Path(root)
    pages = {p: _Collect() for p in base.rglob("*.html")}
    for p, c in pages.items():
        c.feed(p.read_text(errors="replace"))
    broken = []
    for p, c in pages.items():
        for link in c.links:
            u = urlparse(link)
            if u.scheme or link.startswith(("//", "mailto:", "javascript:")):
                continue  # external
            target = (p.parent / unquote(u.path)).resolve() if u.path else p
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{p.relative_to(base)}: {link} (no file)")
            elif u.fragment and target.suffix == ".html" and target in pages and u.fragment not in pages[target].ids:
                broken.append(f"{p.relative_to(base)}: {link} (no anchor)")
    print(f"{sum(len(c.links) for c in pages.values())} links in {len(pages)} pages; {len(broken)} broken")
    print("\n".join(broken[:50]))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
