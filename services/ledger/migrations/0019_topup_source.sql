-- 0019_topup_source: a topup is credited under its settlement's own
-- transaction, whichever transaction hash the credit is asked with.
--
-- A topup's credit is keyed by its source (network, transaction, index 0):
-- the edge asks for it with the transaction that verifier.settle answered,
-- and the sweeper of topups nobody credited (0017) with the settlement's own
-- tx_hash. Since 0018 a settlement whose authorization another transaction
-- executed is confirmed with settled_by naming that transaction, and settle
-- answers with it, so the two could name one payment with two sources: the
-- edge's credit under settled_by, then the sweeper's under tx_hash, a second
-- credit of the same money (the payer can arrange it, by sending its own
-- authorization on chain ahead of the settlement). Now a topup credit or
-- advance asked with a settlement's settled_by is made under that
-- settlement's tx_hash, the one source each topup has.
CREATE INDEX settlements_settled_by ON settlements (network, settled_by) WHERE settled_by IS NOT NULL;

-- The arguments of a topup credit or advance with its source's transaction
-- made the settlement's own when it names the transaction that settled it;
-- anything else as it is.
CREATE FUNCTION ledger_topup_source(p_args jsonb, p_kind text) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_own text;
BEGIN
    IF p_kind IS DISTINCT FROM 'topup' OR jsonb_typeof(p_args -> 'source') IS DISTINCT FROM 'object'
       OR p_args -> 'source' ->> 'index' IS DISTINCT FROM '0' THEN
        RETURN p_args;
    END IF;
    SELECT tx_hash INTO v_own FROM settlements
        WHERE network = p_args -> 'source' ->> 'chain' AND settled_by = p_args -> 'source' ->> 'tx';
    IF v_own IS NULL THEN
        RETURN p_args;
    END IF;
    RETURN jsonb_set(p_args, '{source,tx}', to_jsonb(v_own));
END
$$;

ALTER FUNCTION ledger_credit(jsonb) RENAME TO ledger_credit_as_asked;
CREATE FUNCTION ledger_credit(p_args jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT ledger_credit_as_asked(ledger_topup_source(p_args, p_args ->> 'kind'))
$$;

ALTER FUNCTION ledger_topup_advance(jsonb) RENAME TO ledger_topup_advance_as_asked;
CREATE FUNCTION ledger_topup_advance(p_args jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT ledger_topup_advance_as_asked(ledger_topup_source(p_args, 'topup'))
$$;
