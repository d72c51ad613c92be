-- 0010 invoices and credit notes (CONTRACT §8.1, §8.3; billing/billrun.py, docs/invoices.md).
--
-- invoices           one row per document: an account's invoice for a period (kind
--                    'invoice', at most one per account and period) or a credit note against
--                    a final invoice (kind 'credit_note')
--   id               the document's id (what `invoice show ID` takes)
--   kind, account
--   period_start     the period's first and last day (catalog time zone), both inclusive;
--   period_end       a credit note carries its invoice's
--   status           'draft' (a bill run may replace it), 'final' (numbered, frozen), 'void'
--   series, seq      the number series ("INV-2026") and the number in it, gap-free: given in
--                    the finalizing transaction from invoice_series, locked there
--   number           series || '-' || seq as printed (NULL while draft)
--   issue_date       the day it was finalized (catalog time zone)
--   currency, net_total, tax_total, total   bigint micros (credit notes: negative)
--   reverse_charge
--   doc              the §8.3 document as `invoice show --json` prints it
--   credits          a credit note's invoice
--   chain_through    per account: the newest archive record (chain_seq) the draft saw; the
--                    charges finalization marks are exactly those the draft counted
--   charge_count     charges on it (usage and late)
--   built_at, finalized_at
--
-- invoice_series     the last number given in each series (the row is locked while numbering)
-- billing_events     every step, append-only: what was done to which document, by whom, why
-- disputes           a customer's dispute of a final invoice: open → accepted (with a credit
--                    note) or rejected
--
-- A final document never changes: UPDATE and DELETE of a final row are refused by a trigger.

CREATE TABLE invoice_series (
    series       text PRIMARY KEY,
    last_number  bigint NOT NULL
);

CREATE TABLE invoices (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    account         text NOT NULL,
    period_start    date NOT NULL,
    period_end      date NOT NULL,
    status          text NOT NULL CHECK (status IN ('draft', 'final', 'void')),
    series          text,
    seq             bigint,
    number          text UNIQUE,
    issue_date      date,
    currency        text NOT NULL,
    net_total       bigint NOT NULL,
    tax_total       bigint NOT NULL,
    total           bigint NOT NULL,
    reverse_charge  boolean NOT NULL DEFAULT false,
    doc             jsonb NOT NULL,
    credits         bigint REFERENCES invoices (id),
    chain_through   bigint NOT NULL DEFAULT 0,
    charge_count    bigint NOT NULL DEFAULT 0,
    built_at        timestamptz NOT NULL DEFAULT now(),
    finalized_at    timestamptz,
    UNIQUE (series, seq),
    CHECK ((status = 'final') = (number IS NOT NULL)),
    CHECK (kind = 'invoice' OR credits IS NOT NULL)
);

CREATE UNIQUE INDEX invoices_one_per_period ON invoices (account, period_start)
    WHERE kind = 'invoice';
CREATE INDEX invoices_status_period ON invoices (status, period_start);
CREATE INDEX invoices_credits ON invoices (credits) WHERE credits IS NOT NULL;

CREATE FUNCTION invoices_final_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'final' THEN
        RAISE EXCEPTION 'invoice % (%) is final: % refused', OLD.id, OLD.number, TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'a final invoice never changes; correct it with a credit note';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER invoices_frozen BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_final_frozen();

CREATE TABLE billing_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    invoice   bigint REFERENCES invoices (id) ON DELETE SET NULL,
    account   text,
    action    text NOT NULL,
    actor     text NOT NULL,
    reason    text,
    detail    jsonb
);

CREATE INDEX billing_events_invoice ON billing_events (invoice);

CREATE TABLE disputes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice      bigint NOT NULL REFERENCES invoices (id),
    status       text NOT NULL CHECK (status IN ('open', 'accepted', 'rejected')),
    reason       text NOT NULL,
    opened_by    text NOT NULL,
    opened_at    timestamptz NOT NULL DEFAULT now(),
    resolved_by  text,
    resolved_at  timestamptz,
    resolution   text,
    credit_note  bigint REFERENCES invoices (id)
);

CREATE UNIQUE INDEX disputes_one_open ON disputes (invoice) WHERE status = 'open';

CREATE FUNCTION billing_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.invoice IS NOT NULL AND NEW.invoice IS NULL
       AND (to_jsonb(NEW) - 'invoice') = (to_jsonb(OLD) - 'invoice') THEN
        RETURN NEW;  -- a replaced draft's events keep their account, lose the link
    END IF;
    RAISE EXCEPTION 'billing events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER billing_events_append_only BEFORE UPDATE OR DELETE ON billing_events
    FOR EACH ROW EXECUTE FUNCTION billing_events_append_only();
