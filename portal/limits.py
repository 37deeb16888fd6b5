"""How often one network address may present a signed link that does not work."""

from __future__ import annotations

from core.extensions import limiter


def _refused(response) -> bool:
    return response.status_code >= 400  # tampered, expired, used, foreign or wrong form


#: Shared by every page reached through a signed link, so guesses count together whichever
#: page they are tried on; a working link costs nothing, however often it is opened.
bad_links = limiter.shared_limit("30 per hour", scope="bad-link", deduct_when=_refused)
