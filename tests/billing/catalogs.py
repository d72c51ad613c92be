"""Catalogs with a billing section for the billing tests (CONTRACT §8.2)."""

from __future__ import annotations

from charging.catalog import Catalog, parse_catalog

BASE = """
version: "2026-12-test"
currency: EUR
timezone: Europe/Berlin
services:
  voice: {unit: second}
  data: {unit: byte}
tariffs:
  VOICE_STD:
    service: voice
    rates:
      - id: mobile
        steps: [{from: 0, price: "0.12", per: 60, increment: 1}]
  DATA_STD:
    service: data
    rates: [{id: data, steps: [{from: 0, price: "0.01", per: 1048576, increment: 1024}]}]
plans:
  PREPAID_S:
    tariffs: {voice: VOICE_STD, data: DATA_STD}
    fee: {amount: "4.99", period: month}
  NO_FEE:
    tariffs: {voice: VOICE_STD}
"""

BILLING = """
billing:
  seller: {name: "Example Telecom GmbH", country: DE, vat_id: DE136695976,
           address: "Beispielstr. 1\\n10115 Berlin"}
  prices_include_tax: %(gross)s
  tax:
    DE: [{rate: "19", from: "2021-01-01"}, {rate: "16", from: "2020-07-01"},
         {rate: "19", from: "2007-01-01"}]
    FR: [{rate: "20", from: "2000-01-01"}]
    AT: [{rate: "20", from: "2000-01-01"}]
"""


def catalog(*, gross: bool = False, extra: str = "") -> Catalog:
    return parse_catalog(BASE + BILLING % {"gross": "true" if gross else "false"} + extra,
                         "test catalog")
