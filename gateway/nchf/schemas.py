"""The 3GPP schemas an Nchf_ConvergedCharging body is checked against (TS 32.291, API v3).

The OpenAPI files (``TS32291_Nchf_ConvergedCharging.yaml`` and what it references,
``TS29571_CommonData.yaml`` first) are read from one directory into a ``referencing``
registry; ``NchfSchemas.check(body)`` validates a ChargingDataRequest with jsonschema's
Draft 4 rules, which are OpenAPI 3.0's (a ``$ref`` hides its siblings, ``exclusiveMinimum``
is a flag). OpenAPI 3.0 is not JSON Schema, so each file is normalised once when loaded:

* ``nullable: true`` becomes ``null`` among the allowed types (or an ``anyOf`` with
  ``{type: null}`` where the schema is a ``$ref`` or a composition);
* ``example``/``x-…``/``discriminator`` are annotations jsonschema passes over anyway.

The validator is built once, at the door's start: the ChargingDataRequest schema with
every reference it reaches put in place (the files it needs are read then, once each), so
checking a body resolves no URI; a recursive reference stays one, resolved through the
registry.
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import urljoin

import yaml
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT4

#: the 3GPP OpenAPI files shipped with the door (CONTRACT §6.4; openapi/README.md)
DEFAULT_DIR = Path(__file__).resolve().parent / "openapi"
MAIN = "TS32291_Nchf_ConvergedCharging.yaml"
_BASE = "https://3gpp.invalid/"  # a URI base, so relative file refs resolve by urljoin
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SchemaProblem(ValueError):
    """A body that does not validate: ``where`` is its JSON path, ``detail`` what is wrong."""

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.where = where
        self.detail = detail


def normalise(node: object) -> object:
    """An OpenAPI 3.0 schema tree as JSON Schema (Draft 4), a new tree."""
    if isinstance(node, list):
        return [normalise(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: normalise(v) for k, v in node.items() if k not in ("example", "discriminator")}
    if out.pop("nullable", False) is True:
        if "$ref" in out or "type" not in out:
            rest = {k: v for k, v in out.items() if k != "description"}
            return {"anyOf": [{"type": "null"}, rest]} if rest else {}
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


class NchfSchemas:
    """Validators of the Nchf request bodies, built once (at the door's start)."""

    def __init__(self, directory: Path | str = DEFAULT_DIR):
        self.directory = Path(directory)
        if not (self.directory / MAIN).is_file():
            raise FileNotFoundError(f"the Nchf OpenAPI file {MAIN} is not in {self.directory}; "
                                    "point the door at the 3GPP files (nchf_schemas)")
        self._load = functools.lru_cache(maxsize=None)(self._read)
        registry = Registry(retrieve=self._retrieve)
        for name in (MAIN, "TS29571_CommonData.yaml"):
            registry = registry.with_resource(_BASE + name, self._resource(name))
        self.registry = registry.crawl()
        self.request = self._validator("ChargingDataRequest")

    def _validator(self, schema: str) -> Draft4Validator:
        """A validator of one schema with its references put in place (a recursive one
        stays a reference): jsonschema then spends no time resolving URIs, which was
        most of the time of checking a body."""
        uri = f"{_BASE}{MAIN}#/components/schemas/{schema}"
        return Draft4Validator(self._inline({"$ref": uri}, _BASE + MAIN, {}, ()),
                               registry=self.registry)

    def _inline(self, node: object, base: str, done: dict, stack: tuple) -> object:
        if isinstance(node, list):
            return [self._inline(x, base, done, stack) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):  # Draft 4 / OpenAPI 3.0: a $ref's siblings do not count
            uri = urljoin(base, ref)
            if uri in stack:
                return {"$ref": uri}
            if uri not in done:
                target = self.registry.resolver().lookup(uri).contents
                done[uri] = self._inline(target, uri.split("#")[0], done, (*stack, uri))
            return done[uri]
        return {k: (v if k == "enum" else self._inline(v, base, done, stack))
                for k, v in node.items()}

    def _read(self, name: str) -> dict:
        path = self.directory / name
        if "/" in name or not path.is_file():
            raise NoSuchResource(ref=name)
        with path.open("rb") as f:
            return normalise(yaml.load(f, Loader=_Loader))

    def _resource(self, name: str) -> Resource:
        return Resource(contents=self._load(name), specification=DRAFT4)

    def _retrieve(self, uri: str) -> Resource:
        if not uri.startswith(_BASE):
            raise NoSuchResource(ref=uri)
        return self._resource(uri[len(_BASE):])

    def check(self, body: object, validator: Draft4Validator | None = None) -> None:
        """Raise ``SchemaProblem`` naming the first (deepest-relevant) error of ``body``."""
        from jsonschema.exceptions import best_match

        error = best_match((validator or self.request).iter_errors(body))
        if error is not None:
            where = error.json_path
            message = error.message
            if len(message) > 300:
                message = message[:300] + "…"
            raise SchemaProblem(where, message)
