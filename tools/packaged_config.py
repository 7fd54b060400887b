"""Write /etc/rrd/rr.yaml as the Debian package ships it, from the repository's etc/rrd/rr.yaml.

One example config is maintained, the repository's; the package's differs only where an
installed rrd must: the worker's path, the header, and a log fit for the journal (production
records at info, not every tick at debug). Each edit must match exactly once, so that an edit of
the example that would silently leave the package's config behind fails the build instead.

    python3 tools/packaged_config.py etc/rrd/rr.yaml debian/rrd/etc/rrd/rr.yaml

Standard library only: it runs in the Debian build root, before rrd is installed anywhere.
"""

from __future__ import annotations

import os
import sys

EXAMPLES = "/usr/share/rrd/examples"

EDITS = (
    (
        "# rrd example config: the ticker plugin feeding the Python example worker.\n"
        "# Run it with `make run`, or `rrd serve -c etc/rrd/rr.yaml` from the repository root.\n",
        "# rrd's config as the Debian package ships it: the ticker plugin feeding the Python\n"
        f"# example worker in {EXAMPLES}. rrd.service runs `rrd serve -c /etc/rrd/rr.yaml`\n"
        "# and reloads when this file is saved; `systemctl reload rrd` also replaces every\n"
        "# worker. Its log: `journalctl -u rrd`; its state:\n"
        "# `sudo rrd status -c /etc/rrd/rr.yaml` (`rrd workers`, `rrd ticker list` likewise).\n",
    ),
    (
        '  command: "python3 examples/ticker_app.py"\n',
        f'  command: "python3 {EXAMPLES}/ticker_app.py"\n',
    ),
    ("  mode: development\n", "  mode: production\n"),
    (
        "  # Each tick is logged at debug.\n  level: debug\n",
        "  # Each tick is logged at debug.\n  level: info\n",
    ),
)


def packaged(example: str) -> str:
    """The package's config: `example` with every edit made, or ValueError naming the one
    that no longer matches exactly once."""
    for old, new in EDITS:
        found = example.count(old)
        if found != 1:
            raise ValueError(
                f"the example config has {found} copies of {old.strip()!r} (expected 1): "
                "update tools/packaged_config.py with it"
            )
        example = example.replace(old, new)
    return example


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} EXAMPLE OUTPUT", file=sys.stderr)
        return 64
    with open(argv[1], encoding="utf-8") as source:
        try:
            text = packaged(source.read())
        except ValueError as exc:
            print(f"{argv[1]}: {exc}", file=sys.stderr)
            return 65
    os.makedirs(os.path.dirname(argv[2]) or ".", exist_ok=True)
    with open(argv[2], "w", encoding="utf-8") as output:
        output.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
