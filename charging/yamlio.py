"""A YAML loader with YAML 1.2 scalars, so catalogs read the way they look.

PyYAML follows YAML 1.1, where ``10:00`` is the integer 600 (base 60), ``on``/``no`` are
booleans and ``010`` is octal. In a tariff that silently turns a time band into a number, so
this loader resolves only the YAML 1.2 core forms: decimal ints and floats, true/false, null.
Everything else stays a string.
"""

from __future__ import annotations

import re

import yaml


class CatalogLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema implicit scalars."""


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
    """Parse YAML text with the catalog loader (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=CatalogLoader)  # noqa: S506 - SafeLoader subclass
