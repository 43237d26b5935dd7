-- 0012_advance_recovery: what a failed advance could not take back because
-- it was only held is taken back when the holds resolve.
--
-- A reversal (0011) takes back what the account has available and writes
-- the rest off to 'topup_losses'. Part of that rest may not have been spent
-- but held: reserved for calls in flight (prepaid slices hold more than their
-- calls cost). The reversal records that part as recoverable (the written-off
-- amount, up to what the account held then); afterwards, each time one of the
-- account's holds resolves (commit, void, expiry: ledger_capture), what that
-- leaves available goes back against the write-off, oldest advance first, up
-- to what is still recoverable, in one transfer per advance
-- ('advance-recovery:credit:C:hold:H'). So a failed advance costs the
-- operator only what the account really spent of it.

ALTER TABLE topup_advances
    ADD COLUMN recoverable bigint NOT NULL DEFAULT 0 CHECK (recoverable >= 0),
    ADD COLUMN recovered_later bigint NOT NULL DEFAULT 0 CHECK (recovered_later >= 0),
    ADD CONSTRAINT recovered_within_written_off CHECK (recovered_later <= recoverable AND recoverable <= written_off);
CREATE INDEX topup_advances_recovering ON topup_advances (account_id) WHERE recovered_later < recoverable;

-- The advance view (0011's, renamed, not copied) gains the recovery's fields.
ALTER FUNCTION ledger_advance_view(topup_advances) RENAME TO ledger_advance_view_0011;
CREATE FUNCTION ledger_advance_view(v topup_advances) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT ledger_advance_view_0011(v) || jsonb_build_object('recoverable_micro', v.recoverable,
        'recovered_later_micro', v.recovered_later, 'lost_micro', v.written_off - v.recovered_later)
$$;

-- A reversal (0011's trigger, which fires first: triggers fire in name
-- order) records what of its write-off the account held then, in the same
-- transaction, the account's row still locked by it.
CREATE FUNCTION ledger_note_recoverable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE topup_advances v SET recoverable = least(v.written_off, greatest(a.held, 0))
        FROM accounts a
        WHERE v.settlement_id = NEW.id AND v.state = 'reversed' AND a.id = v.account_id
          AND v.recoverable = 0 AND v.recovered_later = 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER settlements_resolve_advances_recoverable AFTER UPDATE OF state ON settlements
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state = 'failed')
    EXECUTE FUNCTION ledger_note_recoverable();

-- Takes what the account has available back against its reversed advances'
-- recoverable write-offs, oldest first; h is the hold whose resolution made
-- it available (named in the transfers' refs).
CREATE FUNCTION ledger_recover_advances(p_account bigint, p_hold bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_available bigint;
    v_a topup_advances;
    v_take bigint;
    v_transfer bigint;
BEGIN
    SELECT balance - held INTO v_available FROM accounts WHERE id = p_account;
    FOR v_a IN SELECT * FROM topup_advances WHERE account_id = p_account AND recovered_later < recoverable
               ORDER BY credit_id FOR UPDATE LOOP
        EXIT WHEN v_available <= 0;
        v_take := least(v_available, v_a.recoverable - v_a.recovered_later);
        INSERT INTO transfers (kind, ref)
            VALUES ('adjustment', 'advance-recovery:credit:' || v_a.credit_id || ':hold:' || p_hold)
            RETURNING id INTO v_transfer;
        INSERT INTO postings (transfer_id, account_id, amount) VALUES
            (v_transfer, p_account, -v_take),
            (v_transfer, ledger_system_account('topup_losses'), v_take);
        UPDATE topup_advances SET recovered_later = recovered_later + v_take WHERE credit_id = v_a.credit_id;
        v_available := v_available - v_take;
    END LOOP;
END
$$;

-- 0009's capture (renamed, not copied), then a recovery when the account
-- has a write-off to take back (one probe of a partial index that is empty
-- for almost every account).
ALTER FUNCTION ledger_capture(holds, bigint) RENAME TO ledger_capture_0009;
CREATE FUNCTION ledger_capture(h holds, p_extra bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_transfer bigint := ledger_capture_0009(h, p_extra);
BEGIN
    IF EXISTS (SELECT 1 FROM topup_advances WHERE account_id = h.account_id AND recovered_later < recoverable) THEN
        PERFORM ledger_recover_advances(h.account_id, h.id);
    END IF;
    RETURN v_transfer;
END
$$;

-- The audit's advances check (0011's, renamed, not copied) also names an
-- advance whose recoveries did not move exactly recovered_later from its
-- account to the write-off.
ALTER FUNCTION ledger_audit_advances() RENAME TO ledger_audit_advances_0011;
CREATE FUNCTION ledger_audit_advances() RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH recovery AS (
        SELECT split_part(t.ref, ':', 3)::bigint AS credit_id, p.account_id, p.amount, a.code
        FROM transfers t
        JOIN postings p ON p.transfer_id = t.id
        JOIN accounts a ON a.id = p.account_id
        WHERE t.kind = 'adjustment' AND t.ref LIKE 'advance-recovery:credit:%'),
    bad AS (
        SELECT jsonb_array_elements(ledger_audit_advances_0011() -> 'detail') AS credit_id
        UNION
        SELECT to_jsonb(v.credit_id)
        FROM topup_advances v
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(-r.amount) FILTER (WHERE r.account_id = v.account_id), 0) AS taken,
                   coalesce(sum(r.amount) FILTER (WHERE r.code = 'topup_losses'), 0) AS given,
                   count(*) FILTER (WHERE r.account_id <> v.account_id AND r.code IS DISTINCT FROM 'topup_losses')
                       AS stray
            FROM recovery r WHERE r.credit_id = v.credit_id) l
        WHERE l.taken <> v.recovered_later OR l.given <> v.recovered_later OR l.stray > 0)
    SELECT jsonb_build_object('name', 'advances_follow_settlements', 'ok', count(*) = 0,
                              'detail', coalesce(jsonb_agg(credit_id ORDER BY credit_id), '[]'))
    FROM bad
$$;
