"""The account API (CONTRACT §7) as a FastAPI application: account reads, top-ups, signed
adjustments, the ledger, account creation and change, behind API keys and roles.

An adapter like the others: money moves only through ``BalanceStore.topup`` (lua/topup.lua:
atomic, ledgered with the actor, never taking reserved money nor overdrawing an account that
may not go negative), accounts change only through ``upsert_accounts`` (lua/upsert.lua, with
every check of an account file), and an account reads as ``chargeflow balance --json``.

Who calls and whether they may go on (the key, its revocation, its rate) is asked in one
pipelined round trip on an asyncio Redis client (``Gate``), and a balance read rides in the
same round trip: the read that self-care apps make most costs one. The other endpoints are
plain functions, run by FastAPI on its worker threads with the synchronous Redis client the
stores use, so none of them holds the event loop.

Who may do what (a selfcare key asking about another account gets 404, as for an account
that does not exist, so it learns nothing of others):

    GET   /v1/accounts/{id}              admin, agent, selfcare (own)
    GET   /v1/accounts/{id}/ledger       admin, agent, selfcare (own)
    POST  /v1/accounts/{id}/topups       admin, agent
    POST  /v1/accounts/{id}/adjustments  admin, agent (at most the agent limit each)
    POST  /v1/accounts                   admin
    PATCH /v1/accounts/{id}              admin
"""


import asyncio
import re
import threading
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

import orjson
import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import idempotency as idem
from api.gate import Gate
from api.keys import ADMIN, AGENT, SELFCARE, ApiKey
from api.limits import BodyLimit, RateLimiter
from api.models import (
    ACCOUNT_ID_PATTERN,
    AccountCreate,
    AccountPatch,
    AccountView,
    AdjustmentBody,
    LedgerEntry,
    LedgerPage,
    MoneyChange,
    Problem,
    TopupBody,
    micros_of,
)
from api.problems import ApiProblem, install, problem_for, too_large
from balances.accounts import AccountsFileError, parse_accounts
from balances.codec import decode_account
from balances.redis_errors import store_errors
from balances.store import BalanceStore
from balances.topups import refusal
from balances.views import account_json
from catalog_cache.store import CatalogCache
from charging.catalog import Catalog
from charging.errors import CorruptAccountError, StoreError
from charging.records import format_balance
from charging.state import Account

DEFAULT_AGENT_ADJUST_LIMIT = 50_000_000  # micros: "50.00"
_CURSOR = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


@dataclass(frozen=True)
class ApiSettings:
    prefix: str = "cf"
    agent_adjust_limit: int = DEFAULT_AGENT_ADJUST_LIMIT  # micros per adjustment
    rate_per_s: float = 50.0  # per key, on average
    burst: int = 100  # per key, at once
    max_body_bytes: int = 16 * 1024

    @classmethod
    def from_extra(cls, prefix: str, extra: dict) -> "ApiSettings":
        """From ``DoorConfig.extra`` (``agent_adjust_limit`` micros, ``rate_per_s``,
        ``burst``, ``max_body_bytes``)."""
        known = ("agent_adjust_limit", "rate_per_s", "burst", "max_body_bytes")
        return cls(prefix, **{k: extra[k] for k in known if k in extra})


_ERRORS = {400: "The body is not JSON text (UTF-8).", 401: "No, unknown or revoked key.",
           403: "The key's role may not do this.",
           404: "No such account (or not this key's).",
           409: "Not enough free money (the balance, or money sessions hold), the account "
                "exists, or the first request of this Idempotency-Key still runs.",
           413: "The body is too large.",
           422: "Invalid request: each error names its field.",
           429: "Too many requests for this key: see Retry-After.",
           503: "The account store cannot be reached."}


def _responses(*codes: int) -> dict:
    return {c: {"description": _ERRORS.get(c, "Error"), "model": Problem} for c in codes}


