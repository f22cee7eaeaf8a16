"""Privacy by default: which query parameters leave a URL, and that everything else stays exact.

Pure functions, no AWS: lambda_src/clickstream/privacy.py. What the ingest stores and logs with
them is tests/test_ingest.py.
"""

from __future__ import annotations

import copy
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickstream.privacy import (
    DEFAULT_REDACTED_QUERY_PARAMETERS,
    URL_FIELDS,
    parse_redacted_names,
    redact_event_urls,
    redact_query_parameters,
    redact_query_parameters_in_text,
)

NAMES = DEFAULT_REDACTED_QUERY_PARAMETERS

REDACTIONS = {
    "a parameter among others": (
        "https://shop.example.vn/p?a=1&token=t&b=2",
        "https://shop.example.vn/p?a=1&b=2",
    ),
    "whatever the case of its name": (
        "https://shop.example.vn/p?TOKEN=t&Email=e&a=1",
        "https://shop.example.vn/p?a=1",
    ),
    "a percent-encoded name": (
        "https://shop.example.vn/p?%74oken=t&a=1",
        "https://shop.example.vn/p?a=1",
    ),
    "a name without a value": (
        "https://shop.example.vn/p?token&a=1",
        "https://shop.example.vn/p?a=1",
    ),
    "an empty value": ("https://shop.example.vn/p?a=1&code=", "https://shop.example.vn/p?a=1"),
    "the only parameter, and its ?": (
        "https://shop.example.vn/p?code=c",
        "https://shop.example.vn/p",
    ),
    "before a fragment that stays": (
        "https://shop.example.vn/p?session=s#reviews",
        "https://shop.example.vn/p#reviews",
    ),
    "an OAuth implicit-flow fragment": (
        "https://shop.example.vn/cb#access_token=at&token_type=Bearer&id_token=it&state=s",
        "https://shop.example.vn/cb#token_type=Bearer&state=s",
    ),
    "a fragment with nothing else left, and its #": (
        "https://shop.example.vn/cb#access_token=at",
        "https://shop.example.vn/cb",
    ),
    "a hash route's query": (
        "https://shop.example.vn/#/reset?token=t&step=2",
        "https://shop.example.vn/#/reset?step=2",
    ),
    "a hash route's only parameter": (
        "https://shop.example.vn/#/reset?token=t",
        "https://shop.example.vn/#/reset",
    ),
    "a relative URL": ("/checkout?email=a%40b.vn&step=2", "/checkout?step=2"),
    "a mailto URL": (
        "mailto:shop@example.vn?subject=Hi&email=me",
        "mailto:shop@example.vn?subject=Hi",
    ),
    "an app URL": (
        "android-app://vn.example.shop/https/p?key=k",
        "android-app://vn.example.shop/https/p",
    ),
    "a malformed URL": ("http://[::1?auth=a&x=%zz", "http://[::1?x=%zz"),
    "while the rest keeps its spelling": (
        "https://shop.example.vn/t%C3%ACm?q=m%C3%A1y+t%C3%ADnh&password=p&sort=%20&&x==y",
        "https://shop.example.vn/t%C3%ACm?q=m%C3%A1y+t%C3%ADnh&sort=%20&&x==y",
    ),
}


@pytest.mark.parametrize(("url", "redacted"), REDACTIONS.values(), ids=REDACTIONS)
def test_a_configured_parameter_is_removed(url, redacted):
    assert redact_query_parameters(url, NAMES) == redacted


UNCHANGED = {
    "no query": "https://shop.example.vn/p",
    "no configured name": "https://shop.example.vn/p?utm_source=mail&q=1",
    "a name that only contains one": "https://shop.example.vn/p?tokenizer=1&postcode=70000",
    "a value that looks like a name": "https://shop.example.vn/p?q=token",
    "an anchor": "https://shop.example.vn/p#token",
    "an empty query and fragment": "https://shop.example.vn/p?#",
    "a question mark alone": "?",
    "a lone carriage return": "https://shop.example.vn/a\rb",
    "not a URL at all": "token=t",  # no "?": nothing here is a query
    "empty": "",
}


@pytest.mark.parametrize("url", UNCHANGED.values(), ids=UNCHANGED)
def test_a_url_without_a_configured_parameter_is_returned_as_it_is(url):
    assert redact_query_parameters(url, NAMES) is url


def test_no_configured_names_redact_nothing():
    url = "https://shop.example.vn/p?token=t"

    assert redact_query_parameters(url, frozenset()) is url


