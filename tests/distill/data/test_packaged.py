"""The packaged sets: Rotten Tomatoes and BBC News, read offline and split the same way every time."""

from __future__ import annotations

from distill.data import (
    SPLITS,
    load_data,
)
from tests.distill.data.support import assert_disjoint, data_cfg, load_error


def test_it_loads_rotten_tomatoes_with_a_fixed_stratified_split():
    data = load_data(data_cfg("packaged:rotten_tomatoes"))
    assert data.name == "rotten_tomatoes"
    assert data.labels == ("rotten", "fresh")
    total = len(data.train) + len(data.validation) + len(data.test)
    assert 12_500 <= total <= 12_900
    assert abs(len(data.train) / total - 0.8) < 0.005
    assert abs(len(data.validation) / total - 0.1) < 0.005
    assert abs(len(data.test) / total - 0.1) < 0.005
    assert_disjoint(data)
    assert all(text == text.strip() and text for text in data.train.texts)

    overall = sum(sum(data.split(name).labels) for name in SPLITS) / total
    for name in SPLITS:
        split = data.split(name)
        assert set(split.labels) == {0, 1}
        assert abs(sum(split.labels) / len(split) - overall) < 0.01, name

    again = load_data(data_cfg("packaged:rotten_tomatoes"))
    for name in SPLITS:
        assert again.split(name) == data.split(name)


def test_it_loads_bbc_news_deduplicated_with_five_topics():
    data = load_data(data_cfg("packaged:bbc_news"))
    assert data.labels == ("business", "entertainment", "politics", "sports", "tech")
    total = len(data.train) + len(data.validation) + len(data.test)
    assert 2_050 <= total <= 2_225  # 2,225 files, some of them duplicates
    assert_disjoint(data)
    for name in SPLITS:
        assert set(data.split(name).labels) == set(range(5))
    title, body = data.train.texts[0].split("\n", 1)
    assert title and len(body) > len(title)
    assert not any("\ufffd" in text for name in SPLITS for text in data.split(name).texts)


def test_it_rejects_an_unknown_packaged_set():
    field, message = load_error(data_cfg("packaged:imdb"))
    assert field == "data.source"
    assert "'imdb'" in message and "bbc_news" in message and "rotten_tomatoes" in message
