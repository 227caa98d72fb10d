"""Small HTML building blocks for report.html: everything escaped, images inlined, no external files."""
from __future__ import annotations

import base64
import html
import io

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; color: #1d2733; background: #f5f7fa; line-height: 1.45; }
header { background: #1f3b57; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 1.5rem; font-weight: 600; }
header p { margin: 4px 0 0; opacity: 0.85; font-size: 0.9rem; }
nav { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid #d8dee6;
      padding: 8px 32px; font-size: 0.9rem; }
nav a { margin-right: 16px; color: #1f5c99; text-decoration: none; white-space: nowrap; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 32px 48px; display: grid;
       grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 20px; }
section { background: #fff; border: 1px solid #d8dee6; border-radius: 6px; padding: 4px 24px 20px;
          scroll-margin-top: 48px; grid-column: 1 / -1; min-width: 0; }
section.half { grid-column: auto; }
@media (max-width: 1000px) { section.half { grid-column: 1 / -1; } }
h2 { font-size: 1.2rem; border-bottom: 1px solid #e3e8ee; padding-bottom: 6px; }
h3 { font-size: 1rem; margin: 18px 0 8px; }
table { border-collapse: collapse; font-size: 0.88rem; margin: 8px 0 12px; }
th, td { border: 1px solid #d8dee6; padding: 4px 10px; text-align: right; vertical-align: top;
         white-space: nowrap; }
td small { color: #5b6775; }
th { background: #eef2f6; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
.wide { overflow-x: auto; }
.kv td:first-child { font-weight: 600; background: #f7f9fb; }
.kv td { text-align: left; white-space: normal; overflow-wrap: anywhere; }
.note { color: #5b6775; font-size: 0.9rem; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e8ee; }
.plot img { max-width: 100%; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 14px; }
.gallery figure { background: #fafbfc; border: 1px solid #e3e8ee; border-radius: 4px; padding: 8px; }
.gallery img { width: 100%; max-height: 380px; object-fit: contain; border: 0; }
figcaption { font-size: 0.8rem; color: #33414f; margin-top: 4px; overflow-wrap: anywhere; }
pre { background: #f7f9fb; border: 1px solid #e3e8ee; padding: 10px; font-size: 0.8rem; overflow-x: auto;
      max-height: 420px; }
"""


class Raw(str):
    """Markup built here from escaped parts: table() inserts it as is."""


def esc(value) -> str:
    """Escape any value for HTML text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def table(headers: list, rows: list[list], cls: str = "") -> str:
    """A table of escaped cells; wrapped to scroll sideways when wider than the page."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if headers else ""
    return f'<div class="wide"><table class="{esc(cls)}">{thead}<tbody>{body}</tbody></table></div>'


def _cell(value) -> str:
    return value if isinstance(value, Raw) else esc(value)


def key_values(pairs: list[tuple[str, object]]) -> str:
    return table([], [[k, v] for k, v in pairs], cls="kv")


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def paragraph(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def png_bytes(fig, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def image(png: bytes, alt: str, caption: str | None = None, cls: str = "plot") -> str:
    """An <img> with the PNG inlined as a data: URI, optionally captioned."""
    data = base64.b64encode(png).decode("ascii")
    tag = f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
    text = f"<figcaption>{caption}</figcaption>" if caption is not None else ""
    return f'<figure class="{esc(cls)}">{tag}{text}</figure>'


def section(section_id: str, title: str, body: str, half: bool = False) -> str:
    cls = ' class="half"' if half else ""
    return f'<section id="{esc(section_id)}"{cls}><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, subtitle: str, sections: list[tuple]) -> str:
    """The whole document; sections are (id, title, body html[, half width]). Nothing loads from outside."""
    nav = "".join(f'<a href="#{esc(s[0])}">{esc(s[1])}</a>' for s in sections)
    body = "".join(section(*s) for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # an empty inline icon: the browser would otherwise request favicon.ico
        "<link rel=\"icon\" href=\"data:,\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )
