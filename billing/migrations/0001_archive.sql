-- 0001 the archive: charges, ledger entries and account changes, append-only, hash-chained.
--
-- Everything here is written by `chargeflow archive` (billing/archive.py) from the outbox
-- stream of Redis (docs/billing.md), in one transaction per batch together with the stream
-- position it reached: a batch is in the archive whole, with its position, or not at all.
-- Money is bigint micros (millionths of the currency unit), never floats. Column names are
-- stable: later migrations add columns and tables, they do not rename.
--
-- archive_streams     where the archive stands on each outbox stream (one on a single Redis,
--                     one per slot tag on a cluster)
--   stream            the stream's key, e.g. "cf:outbox:{all}"
--   last_id           the last stream entry id archived ("<ms>-<seq>"); reading resumes after
--   entries           stream entries archived from this stream in all
--   updated_at        when the last batch committed
--
-- chain_heads         the newest record of each account's hash chain (bookkeeping written with
--                     each batch; `audit verify` checks the chain ends here)
--   account, seq      the account and its newest record's chain_seq
--   hash              that record's hash
--
-- accounts            an account's attributes as the last `accounts load` (or API) set them
--   account           the account id
--   plan, status      as in Redis
--   allow_negative
--   name, country     the billing fields of CONTRACT §8.2 (NULL when not given; country is
--   vat_id, customer  ISO 3166 alpha-2, customer "consumer" | "business")
--   msisdn, imsi      the identities, when given
--   opened_at         when the account was first loaded (the outbox entry that opened it:
--                     Redis server time); the day it counts from is this in the catalog's
--                     time zone. Never changes once set.
--   updated_at        the outbox time of the last change archived
--   (not chained: the history of these values is account_changes)
--
-- Every archived record (account_changes, ledger, charges) carries:
--   chain_seq         its number in its account's chain: 1, 2, 3, ... across the three tables
--   prev_hash         the previous record's hash (32 zero bytes for the first of an account)
--   hash              SHA-256(prev_hash || canonical form), the canonical form being the UTF-8
--                     JSON object of the record's archived columns (those listed below and
--                     chain_seq; not prev_hash, hash, archived_at, late, invoice_id), plus
--                     "kind": "account" | "ledger" | "charge", keys sorted, no whitespace,
--                     timestamps as integer microseconds since 1970 UTC, NULLs as null
--                     (billing/chain.py; `chargeflow audit verify` recomputes it)
--   stream_id         the outbox entry it came from (with its stream: archive_streams)
--   archived_at       when its batch was written (not part of the hash)
--
-- account_changes     one per account written by `accounts load` / the API (an upsert)
--   account, ts       the account; the outbox entry's time (Redis server time)
--   attrs             jsonb: every attribute the write set (plan, status, allow_negative,
--                     name, country, vat_id, customer, msisdn, imsi)
--   opened            true when this write created the account
--
-- ledger              one per ledger entry, whatever wrote it (engine, CLI, API): charges'
--                     debits ("event", "update", "terminate", ...), "topup", "adjustment",
--                     "release", "open"; partitioned by month of ts
--   account           the account
--   entry_id          the entry's id: the request id of a charge, a top-up's --id or
--                     Idempotency-Key, "<reason>:<version>" for a top-up without one,
--                     "release:<session>", "open"
--   ts                when Redis wrote it (the outbox entry's time)
--   reason            what it is (above)
--   delta             bigint micros the balance changed by (signed)
--   balance           bigint micros of the balance after it
--   released          bigint micros a release returned from reservations (NULL otherwise)
--   actor             who: an API key id, "cli", "engine" for the engine's entries
--   note              free text given with a top-up or adjustment (NULL when none)
--   catalog_version   the catalog version of a charge or release (NULL for others)
--   unique (account, entry_id, ts)
--
-- charges             one per charge (CONTRACT §3.2), exactly once; partitioned by month of ts
--   id                the request id
--   account, service  as charged (service: the tariff's)
--   session, seq      NULL for an event
--   ts                the usage time the request gave (rating time); the period it bills in
--   charged_at        when Redis wrote it (the outbox entry's time)
--   units             used units reported
--   rated_units       units after increments
--   allowance_units   free units taken from allowances
--   cost              bigint micros of money taken
--   uncharged         bigint micros owed beyond what the balance could pay (0 normally)
--   currency          ISO 4217 code
--   tariff, rate      the tariff's name and the matched rate's id
--   catalog_version   the catalog version that rated it
--   balance           bigint micros of the balance after it
--   late              billing's: true once the charge was put on a later period's invoice
--                     because its own period was final when it arrived (false → true only)
--   invoice_id        billing's: the final invoice it is on (NULL → a value, once)
--   unique (id, ts): a request id is charged once (the engine's idempotency); the same id
--   arriving again with the same usage time is the same charge and is skipped
--
-- Immutability: UPDATE, DELETE and TRUNCATE are refused by triggers on the three archived
-- tables (and their partitions); the only change allowed is billing's late / invoice_id on a
-- charge, each set once. A superuser can still disable triggers: that is what the hash chain
-- is for.

CREATE TABLE archive_streams (
    stream      text PRIMARY KEY,
    last_id     text NOT NULL,
    entries     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chain_heads (
    account  text PRIMARY KEY,
    seq      bigint NOT NULL,
    hash     bytea NOT NULL
);

CREATE TABLE accounts (
    account         text PRIMARY KEY,
    plan            text,
    status          text,
    allow_negative  boolean,
    name            text,
    country         text,
    vat_id          text,
    customer        text,
    msisdn          text,
    imsi            text,
    opened_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE TABLE account_changes (
    account      text NOT NULL,
    chain_seq    bigint NOT NULL,
    ts           timestamptz NOT NULL,
    attrs        jsonb NOT NULL,
    opened       boolean NOT NULL,
    stream_id    text NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, chain_seq)
);

CREATE TABLE ledger (
    account          text NOT NULL,
    entry_id         text NOT NULL,
    ts               timestamptz NOT NULL,
    chain_seq        bigint NOT NULL,
    reason           text NOT NULL,
    delta            bigint NOT NULL,
    balance          bigint NOT NULL,
    released         bigint,
    actor            text,
    note             text,
    catalog_version  text,
    stream_id        text NOT NULL,
    prev_hash        bytea NOT NULL,
    hash             bytea NOT NULL,
    archived_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, entry_id, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX ledger_account_seq ON ledger (account, chain_seq);
CREATE INDEX ledger_reason_ts ON ledger (reason, ts);

CREATE TABLE charges (
    id               text NOT NULL,
    account          text NOT NULL,
    ts               timestamptz NOT NULL,
    chain_seq        bigint NOT NULL,
    service          text NOT NULL,
    session          text,
    seq              bigint,
    charged_at       timestamptz NOT NULL,
    units            bigint NOT NULL,
    rated_units      bigint NOT NULL,
    allowance_units  bigint NOT NULL,
    cost             bigint NOT NULL,
    uncharged        bigint NOT NULL,
    currency         text NOT NULL,
    tariff           text NOT NULL,
    rate             text NOT NULL,
    catalog_version  text NOT NULL,
    balance          bigint NOT NULL,
    stream_id        text NOT NULL,
    prev_hash        bytea NOT NULL,
    hash             bytea NOT NULL,
    archived_at      timestamptz NOT NULL DEFAULT now(),
    late             boolean NOT NULL DEFAULT false,
    invoice_id       bigint,
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX charges_account_ts ON charges (account, ts);
CREATE INDEX charges_account_seq ON charges (account, chain_seq);

-- Append-only, enforced here rather than trusted to the code.
CREATE FUNCTION archive_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the archive is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'archived records never change; correct with a new record (an '
                     'adjustment or a credit note)';
END $$;

CREATE FUNCTION archive_charge_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- billing may mark a charge late and name its final invoice, each once; nothing else
    IF (to_jsonb(NEW) - 'late' - 'invoice_id') IS DISTINCT FROM
       (to_jsonb(OLD) - 'late' - 'invoice_id')
       OR (OLD.late AND NOT NEW.late)
       OR (OLD.invoice_id IS NOT NULL AND NEW.invoice_id IS DISTINCT FROM OLD.invoice_id) THEN
        RAISE EXCEPTION 'the archive is append-only: UPDATE of charge % refused', OLD.id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'only late (false to true) and invoice_id (once) may be set';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER account_changes_append_only BEFORE UPDATE OR DELETE ON account_changes
    FOR EACH ROW EXECUTE FUNCTION archive_refuse_change();
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION archive_refuse_change();
CREATE TRIGGER charges_no_delete BEFORE DELETE ON charges
    FOR EACH ROW EXECUTE FUNCTION archive_refuse_change();
CREATE TRIGGER charges_update BEFORE UPDATE ON charges
    FOR EACH ROW EXECUTE FUNCTION archive_charge_update();
CREATE TRIGGER account_changes_no_truncate BEFORE TRUNCATE ON account_changes
    FOR EACH STATEMENT EXECUTE FUNCTION archive_refuse_change();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION archive_refuse_change();
CREATE TRIGGER charges_no_truncate BEFORE TRUNCATE ON charges
    FOR EACH STATEMENT EXECUTE FUNCTION archive_refuse_change();

-- Monthly partitions (UTC months), made on demand by the archive before it writes a month's
-- first row: archive_partition('charges', ts) creates charges_y2026m12 for December 2026,
-- with the TRUNCATE guard of its parent (row triggers are cloned by PostgreSQL itself).
CREATE FUNCTION archive_partition(parent text, at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    start timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := format('%s_y%sm%s', parent, to_char(start AT TIME ZONE 'UTC', 'YYYY'),
                        to_char(start AT TIME ZONE 'UTC', 'MM'));
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       name, parent, start, start + interval '1 month');
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT '
                       'EXECUTE FUNCTION archive_refuse_change()', name || '_no_truncate', name);
    END IF;
    RETURN name;
END $$;
