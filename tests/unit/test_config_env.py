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
    assert load_dotenv(path, {}) == {
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
        ("A B=c", None, 'expected KEY=VALUE, got "A B=c"'),
        ("=x", None, 'expected KEY=VALUE, got "=x"'),
        ("A='open", "A", "missing closing '"),
        ('A="open', "A", 'missing closing "'),
        ("A='x' y", "A", 'unexpected text after the closing quote: "y"'),
        ('export A="x"y', "A", 'unexpected text after the closing quote: "y"'),
    ],
)
def test_dotenv_bad_lines(tmp_path: Path, line: str, key: str | None, message: str) -> None:
    path = tmp_path / ".env"
    path.write_text(f"OK=1\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_dotenv(path, {})
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(path), 2, key)
    assert str(caught.value).endswith(message)


def test_dotenv_bad_line_after_blank_lines_names_its_own_line(tmp_path: Path) -> None:
    # python-dotenv counts the blank lines before a binding as the binding's own.
    path = tmp_path / ".env"
    path.write_text("A=1\n\n   \n# note\n\nB='open\nC=3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_dotenv(path, {})
    assert str(caught.value) == f"{path}:6: B: missing closing '"


def test_dotenv_names_and_multiline_values_are_python_dotenvs(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('1ST=x\nKEY="two\nlines"\nAFTER=1\n', encoding="utf-8")
    assert load_dotenv(path, {}) == {"1ST": "x", "KEY": "two\nlines", "AFTER": "1"}


def test_dotenv_expands_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "BASE=/srv/app\n"
        "LOGDIR=${BASE}/logs\n"
        'QUOTED="${LOGDIR}/rrd.log"\n'
        "LITERAL='${BASE}'\n"
        "BARE=$BASE\n"
        "FALLBACK=${UNSET:-/tmp}\n"
        "LATER=${DEFINED_BELOW}\n"
        "DEFINED_BELOW=x\n",
        encoding="utf-8",
    )
    assert load_dotenv(path, {}) == {
        "BASE": "/srv/app",
        "LOGDIR": "/srv/app/logs",
        "QUOTED": "/srv/app/logs/rrd.log",
        "LITERAL": "${BASE}",  # single quotes are literal, as with godotenv
        "BARE": "$BASE",  # python-dotenv expands ${NAME} only
        "FALLBACK": "/tmp",
        "LATER": "",
        "DEFINED_BELOW": "x",
    }


def test_dotenv_expands_from_the_environment_first(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("BASE=/from/file\nLOGDIR=${BASE}/logs\nHOME_LOGS=${HOME}/logs\n")
    values = load_dotenv(path, {"BASE": "/from/env", "HOME": "/home/me"})
    # The file's own BASE is returned; LOGDIR is built from the BASE that wins.
    assert values == {
        "BASE": "/from/file",
        "LOGDIR": "/from/env/logs",
        "HOME_LOGS": "/home/me/logs",
    }


def test_dotenv_environ_defaults_to_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RRD_TEST_BASE", "/os")
    path = tmp_path / ".env"
    path.write_text("RRD_TEST_BASE=/file\nDIR=${RRD_TEST_BASE}/x\n")
    assert load_dotenv(path)["DIR"] == "/os/x"


def test_dotenv_refuses_nul(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('A=1\nB="x\x00y"\n')
    with pytest.raises(ConfigError) as caught:
        load_dotenv(path, {})
    assert (caught.value.line, caught.value.key) == (2, "B")


ENV_NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,5}", fullmatch=True)
ENV_TEXT = st.text(st.characters(blacklist_characters="\x00\r", codec="utf-8"), max_size=12)


@given(st.dictionaries(ENV_NAMES, ENV_TEXT, max_size=6))
def test_single_quoted_values_round_trip(
    tmp_path_factory: pytest.TempPathFactory, values: dict[str, str]
) -> None:
    def single(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text("".join(f"{k}={single(v)}\n" for k, v in values.items()), encoding="utf-8")
    assert load_dotenv(path, {}) == values


# A value is a list of parts: literal text, or ${NAME} / ${NAME:-default}.
SAFE = st.text(st.sampled_from("abc/._- 19"), max_size=4)
REF = st.tuples(ENV_NAMES, st.none() | SAFE)


@given(
    st.lists(st.tuples(ENV_NAMES, st.lists(SAFE | REF, max_size=4)), max_size=6),
    st.dictionaries(ENV_NAMES, SAFE, max_size=4),
)
def test_expansion_matches_the_reference(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[tuple[str, list[str | tuple[str, str | None]]]],
    environ: dict[str, str],
) -> None:
    text, expected = "", {}
    for name, parts in lines:
        written, value = "", ""
        for part in parts:
            if isinstance(part, str):
                written, value = written + part, value + part
                continue
            ref, default = part
            written += f"${{{ref}}}" if default is None else f"${{{ref}:-{default}}}"
            # The environment wins over the lines above; a default fills in for an unset name.
            value += {**expected, **environ}.get(ref, default or "")
        text += f'{name}="{written}"\n'
        expected[name] = value
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text(text, encoding="utf-8")
    assert load_dotenv(path, environ) == expected


@given(
    st.lists(
        st.sampled_from(
            [
                "A=1",
                "B='x'",
                'C="y"',
                "",
                "# c",
                "D",
                "E F",
                "'",
                '"',
                "G='",
                'H="a\\"',
                "=",
                "I=${J",
            ]
        ),
        max_size=8,
    )
)
def test_any_dotenv_reads_or_fails_on_one_line(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        load_dotenv(path, {})
    except ConfigError as err:
        assert err.path == str(path) and "\n" not in str(err)
        assert err.line is not None and 1 <= err.line <= len(lines)
