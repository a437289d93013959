"""The documentation stays true to the CLI: every verb has a section, and every option of a verb
is named in that verb's section (docs/*.md headings that name `macs <verb>`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from macs_cli.cli.main import app

ROOT = Path(__file__).resolve().parents[1]


def doc_sections() -> dict[str, str]:
    """verb -> the text of every docs section whose heading names `macs <verb>`."""
    out: dict[str, str] = {}
    for path in sorted((ROOT / "docs").glob("*.md")):
        verb, level, fenced = None, 0, False
        for line in path.read_text().splitlines():
            h = None if fenced else re.match(r"(#{1,4}) ", line)  # a heading, not a comment in a code block
            if line.startswith("```"):
                fenced = not fenced
            elif h:
                m = re.search(r"`macs ([a-z-]+)", line)
                if m:
                    verb, level = m.group(1), len(h.group(1))
                elif len(h.group(1)) <= level:          # a sibling section: the verb's section ends
                    verb, level = None, 0
                continue
            if verb:
                out[verb] = out.get(verb, "") + line + "\n"
    return out


VERBS = get_command(app).commands


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_option_is_documented(verb):
    sections = doc_sections()
    assert verb in sections, f"no docs section names `macs {verb}`"
    body = sections[verb]
    missing = [o for p in VERBS[verb].params for o in (*p.opts, *p.secondary_opts)
               if o.startswith("--") and o != "--help" and not re.search(re.escape(o) + r"(?![\w-])", body)]
    assert not missing, f"macs {verb}: options not in its docs section: {missing}"


def test_every_verb_takes_device():
    without = [v for v, c in VERBS.items() if not any("--device" in p.opts for p in c.params)]
    assert not without, f"verbs without --device: {without}"
