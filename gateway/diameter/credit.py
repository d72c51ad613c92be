"""Answering one Credit-Control-Request: subscriber, session record, the engine's decisions,
the answer (CONTRACT §6.2, §6.3). The peer loop (``door``) hands every CCR here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from diameter.message import Message
from diameter.message.constants import AVP_SUBSCRIPTION_ID

from balances.codec import Keys
from balances.redis_errors import store_errors
from charging.errors import StoreError
from gateway.bridge import AnswerTimeout, Busy
from gateway.diameter import gy, wire
from gateway.diameter.sessions import GySessions
from gateway.diameter.wire import AnswerError
from gateway.identities import GY_TYPES
from gateway.local import RequestRejected

log = logging.getLogger("chargeflow.diameter")


class CreditControlService:
    """CCR in, CCA bytes out; every state it needs is in Redis (any gateway may answer any
    CCR of a session)."""

    def __init__(self, ctx, sessions: GySessions, clock: Callable[[], float] = time.time):
        self.ctx = ctx
        self.sessions = sessions
        self.clock = clock
        self.keys = Keys(ctx.config.prefix)

    async def answer(self, msg: Message) -> tuple[bytes, str, int]:
        """The answer to the CCR ``msg``, the command's name and the Result-Code."""
        cfg = self.ctx.config
        try:
            ccr = gy.parse_ccr(msg)
        except AnswerError as err:
            sid = gy.session_id_of(msg)
            log.info("CCR refused %d (%s), Session-Id %s", err.code, err.reason, sid)
            return (wire.error_answer(msg.header, err, cfg.origin_host, cfg.origin_realm, sid,
                                      gy.echo_avps(msg)), "CCR", err.code)
        try:
            result, avps = await self._charge(ccr)
        except AnswerError as err:
            log.info("%s refused %d (%s), Session-Id %s", ccr.name, err.code, err.reason,
                     ccr.session_id)
            return (wire.error_answer(msg.header, err, cfg.origin_host, cfg.origin_realm,
                                      ccr.session_id, gy.echo_avps(msg)), ccr.name, err.code)
        except (AnswerTimeout, Busy, StoreError) as exc:
            # transient: the client retransmits (T flag), the retransmission is a replay
            log.warning("%s answered 3004 (%s), Session-Id %s", ccr.name, exc, ccr.session_id)
            err = AnswerError(wire.TOO_BUSY, f"no decision in time: {exc}")
            return (wire.error_answer(msg.header, err, cfg.origin_host, cfg.origin_realm,
                                      ccr.session_id), ccr.name, wire.TOO_BUSY)
        except RequestRejected as exc:  # a request this door built was refused: a defect
            log.error("%s: the engine rejected a request built from it (%s), Session-Id %s",
                      ccr.name, exc, ccr.session_id)
            err = AnswerError(wire.UNABLE_TO_COMPLY, "the request could not be charged")
            return (wire.error_answer(msg.header, err, cfg.origin_host, cfg.origin_realm,
                                      ccr.session_id, gy.echo_avps(msg)), ccr.name,
                    wire.UNABLE_TO_COMPLY)
        return wire.answer(msg.header, avps), ccr.name, result

    async def _charge(self, ccr: gy.CreditControl) -> tuple[int, list]:
        cfg = self.ctx.config
        catalog = self.ctx.catalogs.current.catalog
        rtype = ccr.request_type
        record = None
        if rtype in (gy.UPDATE, gy.TERMINATE):
            record = await self.sessions.get(ccr.session_id)
            if record is not None and record.ended is not None and not (
                    rtype == gy.TERMINATE and record.ended == ccr.request_number):
                raise AnswerError(wire.UNKNOWN_SESSION_ID, "the session ended with CCR-T "
                                  f"{record.ended}")
        unknown_session = rtype in (gy.UPDATE, gy.TERMINATE) and record is None
        account = record.account if record is not None else await self._account(ccr)
        if account is None:
            if unknown_session:
                raise AnswerError(wire.UNKNOWN_SESSION_ID, "no CCR-I of this session was "
                                  "answered, and no Subscription-Id names its subscriber")
            if not ccr.subscriptions:
                raise AnswerError(wire.MISSING_AVP, "Subscription-Id is missing",
                                  [wire.placeholder(AVP_SUBSCRIPTION_ID)])
            return wire.USER_UNKNOWN, gy.answer_avps(ccr, [], wire.USER_UNKNOWN,
                                                     cfg.origin_host, cfg.origin_realm,
                                                     services=False)
        quotas: dict[str, int] = {}
        if gy.needs_quota(ccr, catalog):
            quotas = await self._quotas(account, catalog)
        steps = gy.plan(ccr, account, record, catalog, int(self.clock() * 1000),
                        lambda service: quotas.get(service, 0))
        requests = [st.request for st in steps if st.request is not None]
        decisions = await self.ctx.bridge.decide(requests) if requests else []
        for st, decision in zip((st for st in steps if st.request is not None), decisions):
            st.decision = decision
        blocked = any(st.decision and st.decision["result"] == "END_USER_SERVICE_DENIED"
                      for st in steps) and await self._status(account) == "blocked"
        result = gy.command_result(ccr, steps, unknown_session=unknown_session,
                                   blocked=blocked)
        if result != wire.USER_UNKNOWN and not blocked:
            kept = gy.next_record(ccr, account, record, steps)
            if kept is not None:
                validity = max((t.validity_s for t in catalog.tariffs.values()), default=0)
                await self.sessions.put(ccr.session_id, kept, validity)
        log.debug("%s %d, Session-Id %s: %s", ccr.name, result, ccr.session_id,
                  [(st.rating_group, st.code) for st in steps if st.listed])
        return result, gy.answer_avps(ccr, steps, result, cfg.origin_host, cfg.origin_realm,
                                      services=result != wire.USER_UNKNOWN and not blocked)

    async def _account(self, ccr: gy.CreditControl) -> str | None:
        """The account the first Subscription-Id that names one names (CONTRACT §6.2)."""
        for kind, data in ccr.subscriptions:
            identity = GY_TYPES.get(kind)
            if identity is None:
                continue
            found = await self.ctx.identities.account(identity, data)
            if found and len(found) <= 128 and "{" not in found and "}" not in found:
                return found
        return None

    async def _status(self, account: str) -> str | None:
        with store_errors("cannot read an account from Redis"):
            value = await self.ctx.redis.hget(self.keys.account(account), "status")
        return value.decode() if isinstance(value, bytes) else value

    async def _quotas(self, account: str, catalog) -> dict[str, int]:
        """service -> the quota of the tariff the account's plan gives it."""
        with store_errors("cannot read an account from Redis"):
            value = await self.ctx.redis.hget(self.keys.account(account), "plan")
        plan = catalog.plans.get(value.decode() if isinstance(value, bytes) else value or "")
        if plan is None:
            return {}
        return {service: catalog.tariffs[name].quota for service, name in plan.tariffs.items()
                if name in catalog.tariffs}
