-- 0023_ledger_identity: a name for this ledger, for what is kept outside it.
--
-- An edge deferring its charges (FAREBOX_PREPAID_CHARGE_DEFER_MS) journals
-- them in a directory of files, and any edge of the deployment writes a dead
-- edge's journaled charges to the ledger. Hold ids are only unique within one
-- ledger: a journal replayed into another ledger (a directory shared by two
-- deployments, a database restored or recreated) would charge whatever holds
-- there carry the same ids. Every journal names the ledger it was written
-- for, and is only replayed into that one.
--
-- One row, set once when the ledger's database is created (or migrated to
-- this version), never changed.
CREATE TABLE ledger_identity (
    one_row   boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    ledger_id text    NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ledger_identity (ledger_id) VALUES (gen_random_uuid()::text);
CREATE TRIGGER ledger_identity_immutable BEFORE UPDATE OR DELETE ON ledger_identity
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER ledger_identity_no_truncate BEFORE TRUNCATE ON ledger_identity
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- ledger.identity (read): {ledger_id}
ALTER FUNCTION ledger_read_dispatch(text, jsonb) RENAME TO ledger_read_dispatch_0022;
CREATE FUNCTION ledger_read_dispatch(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_method = 'ledger.identity' THEN
        RETURN ledger_ok(jsonb_build_object('ledger_id', (SELECT ledger_id FROM ledger_identity)));
    END IF;
    RETURN ledger_read_dispatch_0022(p_method, p_args);
END
$$;
