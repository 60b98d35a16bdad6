"""The domain of each task (gnn_attention.training.data.domain): what its sources can be."""
import pytest

from gnn_attention.training.data import tasks
from gnn_attention.training.data.domain import domain, outside_message


def test_number_domains_are_exact_and_strict():
    d = domain("digits-en", {"max_number": 300})
    assert d.strict and d.contains("0") and d.contains("300")
    assert not any(d.contains(x) for x in ("301", "12345", "042", "-1", " 42", "4 2"))
    words = domain("en-de", {})
    assert words.contains("forty-two") and words.contains(tasks.english_words(9999))
    assert not words.contains("forty two") and not words.contains("ten thousand")


def test_dates_any_of_the_four_formats_in_the_year_range():
    d = domain("dates-fr", {})
    assert not d.strict
    for text in ("3/3/19", "Mar 3, 2019", "March 3, 2019", "Sunday, March 3, 2019", "1/1/50"):
        assert d.contains(text), text
    for text in ("Monday, March 3, 2019", "2019-03-03", "March 3, 2100", "March 03, 2019"):
        assert not d.contains(text), text


def test_symbol_domains_by_rule():
    d = domain("sort", {"max_len": 5})
    assert d.contains("abc") and not d.contains("ab") and not d.contains("abcdef")
    assert outside_message("ab", "sort", d) == ("'ab' is outside what the sort model was trained "
                                                "on: strings of 3..5 characters from "
                                                "'abcdefghij'; the output below is a guess")
    with pytest.raises(ValueError, match="unknown task"):
        domain("klingon")


def test_every_generated_source_is_inside_its_domain():
    for name, params in (("digits-en", {"max_number": 200}), ("en-fr", {"max_number": 200}),
                         ("dates-de", {"first_year": 1999, "last_year": 2001}),
                         ("reverse", {"count": 200})):
        d = domain(name, params)
        data = tasks.load_task(name, **params)
        assert all(d.contains(s) for s, _ in data.train + data.val + data.test), name
