"""The web apps' texts: every screen shows Dutch and English, so a text missing in one language would show
the other language (or the bare key) to someone who chose it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "src" / "rzcp" / "web" / "static"
APPS = ["admin", "app"]


def texts(app: str) -> dict[str, dict[str, str]]:
    return json.loads((STATIC / app / "strings.json").read_text())


@pytest.mark.parametrize("app", APPS)
def test_both_languages_have_every_text_with_the_same_placeholders(app: str) -> None:
    strings = texts(app)
    assert set(strings) == {"nl", "en"}
    assert set(strings["nl"]) == set(strings["en"])
    for key, dutch in strings["nl"].items():
        holes = set(re.findall(r"\{(\w+)\}", dutch))
        assert holes == set(re.findall(r"\{(\w+)\}", strings["en"][key])), key


@pytest.mark.parametrize("app", APPS)
def test_a_text_for_one_has_the_text_for_many_beside_it(app: str) -> None:
    """`t(key, {count: 1})` takes `key#one` only when `key` counts: a stray `#one` would never show."""
    for language, strings in texts(app).items():
        for key in strings:
            if key.endswith("#one"):
                many = strings.get(key.removesuffix("#one"))
                assert many is not None and "{count}" in many, (language, key)
