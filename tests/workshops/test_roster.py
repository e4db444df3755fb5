"""The students CSV: good rosters parse; every bad row is listed by its line, at once."""

from __future__ import annotations

import pytest

from gpulab_hub.workshops.names import check_workshop_name, normalize_username
from gpulab_hub.workshops.roster import RosterError, parse_roster


def parse(text, taken=()):
    return parse_roster(text, normalize_username, taken)


def test_a_roster_with_a_header_and_extra_columns():
    students = parse("\ufeffName,Username,email\nAda L,ada,a@x.org\n\nBo,BO.Smith,\n")
    assert [(s.line, s.given, s.username) for s in students] == [
        (2, "ada", "ada"),
        (4, "BO.Smith", "bo.smith"),
    ]


def test_every_bad_row_is_listed_by_line():
    text = "username,email\nada\nbad name\n\nADA\nﬁona\n,c@x.org\nroot\ncarl/x\n"
    with pytest.raises(RosterError) as caught:
        parse(text, taken={"root"})
    problems = dict(caught.value.problems)
    assert sorted(problems) == [3, 5, 7, 8, 9]
    assert "'bad name' contains U+0020 (space)" in problems[3]
    assert problems[5] == "'ADA' (as 'ada') duplicates line 2"
    assert problems[7] == "no username"
    assert problems[8] == "'root' is an existing user"
    assert "'carl/x'" in problems[9]
    message = str(caught.value)
    assert message.startswith("the students CSV has 5 problem(s); nothing was created")
    assert "line 5: 'ADA' (as 'ada') duplicates line 2" in message


def test_unicode_spellings_normalise_to_one_name():
    # NFKC folds the ligature "ﬁ" to "fi"; casefold folds "ß" to "ss": both collide.
    with pytest.raises(RosterError) as caught:
        parse("username\nfiona\nﬁona\nstrasse\nSTRAẞE\n", taken=())
    assert [line for line, _ in caught.value.problems] == [3, 5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the students CSV is empty"),
        ("name,email\nada,a@x.org\n", "must have a 'username' column"),
        ("username\n\n", "lists no students"),
    ],
)
def test_rosters_that_are_not_rosters(text, message):
    with pytest.raises(RosterError, match=message):
        parse(text)


@pytest.mark.parametrize("name", ["dl101", "ml-2026.spring", "a1"])
def test_good_workshop_names(name):
    assert check_workshop_name(name) == name


@pytest.mark.parametrize("name", ["", "a", "DL101", "1abc", "abc-", "a b", "x" * 49, None, 3])
def test_bad_workshop_names_name_the_field(name):
    with pytest.raises(ValueError, match="^name must be"):
        check_workshop_name(name)
