"""expand_env and load_dotenv on their own, with a reference model for expansion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrd.config import expand_env, load_dotenv
from rrd.errors import ConfigError

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
VALUES = st.text(max_size=8)
LITERALS = st.text(st.characters(blacklist_characters="$"), max_size=8)
DEFAULTS = st.text(st.characters(blacklist_characters="$}"), max_size=8)

# A template is a list of parts; each part knows its text and what it expands to.
Part = tuple[str, str | None, str | None]  # (kind, name or literal text, default)


def parts_strategy() -> st.SearchStrategy[list[Part]]:
    literal = st.builds(lambda text: ("literal", text, None), LITERALS)
    dollar = st.just(("dollar", None, None))
    bare = st.builds(lambda name: ("bare", name, None), NAMES)
    braced = st.builds(lambda name: ("braced", name, None), NAMES)
    default = st.builds(lambda name, d: ("default", name, d), NAMES, DEFAULTS)
    return st.lists(st.one_of(literal, dollar, bare, braced, default), max_size=8)


def render(parts: list[Part]) -> str:
    out = []
    for i, (kind, text, default) in enumerate(parts):
        if kind == "literal":
            out.append(text or "")
        elif kind == "dollar":
            out.append("$$")
        elif kind == "bare":
            following = "".join((p[1] or "") if p[0] == "literal" else "$" for p in parts[i + 1 :])
            # `$NAME` followed by a name character would read a longer name: brace it.
            out.append(f"${{{text}}}" if re.match(r"[A-Za-z0-9_]", following) else f"${text}")
        elif kind == "braced":
            out.append(f"${{{text}}}")
        else:
            out.append(f"${{{text}:-{default}}}")
    return "".join(out)


def reference(parts: list[Part], environ: dict[str, str]) -> str:
    out = []
    for kind, text, default in parts:
        if kind == "literal":
            out.append(text or "")
        elif kind == "dollar":
            out.append("$")
        elif kind == "default":
            out.append(environ.get(text or "") or (default or ""))
        else:
            out.append(environ.get(text or "", ""))
    return "".join(out)


@given(parts_strategy(), st.dictionaries(NAMES, VALUES, max_size=6), st.data())
def test_expand_env_matches_the_reference(
    parts: list[Part], environ: dict[str, str], data: st.DataObject
) -> None:
    # Make the template's names likely to be set, some of them to "".
    for kind, name, _ in parts:
        if kind != "literal" and kind != "dollar" and data.draw(st.booleans()):
            environ[name or ""] = data.draw(st.sampled_from(["", "v", "$HOME", "a}b"]))
    assert expand_env(render(parts), environ) == reference(parts, environ)


@given(LITERALS, st.dictionaries(NAMES, VALUES))
def test_text_without_dollar_is_unchanged(text: str, environ: dict[str, str]) -> None:
    assert expand_env(text, environ) == text


def test_values_are_not_expanded_again() -> None:
    assert expand_env("$A", {"A": "$B", "B": "no"}) == "$B"


@pytest.mark.parametrize("text", ["${A", "${A-x}", "${A:?x}", "${1}", "${}", "${A:-${B}}"])
def test_bad_references(text: str) -> None:
    with pytest.raises(ConfigError, match="bad reference"):
        expand_env(text, {})


@pytest.mark.parametrize(
    ("text", "expected"), [("$1", "$1"), ("a$", "a$"), ("$ x", "$ x"), ("$-", "$-")]
)
def test_a_dollar_that_starts_no_reference_stays(text: str, expected: str) -> None:
    assert expand_env(text, {"1": "one"}) == expected


def test_dotenv(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "  SPACED = padded value  \n"
        "EMPTY=\n"
        "SINGLE='$NOT expanded \\n # kept'\n"
        'DOUBLE="line\\nnext \\"quoted\\" # not a comment"\n'
        "INLINE=value # a comment\n"
        "HASH=a#b\n"
        "QUOTED_COMMENT='x' # trailing\n"
        "DOTTED.KEY=1\n"
        "PLAIN=again\n",
        encoding="utf-8",
    )
    assert load_dotenv(path) == {
        "PLAIN": "again",
        "EXPORTED": "yes",
        "SPACED": "padded value",
        "EMPTY": "",
        "SINGLE": "$NOT expanded \\n # kept",
        "DOUBLE": 'line\nnext "quoted" # not a comment',
        "INLINE": "value",
        "HASH": "a#b",
        "QUOTED_COMMENT": "x",
        "DOTTED.KEY": "1",
    }


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("NO_EQUALS", None, 'expected KEY=VALUE, got "NO_EQUALS"'),
        ("1BAD=x", None, 'expected KEY=VALUE, got "1BAD=x"'),
        ("A='open", "A", "missing closing '"),
        ('A="open', "A", 'missing closing "'),
        ("A='x' y", "A", 'unexpected text after the closing quote: "y"'),
    ],
)
def test_dotenv_bad_lines(tmp_path: Path, line: str, key: str | None, message: str) -> None:
    path = tmp_path / ".env"
    path.write_text(f"OK=1\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_dotenv(path)
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(path), 2, key)
    assert str(caught.value).endswith(message)
