"""A YAML loader with YAML 1.2 scalars, so catalogs read the way they look.

PyYAML follows YAML 1.1, where ``10:00`` is the integer 600 (base 60), ``on``/``no`` are
booleans and ``010`` is octal. In a tariff that silently turns a time band into a number, so
this loader resolves only the YAML 1.2 core forms: decimal ints and floats, true/false, null.
Everything else stays a string. A key repeated in one mapping is an error, not a silent
overwrite.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

import yaml


class CatalogLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema implicit scalars and no repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # PyYAML lets a repeated key silently replace the earlier value: a step with two
        # prices, or a tariff defined twice, would load as whichever came last.
        seen: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


CatalogLoader.yaml_implicit_resolvers = {}
CatalogLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
CatalogLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
# Leading zeros are not a number here: ``0049`` stays the text "0049" (a dialling prefix).
CatalogLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
CatalogLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+)$"),
    list("-+.0123456789"),
)


def _int_decimal(loader: CatalogLoader, node: yaml.ScalarNode) -> int:
    # Explicit !!int tags may still carry leading zeros: decimal, never octal.
    return int(loader.construct_scalar(node))


CatalogLoader.add_constructor("tag:yaml.org,2002:int", _int_decimal)


def load_yaml(text: str) -> object:
    """Parse YAML text with the catalog loader (raises ``yaml.YAMLError``, also for a
    repeated key in a mapping and for nesting too deep to load)."""
    try:
        return yaml.load(text, Loader=CatalogLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError as exc:
        raise yaml.YAMLError("nested too deeply to load") from exc


def unknown_key(key: object, known: Sequence[str]) -> str:
    """Why ``key`` is refused where only ``known`` keys may be, with the likeliest key meant
    (a typo such as ``maxcost`` would otherwise drop a tariff's cap without a word)."""
    text = key[:60] if isinstance(key, str) else repr(key)[:60]
    close = difflib.get_close_matches(text, known, n=1) if isinstance(key, str) else []
    if close:
        return f"unknown key {text!r} — did you mean {close[0]!r}?"
    return f"unknown key {text!r} (known: {', '.join(known)})"
