"""Shared fixtures for the charging tests.

Most catalog tests start from the sample catalog (``charging/samples/catalog.yaml``) and
change one thing. ``catalog_yaml`` does that with the same path syntax the validator uses in
its problems, so a test reads as "set this path to that value, expect a problem at that path":

    catalog_yaml({"tariffs.VOICE_STD.rates[0].steps[1].from": 90})
    catalog_yaml({"bands.night": {"from": "22:00", "to": "06:00"}})        # add a key
    catalog_yaml({"tariffs.VOICE_STD.rates[3]": {...}})  # index == length: append
    catalog_yaml({"destinations.DE[+]": "4930"})                           # append
    catalog_yaml({"tariffs.VOICE_STD.max_cost": DELETE})                   # remove a key
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import charging
from charging.catalog import Catalog, parse_catalog
from charging.compiler import CompiledCatalog, compile_catalog
from charging.errors import CatalogError, Problem
from charging.yamlio import load_yaml

SAMPLE_PATH = Path(charging.__file__).parent / "samples" / "catalog.yaml"
DELETE = object()
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+|\+)\]")


def _tokens(path: str) -> list[str | int]:
    out: list[str | int] = []
    for key, index in _TOKEN.findall(path):
        if key:
            out.append(key)
        else:
            out.append(-1 if index == "+" else int(index))  # -1 marks "append"
    return out


def set_path(doc: dict, path: str, value: object) -> None:
    """Set (or with ``DELETE`` remove) ``path`` in a parsed YAML document, in place."""
    *parents, last = _tokens(path)
    node = doc
    for tok in parents:
        node = node[tok]
    if value is DELETE:
        del node[last]
    elif last == -1 or (isinstance(node, list) and last == len(node)):
        node.append(value)
    else:
        node[last] = value


class _Dumper(yaml.SafeDumper):
    """Quotes every string the catalog's YAML 1.2 loader would not read back as that string
    (PyYAML's dumper decides by YAML 1.1 rules, which leave e.g. ``0049`` and ``1e-1`` bare)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None if load_yaml(value) == value else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(doc: dict) -> str:
    """YAML text of a document, read back by ``load_yaml`` as the same document."""
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    assert load_yaml(text) == doc, "test helper produced YAML that reads back differently"
    return text


@pytest.fixture(scope="session")
def sample_text() -> str:
    return SAMPLE_PATH.read_text(encoding="utf-8")


@pytest.fixture
def sample_doc(sample_text: str) -> dict:
    """A fresh, mutable copy of the sample catalog as a YAML document."""
    return copy.deepcopy(load_yaml(sample_text))


@pytest.fixture
def catalog_yaml(sample_text: str) -> Callable[..., str]:
    """``catalog_yaml({path: value, ...})``: the sample catalog's YAML with those changes."""
    base = load_yaml(sample_text)

    def build(changes: dict[str, object] | None = None) -> str:
        doc = copy.deepcopy(base)
        for path, value in (changes or {}).items():
            set_path(doc, path, value)
        return dump(doc)

    return build


@pytest.fixture
def problems_of(catalog_yaml) -> Callable[..., list[Problem]]:
    """``problems_of({path: value})``: the problems of the changed sample; it must be invalid."""

    def run(changes: dict[str, object] | None = None, *, text: str | None = None):
        with pytest.raises(CatalogError) as info:
            parse_catalog(text if text is not None else catalog_yaml(changes))
        assert info.value.problems, "CatalogError without problems"
        return info.value.problems

    return run


def _find_problem(problems: list[Problem], path: str, phrase: str) -> Problem:
    """The problem at exactly ``path`` whose reason contains ``phrase`` (case-insensitive)."""
    for p in problems:
        if p.path == path and phrase.lower() in p.reason.lower():
            return p
    listing = "\n".join(f"  {p.path!r}: {p.reason}" for p in problems)
    raise AssertionError(f"no problem at {path!r} mentioning {phrase!r}; got:\n{listing}")


@pytest.fixture
def find_problem() -> Callable[[list[Problem], str, str], Problem]:
    """``find_problem(problems, path, phrase)``: that problem, or an AssertionError listing all."""
    return _find_problem


@pytest.fixture
def expect_problem(problems_of) -> Callable[..., Problem]:
    """``expect_problem(changes, path, phrase)``: the changed sample is rejected with a problem
    at ``path`` whose reason says ``phrase``; returns that problem for further checks."""

    def check(changes: dict[str, object], path: str, phrase: str) -> Problem:
        return _find_problem(problems_of(changes), path, phrase)

    return check


@pytest.fixture
def valid(catalog_yaml) -> Callable[..., Catalog]:
    """``valid(changes)``: the changed sample parses (the control case of a rule)."""

    def run(changes: dict[str, object] | None = None) -> Catalog:
        return parse_catalog(catalog_yaml(changes))

    return run


@pytest.fixture(scope="session")
def sample_catalog() -> Catalog:
    return parse_catalog(SAMPLE_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def sample_compiled(sample_catalog: Catalog) -> CompiledCatalog:
    return compile_catalog(sample_catalog)


def band_catalog_text(timezone: str, band: dict) -> str:
    """A one-band catalog: tariff T rates ``on`` (1.00/unit) while band ``b`` holds, else
    ``off`` (2.00/unit). Which rate a usage gets shows whether the band holds."""
    step = {"from": 0, "per": 1, "increment": 1}
    doc = {
        "version": "bands", "currency": "EUR", "timezone": timezone,
        "services": {"voice": {"unit": "second"}},
        "bands": {"b": band},
        "tariffs": {"T": {"service": "voice", "rates": [
            {"id": "on", "band": "b", "steps": [{**step, "price": "1.00"}]},
            {"id": "off", "steps": [{**step, "price": "2.00"}]},
        ]}},
        "plans": {"P": {"tariffs": {"voice": "T"}}},
    }
    return dump(doc)


@pytest.fixture(scope="session")
def band_catalog() -> Callable[[str, dict], tuple[Catalog, CompiledCatalog]]:
    """``band_catalog(timezone, band)`` -> (catalog, compiled); see ``band_catalog_text``."""
    cache: dict[str, tuple[Catalog, CompiledCatalog]] = {}

    def build(timezone: str, band: dict) -> tuple[Catalog, CompiledCatalog]:
        text = band_catalog_text(timezone, band)
        if text not in cache:
            cat = parse_catalog(text)
            cache[text] = (cat, compile_catalog(cat))
        return cache[text]

    return build
