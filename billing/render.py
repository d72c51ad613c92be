"""The printable invoice and credit note: HTML from a Jinja2 template, PDF through WeasyPrint.

The input is the stored §8.3 document (``invoice show --json``), so what is printed is what
was finalized, never recomputed. The page carries the content Art. 226 of Directive
2006/112/EC asks of an invoice: date of issue and a sequential number, the seller's and the
customer's names, addresses (where the catalog or the account gives them) and VAT ids, the
supply period, each line, per rate the net and the tax, the totals, and the words
"Reverse charge" where the customer accounts for the VAT. A draft says, in red, that it is not
an invoice yet.
"""

from __future__ import annotations

import jinja2

from charging.money import MICROS, format_amount, parse_decimal

#: names printed for the countries an operator is likely to bill; others print their code
COUNTRIES = {
    "AT": "Austria", "BE": "Belgium", "BG": "Bulgaria", "HR": "Croatia", "CY": "Cyprus",
    "CZ": "Czechia", "DK": "Denmark", "EE": "Estonia", "FI": "Finland", "FR": "France",
    "DE": "Germany", "GR": "Greece", "HU": "Hungary", "IE": "Ireland", "IT": "Italy",
    "LV": "Latvia", "LT": "Lithuania", "LU": "Luxembourg", "MT": "Malta",
    "NL": "Netherlands", "PL": "Poland", "PT": "Portugal", "RO": "Romania", "SK": "Slovakia",
    "SI": "Slovenia", "ES": "Spain", "SE": "Sweden", "GB": "United Kingdom",
    "CH": "Switzerland", "NO": "Norway", "US": "United States", "CA": "Canada",
}
_UNITS = {"second": "s", "byte": "B", "event": "", "day": "days"}

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("billing", "templates"),
                          autoescape=jinja2.select_autoescape(("html", "j2")),
                          trim_blocks=True,
                          lstrip_blocks=True)


class RenderError(ValueError):
    code = "RENDER_FAILED"


def _country(code: str | None) -> str:
    if not code:
        return ""
    return f"{COUNTRIES[code]} ({code})" if code in COUNTRIES else code


def _quantity(line: dict) -> str:
    unit = _UNITS.get(line.get("unit") or "", line.get("unit") or "")
    qty = line["quantity"]
    if line.get("unit") == "byte" and qty.isdigit() and int(qty) >= 1024 * 1024:
        return f"{int(qty) / 1048576:,.1f} MiB".replace(".0 MiB", " MiB")
    if qty.isdigit():
        qty = f"{int(qty):,}"
    return f"{qty} {unit}".strip()


def _doc_for_page(doc: dict) -> dict:
    out = dict(doc)
    decimals = len(doc["total"].split(".")[1]) if "." in doc["total"] else 0
    out["tax"] = [dict(t, gross=format_amount(
        int((parse_decimal(t["net"]) + parse_decimal(t["tax"])) * MICROS), decimals))
        for t in doc["tax"]]
    # line amounts may carry sub-cent digits (rated usage): print them all to the same places
    places = max([decimals] + [len(x["net"].split(".")[1]) for x in doc["lines"]
                               if "." in x["net"]])
    out["lines"] = [dict(x, net=format_amount(int(parse_decimal(x["net"]) * MICROS), places))
                    if places else x for x in doc["lines"]]
    out["sub_cent"] = places > decimals
    for key in ("number", "issue_date", "credits", "reason", "notes"):
        out.setdefault(key, None)
    out["notes"] = out["notes"] or []
    out.setdefault("place_of_supply", doc["buyer"].get("country"))
    out.setdefault("prices_include_tax", False)
    return out


def render_html(doc: dict) -> str:
    """The page of a stored invoice or credit note document."""
    page = _doc_for_page(doc)
    credit = doc.get("kind") == "credit_note"
    title = "Credit note" if credit else "Invoice"
    footer = f"{doc['seller']['name']} · {title} {doc.get('number') or '(draft)'}"
    return _ENV.get_template("invoice.html.j2").render(
        doc=page, title=title, footer=footer.replace('"', "'"),
        seller_address=_lines(doc["seller"].get("address")),
        buyer_address=_lines(doc["buyer"].get("address")),
        country_name=_country, quantity=_quantity)


def render_pdf(doc: dict) -> bytes:
    """The PDF of :func:`render_html`'s page (A4)."""
    import weasyprint  # noqa: PLC0415 - slow to import; only rendering needs it

    page = render_html(doc)
    try:
        return weasyprint.HTML(string=page).write_pdf()
    except Exception as exc:  # noqa: BLE001 - WeasyPrint raises many kinds; say which
        raise RenderError(f"WeasyPrint could not render the PDF: {exc}") from exc


def _lines(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").splitlines() if part.strip()]