_bearer = HTTPBearer(auto_error=False, description="An API key from `chargeflow apikey create`.")
AccountId = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN, description="The account id.")]
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                       description="The same key and body apply once.")]


def create_app(client: redis.Redis, catalogs: CatalogCache,
               settings: ApiSettings = ApiSettings(),
               aclient: aioredis.Redis | None = None) -> FastAPI:
    """The API over ``client`` (synchronous Redis), ``aclient`` (asyncio Redis on the same
    server; by default one made from ``client``'s connection settings, used from the loop
    the app is served on) and the active catalog of ``catalogs``."""
    store = BalanceStore(client, prefix=settings.prefix)
    limiter = RateLimiter(client, settings.prefix, settings.rate_per_s, settings.burst)
    gate = Gate(aclient if aclient is not None else async_twin(client), settings.prefix,
                limiter)
    remembered = idem.Idempotency(client, settings.prefix)
    catalog_lock = threading.Lock()
    shown: list = [float("-inf"), None]  # when the catalog was last asked, and what it was

    app = FastAPI(title="chargeflow account API", version="1",
                  description="Prepaid balance checks, top-ups and adjustments (CONTRACT §7).",
                  docs_url=None, redoc_url=None)
    install(app)

    async def caller(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
                     ) -> ApiKey:
        return (await gate.check(cred.credentials if cred is not None else None))[0]

    Caller = Annotated[ApiKey, Depends(caller)]

    def catalog() -> Catalog | None:
        """The active catalog (looked up at most every few seconds), None when none is
        loaded."""
        with catalog_lock:
            try:
                return catalogs.current.catalog
            except StoreError:
                if catalogs.refresh() is None:
                    return None
                raise

    async def catalog_now() -> Catalog | None:
        """``catalog()`` from the event loop: asked at most every second, in a thread (a
        check of the active version is a synchronous Redis call)."""
        if time.monotonic() - shown[0] >= 1.0:
            shown[1] = await asyncio.to_thread(catalog)
            shown[0] = time.monotonic()
        return shown[1]

    def allowed(key: ApiKey, account: str | None, *roles: str) -> None:
        """404 for a selfcare key and another account, 403 for a role not in ``roles``."""
        if key.role == SELFCARE and account is not None and account != key.account:
            raise _no_account(account)
        if key.role not in roles:
            raise ApiProblem(403, "forbidden", f"a {key.role} key may not do this (it needs "
                             f"{' or '.join(roles)})")

    def view(account: str) -> Account:
        try:
            acct = store.view(account)
        except CorruptAccountError as exc:
            raise ApiProblem(500, "corrupt-account", f"{exc}; its hash needs repair") from exc
        if acct is None:
            raise _no_account(account)
        return acct

    async def read_account(account_id: str, credentials: str | None) -> Response:
        key, raw = await gate.check(credentials, store.keys.account(account_id))
        allowed(key, account_id, ADMIN, AGENT, SELFCARE)
        try:
            acct = decode_account(account_id, raw or {})
        except CorruptAccountError as exc:
            raise ApiProblem(500, "corrupt-account", f"{exc}; its hash needs repair") from exc
        if acct is None:
            raise _no_account(account_id)
        return Response(orjson.dumps(account_json(acct, await catalog_now())),
                        media_type="application/json")

    @app.get("/v1/accounts/{account_id}", response_model=AccountView,
             responses=_responses(401, 403, 404, 422, 429, 503), summary="Read an account",
             operation_id="getAccount")
    async def get_account(account_id: AccountId, cred: Annotated[
            HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Response:
        # FastRead answers this route's requests before FastAPI routes them; it is here for
        # the OpenAPI document and for what FastRead leaves to FastAPI
        return await read_account(account_id, cred.credentials if cred is not None else None)

    def change(key: ApiKey, account: str, request: Request, body: TopupBody | AdjustmentBody,
               idempotency_key: str, kind: str) -> JSONResponse:
        allowed(key, account, ADMIN, AGENT)
        micros = micros_of(body.amount)
        if micros == 0 or (kind == "topup" and micros < 0):
            want = "positive" if kind == "topup" else "non-zero"
            raise ApiProblem(422, "invalid-request", f"amount: must be {want}, got "
                             f"{body.amount!r}", errors=[{"in": "body", "field": "amount",
                                                          "reason": f"must be {want}"}])
        if kind == "adjustment" and key.role == AGENT and \
                abs(micros) > settings.agent_adjust_limit:
            raise ApiProblem(403, "over-agent-limit", f"an agent may adjust at most "
                             f"{format_balance(settings.agent_adjust_limit)} at once, not "
                             f"{format_balance(abs(micros))}")
        req_hash = idem.request_hash(request.method, request.url.path, body.model_dump())
        try:
            stored = remembered.begin(key.id, idempotency_key, req_hash)
        except idem.KeyReused:
            raise ApiProblem(422, "idempotency-key-reused", "this Idempotency-Key was used "
                             "with another request; a new request needs a new key") from None
        except idem.StillRunning:
            raise ApiProblem(409, "idempotency-key-in-use", "the first request with this "
                             "Idempotency-Key is still running; retry later",
                             headers={"Retry-After": "1"}) from None
        if stored is not None:
            return JSONResponse(stored.body, status_code=stored.status,
                                headers={"Idempotent-Replayed": "true"})
        ledger_id = idem.topup_id(key.id, idempotency_key)
        try:
            done = store.topup(account, micros, topup_id=ledger_id, reason=kind,
                               actor=key.id, note=body.reason)
        except BaseException:
            remembered.release(key.id, idempotency_key)
            raise
        if done.status not in ("ok", "replay"):
            remembered.release(key.id, idempotency_key)
            raise _refused(done.status, refusal(done, account, micros, ledger_id) or "")
        doc = {"id": account, "amount": format_balance(micros),
               "balance": format_balance(done.balance or 0), "ledger_id": ledger_id,
               "reason": body.reason, "actor": key.id}
        remembered.finish(key.id, idempotency_key, req_hash, idem.Stored(201, doc))
        return JSONResponse(doc, status_code=201)

    money_errors = _responses(400, 401, 403, 404, 409, 413, 422, 429, 503)

    @app.post("/v1/accounts/{account_id}/topups", status_code=201, response_model=MoneyChange,
              responses=money_errors, summary="Top up an account",
              operation_id="topUp")
    def post_topup(account_id: AccountId, body: TopupBody, request: Request,
                   idempotency_key: IdempotencyKey, key: Caller) -> JSONResponse:
        return change(key, account_id, request, body, idempotency_key, "topup")

    @app.post("/v1/accounts/{account_id}/adjustments", status_code=201,
              response_model=MoneyChange, responses=money_errors,
              summary="Adjust a balance (signed)", operation_id="adjust")
    def post_adjustment(account_id: AccountId, body: AdjustmentBody, request: Request,
                        idempotency_key: IdempotencyKey, key: Caller) -> JSONResponse:
        return change(key, account_id, request, body, idempotency_key, "adjustment")

    @app.get("/v1/accounts/{account_id}/ledger", response_model=LedgerPage,
             responses=_responses(401, 403, 404, 422, 429, 503), summary="Read the ledger",
             operation_id="getLedger")
    def get_ledger(account_id: AccountId, key: Caller,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   after: Annotated[str | None, Query(
                       pattern=r"^[0-9]{1,20}-[0-9]{1,20}$",
                       description="The `cursor` of the last entry read.")] = None) -> dict:
        allowed(key, account_id, ADMIN, AGENT, SELFCARE)
        view(account_id)
        if after is not None and not _is_cursor(after):
            raise ApiProblem(422, "invalid-request", f"after: {after!r} is not a cursor (the "
                             "`cursor` of a ledger entry)", errors=[
                                 {"in": "query", "field": "after", "reason": "not a cursor"}])
        rows = client.xrange(store.keys.ledger(account_id),
                             min="-" if after is None else f"({after}", count=limit)
        entries = [_entry(entry_id, fields) for entry_id, fields in rows]
        return {"account": account_id, "entries": entries,
                "next": entries[-1]["cursor"] if len(entries) == limit else None}

    @app.post("/v1/accounts", status_code=201, response_model=AccountView,
              responses=_responses(400, 401, 403, 409, 413, 422, 429, 503),
              summary="Create an account", operation_id="createAccount")
    def post_account(body: AccountCreate, key: Caller) -> JSONResponse:
        allowed(key, None, ADMIN)
        spec = _spec(body.model_dump(exclude_none=True), catalog())
        exists = ApiProblem(409, "account-exists", f"account {body.id!r} exists; change it "
                            f"with PATCH /v1/accounts/{quote(body.id, safe='')}")
        # upsert.lua would update an account created meanwhile: one creation at a time
        creating = f"{settings.prefix}:api:creating:{body.id}"
        with store_errors("cannot create an account in Redis"):
            if not client.set(creating, key.id, nx=True, ex=10):
                raise exists
        try:
            if store.view(body.id) is not None:
                raise exists
            store.upsert_accounts([spec], actor=key.id)
        finally:
            with store_errors("cannot create an account in Redis"):
                client.delete(creating)
        return JSONResponse(account_json(view(body.id), catalog()), status_code=201,
                            headers={"Location": f"/v1/accounts/{quote(body.id, safe='')}"})

    @app.patch("/v1/accounts/{account_id}", response_model=AccountView,
               responses=_responses(400, 401, 403, 404, 413, 422, 429, 503),
               summary="Change an account: plan, status, allow_negative, identities",
               operation_id="changeAccount")
    def patch_account(account_id: AccountId, body: AccountPatch, key: Caller) -> dict:
        allowed(key, account_id, ADMIN)
        acct = view(account_id)
        given = body.model_dump(exclude_none=True)
        if given:
            record = {"id": account_id, "plan": acct.plan, "status": acct.status,
                      "allow_negative": acct.allow_negative, **given}
            store.upsert_accounts([_spec(record, catalog())], actor=key.id)
        return account_json(view(account_id), catalog())

    async def _too_large(scope, receive, send):
        await too_large(scope, receive, send, settings.max_body_bytes)

    app.add_middleware(FastRead, read=read_account)  # added first: inside BodyLimit
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, too_large=_too_large)

    _finish_document(app)
    return app


_READ = re.compile(r"/v1/accounts/([^/]+)")
_READ_ID = re.compile(ACCOUNT_ID_PATTERN)


class FastRead:
    """ASGI middleware: ``GET /v1/accounts/{id}`` with a well-formed id answered by ``read``
    (``read_account``: the endpoint's own code, its errors the same problem details) without
    FastAPI's routing, dependency solving and request objects, which cost a balance read
    about as much as everything else it does. Anything else goes on to FastAPI."""

    def __init__(self, app, read):
        self.app = app
        self.read = read

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            m = _READ.fullmatch(scope["path"])
            if m is not None and _READ_ID.match(m.group(1)):
                try:
                    response = await self.read(m.group(1), _bearer_of(scope["headers"]))
                except Exception as exc:  # noqa: BLE001 - answered as FastAPI's handlers do
                    response = problem_for(exc, "GET", scope["path"])
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _bearer_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The credentials of the first Authorization header when its scheme is Bearer, as
    FastAPI's ``HTTPBearer(auto_error=False)`` reads them."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, param = value.decode("latin-1").partition(" ")
            param = param.strip()
            return param if scheme and param and scheme.lower() == "bearer" else None
    return None


def _is_cursor(text: str) -> bool:
    """A stream entry id: two whole numbers below 2**64 (Redis refuses others)."""
    return _CURSOR.fullmatch(text) is not None and \
        all(int(part) < 2**64 for part in text.split("-"))


def _no_account(account: str) -> ApiProblem:
    return ApiProblem(404, "no-account", f"no account {account!r}")


def _refused(status: str, message: str) -> ApiProblem:
    if status == "unknown":
        return ApiProblem(404, "no-account", message)
    if status in ("negative", "reserved"):
        return ApiProblem(409, "insufficient-funds", message)
    if status == "corrupt":
        return ApiProblem(500, "corrupt-account", message)
    return ApiProblem(422, f"refused-{status}", message)  # limit, conflict


def _spec(record: dict, cat: Catalog | None):
    """An AccountSpec by the rules of account files (every problem listed, each naming its
    field); ApiProblem 422 otherwise."""
    try:
        (spec,) = parse_accounts(orjson.dumps(record).decode(), cat, source="body")
    except AccountsFileError as exc:
        errors = [{"in": "body", "field": p.path.removeprefix("line 1").lstrip("."),
                   "reason": p.reason} for p in exc.problems]
        raise ApiProblem(422, "invalid-account", "; ".join(
            f"{e['field']}: {e['reason']}" if e["field"] else e["reason"] for e in errors),
            errors=errors) from exc
    return spec


def _entry(entry_id: bytes, fields: dict) -> dict:
    row = {k.decode(): v.decode() for k, v in fields.items()}
    cursor = entry_id.decode()
    out = LedgerEntry(
        cursor=cursor, id=row.get("id", ""), time_ms=int(cursor.split("-")[0]),
        delta=format_balance(int(row.get("delta", "0"))),
        balance=format_balance(int(row.get("balance", "0"))), reason=row.get("reason", ""),
        actor=row.get("actor", "engine"), note=row.get("note") or None,
        catalog_version=row.get("catalog_version") or None)
    return out.model_dump()


#: operations whose answer names an account (``id``), and those that take it
_LINKED_FROM = ("createAccount", "getAccount", "changeAccount", "topUp", "adjust")
_LINKED_TO = ("getAccount", "changeAccount", "topUp", "adjust", "getLedger")


def _finish_document(app: FastAPI) -> None:
    """Error responses in the OpenAPI document are ``application/problem+json`` Problems
    (FastAPI writes its own validation error model as ``application/json``), and an answer
    naming an account links to the operations on it (OpenAPI links: what a client, or a
    stateful test, may call next with the id it got)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        for path in doc.get("paths", {}).values():
            for op in path.values():
                for code, response in op.get("responses", {}).items():
                    if code.isdigit() and int(code) >= 400:
                        response["content"] = {"application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}}}
                    elif op.get("operationId") in _LINKED_FROM:
                        response["links"] = {
                            target: {"operationId": target,
                                     "parameters": {"account_id": "$response.body#/id"}}
                            for target in _LINKED_TO}
        schemas = doc.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi


def async_twin(client: redis.Redis) -> aioredis.Redis:
    """An asyncio client on ``client``'s server with its connection settings (a pool that
    waits for a free connection rather than fail, as the doors' own)."""
    sync_pool = client.connection_pool
    kwargs = dict(sync_pool.connection_kwargs)
    if issubclass(sync_pool.connection_class, redis.UnixDomainSocketConnection):
        kind = aioredis.UnixDomainSocketConnection
    elif issubclass(sync_pool.connection_class, redis.SSLConnection):
        kind = aioredis.SSLConnection
    else:
        kind = aioredis.Connection
    for name in ("retry", "redis_connect_func", "credential_provider"):
        kwargs.pop(name, None)
    pool = aioredis.BlockingConnectionPool(connection_class=kind, max_connections=256,
                                           timeout=5.0, **kwargs)
    return aioredis.Redis.from_pool(pool)
