-- 0002 outbox entries the archive could not read.
--
-- archive_rejects     an outbox entry that is not what the scripts write (a defect, or a
--                     hand-made XADD): kept here, in the batch that passed over it, so that
--                     nothing is lost silently and the archive does not stop on it
--   stream, stream_id the entry
--   error             why it was not archived
--   fields            its fields as written (MessagePack of {field: value}, bytes kept)
--   archived_at       when
CREATE TABLE archive_rejects (
    stream       text NOT NULL,
    stream_id    text NOT NULL,
    error        text NOT NULL,
    fields       bytea NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, stream_id)
);
CREATE TRIGGER archive_rejects_append_only BEFORE UPDATE OR DELETE ON archive_rejects
    FOR EACH ROW EXECUTE FUNCTION archive_refuse_change();
