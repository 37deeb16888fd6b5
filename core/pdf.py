"""Draw PDFs with WeasyPrint from a page alone: no file, no remote URL is ever fetched.

WeasyPrint, Pango and the fonts take tens of megabytes and much of a proof's time to load,
so this module is imported only where a PDF is drawn, never at the app's start (a worker
that exports a person's data need not hold them until it draws the summary).  Each thread
keeps its font configuration and the parsed stylesheet of the signed documents
(``templates/pdf/proof.css``) for every PDF it draws after the first; Pango's font map
must not be shared between threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from weasyprint import CSS, HTML, Attachment
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import FatalURLFetchingError, URLFetcher

STYLESHEET = Path(__file__).resolve().parent.parent / "templates" / "pdf" / "proof.css"


class RefusingFetcher(URLFetcher):
    """A URL fetcher that fetches nothing: a proof is rendered from its template alone."""

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        """Refuse every URL (``file:``, remote or other)."""
        raise FatalURLFetchingError(f"proof rendering refuses to fetch {url[:60]!r}")


class _Renderer(threading.local):
    """This thread's fonts and signed-document stylesheet, loaded when first needed."""

    def __init__(self) -> None:
        self.fonts: FontConfiguration | None = None
        self.stylesheet: CSS | None = None

    def font_config(self) -> FontConfiguration:
        """Return this thread's font configuration."""
        if self.fonts is None:
            self.fonts = FontConfiguration()
        return self.fonts

    def document_stylesheet(self) -> CSS:
        """Return this thread's parsed stylesheet of the signed documents."""
        if self.stylesheet is None:
            self.stylesheet = CSS(
                string=STYLESHEET.read_text(encoding="utf-8"),
                font_config=self.font_config(),
                url_fetcher=RefusingFetcher(),
            )
        return self.stylesheet


_renderer = _Renderer()


def draw_pdf(html: str) -> bytes:
    """Return ``html`` as a PDF, styled by its own ``<style>`` alone."""
    fetcher = RefusingFetcher()
    return HTML(string=html, url_fetcher=fetcher, base_url="about:blank").write_pdf(
        font_config=_renderer.font_config()
    )


def draw_signed_pdf(html: str, attachments: Iterable[tuple[str, bytes, str]]) -> bytes:
    """Return ``html`` as a PDF in the signed documents' style, with files attached.

    ``attachments`` holds ``(name, content, description)`` triples.
    """
    fetcher = RefusingFetcher()
    embedded = [
        Attachment(string=content, name=name, url_fetcher=fetcher, description=description)
        for name, content, description in attachments
    ]
    return HTML(string=html, url_fetcher=fetcher, base_url="about:blank").write_pdf(
        stylesheets=[_renderer.document_stylesheet()],
        font_config=_renderer.font_config(),
        attachments=embedded,
    )