def test_the_default_names_are_lower_case_and_cover_the_obvious_secrets():
    assert {name.lower() for name in NAMES} == NAMES
    assert {"token", "code", "password", "email", "session", "auth", "key"} <= NAMES


@pytest.mark.parametrize(
    ("setting", "names"),
    [
        (None, DEFAULT_REDACTED_QUERY_PARAMETERS),
        ("", frozenset()),
        (" , ", frozenset()),
        ("Token, utm_source,,CODE ", frozenset({"token", "utm_source", "code"})),
    ],
    ids=["unset: the default", "empty: none", "blanks: none", "trimmed and lower-cased"],
)
def test_the_setting_is_read_as_comma_separated_names(setting, names):
    assert parse_redacted_names(setting) == names


def test_both_shapes_url_fields_are_redacted_and_the_event_is_not_changed():
    event = {
        "eventName": "page_view",
        "pageUrl": "https://shop.example.vn/p?token=t&a=1",
        "page_url": "https://shop.example.vn/q?code=c",
        "referrer": "https://mail.example.com/?email=e",
    }
    sent = copy.deepcopy(event)

    redacted = redact_event_urls(event, NAMES)

    assert event == sent
    assert redacted == {
        **sent,
        "pageUrl": "https://shop.example.vn/p?a=1",
        "page_url": "https://shop.example.vn/q",
        "referrer": "https://mail.example.com/",
    }
    assert set(URL_FIELDS) == {"pageUrl", "page_url", "referrer"}


def test_an_event_with_nothing_to_redact_is_returned_itself():
    event = {"eventName": "page_view", "pageUrl": "https://shop.example.vn/", "referrer": None}

    assert redact_event_urls(event, NAMES) is event


def test_queries_inside_logged_text_are_redacted_by_the_same_rule():
    text = (
        '[{"pageUrl": "https://shop.example.vn/p?a=1&token=t#access_token=at&s=1", '
        '"referrer": "https:\\/\\/mail.example.com\\/?email=e"}] and ?code=c in prose'
    )

    assert redact_query_parameters_in_text(text, NAMES) == (
        '[{"pageUrl": "https://shop.example.vn/p?a=1#s=1", '
        '"referrer": "https:\\/\\/mail.example.com\\/"}] and  in prose'
    )


# --- properties ---------------------------------------------------------------------------

# Text a parameter may hold: anything but the separators that end it, raw or percent-encoded,
# non-ASCII included, since nothing is decoded or re-encoded.
parameter_text = st.text(
    st.characters(blacklist_characters="&#", blacklist_categories=["Cs"]), max_size=12
)
# Redacted names in any case, other names, and names that merely contain a redacted one.
parameter_names = (
    st.sampled_from(sorted(NAMES)).flatmap(
        lambda name: st.sampled_from([name, name.upper(), name.title()])
    )
    | st.sampled_from(["utm_source", "q", "tokens", "postcode", "", "a%20b"])
    | parameter_text.filter(lambda text: "=" not in text)
)
parameters = st.tuples(parameter_names, st.sampled_from(["", "="]), parameter_text).map("".join)


def is_redacted(parameter: str) -> bool:
    return unquote(parameter.partition("=")[0]).lower() in NAMES


@settings(max_examples=500)
@given(
    location=st.sampled_from(["https://shop.example.vn/p", "/p", "", "mailto:a@b.vn"]),
    query=st.lists(parameters, min_size=1, max_size=6),
    fragment=st.sampled_from(["", "#reviews", "#"]),
)
def test_every_other_parameter_is_kept_exactly_and_in_order(location, query, fragment):
    url = f"{location}?{'&'.join(query)}{fragment}"
    kept = [parameter for parameter in query if not is_redacted(parameter)]

    redacted = redact_query_parameters(url, NAMES)

    if len(kept) == len(query):
        assert redacted == url
    else:
        assert redacted == f"{location}{'?' if kept else ''}{'&'.join(kept)}{fragment}"


@settings(max_examples=500)
@given(
    url=st.text(max_size=60) | st.lists(parameters, max_size=4).map(lambda ps: "?" + "&".join(ps))
)
def test_any_text_is_redacted_without_error_and_redacting_again_changes_nothing(url):
    redacted = redact_query_parameters(url, NAMES)

    assert redact_query_parameters(redacted, NAMES) == redacted
    assert len(redacted) <= len(url)
