"""Privacy by default: query parameters that carry secrets or personal data never reach storage.

Like Plausible and Umami, the ingest keeps page URLs but not what a URL should never have shared:
a password-reset token, an OAuth code, an e-mail address. ``redact_event_urls`` removes the
configured parameters from an event's page URL and referrer before its raw record is built, so
neither the raw object nor the warehouse ever holds them; ``redact_query_parameters_in_text``
applies the same rule to what a refused request leaves in the log. Other fields (an unknown
field, ``element.dataset``, ``product.urlPath``) are kept as sent. Pure functions; no AWS.

The rule for one URL (``redact_query_parameters``):

- A parameter is the text between ``&`` separators of the query (after the first ``?``, before
  the first ``#``); its name is what comes before its first ``=``, or all of it when it has none
  (``?token&a=1``). A name matches when, percent-decoded and lower-cased, it equals a configured
  name: ``Token``, ``TOKEN`` and ``%74oken`` are all ``token``, since servers read them so.
- A matching parameter is removed whole; every other one, the order, the separators between the
  kept ones, and the rest of the URL stay byte for byte: nothing is decoded or re-encoded. When no
  parameter is left the ``?`` goes too.
- The fragment is treated the same way when it reads as a query, because browsers put secrets
  there as well: OAuth's implicit flow returns ``#access_token=...&id_token=...``, and hash-routed
  single-page apps put their query after the route (``#/reset?token=...``). A fragment with a
  ``?`` has its part after it redacted; one without ``?`` but with ``=`` is a query as a whole;
  any other (``#section-2``) is kept.
- Anything is a URL here: relative ones, ``android-app://`` or ``mailto:`` ones, malformed ones.
  Nothing raises, and a string without ``?`` or ``#`` comes back after two scans for them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any
from urllib.parse import unquote

# The one copy of the default, in lower case: the ingest's environment replaces it only where the
# inventory's lambdas_ingest_redacted_query_parameters is set (inventories/aws/group_vars/all).
DEFAULT_REDACTED_QUERY_PARAMETERS: frozenset[str] = frozenset(
    {
        "token",
        "code",
        "password",
        "email",
        "session",
        "auth",
        "key",
        # What OAuth 2.0's implicit flow and OpenID Connect put in the fragment of the page they
        # return to (RFC 6749 §4.2.2, OIDC Core §3.2.2.5): a bearer token, a signed identity.
        "access_token",
        "id_token",
    }
)

# The fields that hold a URL, in both shapes of the contract: the tracker's pageUrl and referrer,
# the warehouse's page_url and referrer. Each is redacted whatever the event's shape, so that a
# URL sent under the other shape's name (kept as an unknown field) is not kept whole either.
URL_FIELDS: tuple[str, ...] = ("pageUrl", "page_url", "referrer")


def redacted_names(names: Iterable[str]) -> frozenset[str]:
    """The names to redact, normalised for ``redact_query_parameters``: trimmed, lower-cased,
    blanks dropped (so that "token, code," is token and code)."""
    return frozenset(name.strip().lower() for name in names if name.strip())


def parse_redacted_names(setting: str | None) -> frozenset[str]:
    """The names in a comma-separated setting (INGEST_REDACTED_QUERY_PARAMETERS); None (unset)
    gives the default, "" redacts nothing."""
    if setting is None:
        return DEFAULT_REDACTED_QUERY_PARAMETERS
    return redacted_names(setting.split(","))


def redact_query_parameters(url: str, names: Collection[str]) -> str:
    """``url`` without its query (and query-like fragment) parameters named in ``names``.

    ``names`` as ``redacted_names`` returns them (lower case). See the module's docstring for the
    rule; the result is ``url`` itself when nothing matches.
    """
    if not names:
        return url
    before_fragment, hash_sign, fragment = url.partition("#")
    location, question_mark, query = before_fragment.partition("?")
    kept_query = _without_parameters(query, names) if question_mark else None
    kept_fragment = _redacted_fragment(fragment, names) if hash_sign else None
    if kept_query is None and kept_fragment is None:
        return url
    if kept_query is not None:
        query, question_mark = kept_query, "?" if kept_query else ""
    if kept_fragment is not None:
        fragment, hash_sign = kept_fragment, "#" if kept_fragment else ""
    return f"{location}{question_mark}{query}{hash_sign}{fragment}"


def _redacted_fragment(fragment: str, names: Collection[str]) -> str | None:
    """The fragment without the named parameters; None when it holds none of them."""
    route, question_mark, query = fragment.partition("?")
    if question_mark:  # a hash route: "/reset?token=..."
        kept = _without_parameters(query, names)
        if kept is None:
            return None
        return f"{route}?{kept}" if kept else route
    if "=" in fragment:  # a query as a whole: "access_token=...&state=..."
        return _without_parameters(fragment, names)
    return None


def _without_parameters(query: str, names: Collection[str]) -> str | None:
    """The query without the named parameters; None when it holds none of them."""
    parameters = query.split("&")
    kept = [parameter for parameter in parameters if _parameter_name(parameter) not in names]
    return None if len(kept) == len(parameters) else "&".join(kept)


def _parameter_name(parameter: str) -> str:
    name = parameter.partition("=")[0]
    # unquote never raises: a malformed escape ("%zz") stays as written, invalid UTF-8 is replaced.
    return (unquote(name) if "%" in name else name).lower()


def redact_event_urls(event: dict[str, Any], names: Collection[str]) -> dict[str, Any]:
    """``event`` with the parameters in ``names`` removed from its URL fields (URL_FIELDS).

    The event is not changed: a copy is returned when a URL changed, ``event`` itself otherwise.
    """
    redacted_event = None
    for field in URL_FIELDS:
        url = event.get(field)
        if isinstance(url, str) and (redacted := redact_query_parameters(url, names)) is not url:
            if redacted_event is None:
                redacted_event = dict(event)
            redacted_event[field] = redacted
    return event if redacted_event is None else redacted_event


# A query or fragment inside free text (a log line's body excerpt, a JSON message): from "?" or
# "#" up to what ends a URL in JSON or prose: a quote, a backslash escape, white space, brackets.
_QUERY_IN_TEXT = re.compile(r"[?#][^\s\"'<>\\]*")


def redact_query_parameters_in_text(text: str, names: Collection[str]) -> str:
    """``text`` with the URL rule applied to every query or fragment in it, for what is logged
    rather than parsed (a refused body need not be JSON at all)."""
    if not names or ("?" not in text and "#" not in text):
        return text
    return _QUERY_IN_TEXT.sub(lambda query: redact_query_parameters(query[0], names), text)
