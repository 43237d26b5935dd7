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

CREATE OR REPLACE FUNCTION ledger_advance_view(v topup_advances) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('credit_id', v.credit_id, 'account_id', v.account_id, 'settlement_id', v.settlement_id,
                              'amount_micro', v.amount, 'state', v.state, 'recovered_micro', v.recovered,
                              'written_off_micro', v.written_off, 'recoverable_micro', v.recoverable,
                              'recovered_later_micro', v.recovered_later,
                              'lost_micro', v.written_off - v.recovered_later,
                              'reversal_transfer_id', v.reversal_transfer_id,
                              'created_at_ms', ledger_ms(v.created_at), 'resolved_at_ms', ledger_ms(v.resolved_at))
$$;

-- The chain's verdict resolves the settlement's advance, in its transaction
-- (as 0011's, and records what of the write-off was only held).
CREATE OR REPLACE FUNCTION ledger_resolve_advance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_a topup_advances;
    v_account accounts;
    v_chain text;
    v_take bigint;
    v_transfer bigint;
BEGIN
    SELECT * INTO v_a FROM topup_advances WHERE settlement_id = NEW.id AND state = 'open' FOR UPDATE;
    IF v_a.credit_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.state = 'confirmed' THEN
        UPDATE topup_advances SET state = 'settled', resolved_at = now() WHERE credit_id = v_a.credit_id;
        RETURN NULL;
    END IF;
    SELECT * INTO v_account FROM accounts WHERE id = v_a.account_id FOR UPDATE;
    SELECT source_chain INTO v_chain FROM credits WHERE id = v_a.credit_id;
    v_take := least(v_a.amount, greatest(v_account.balance - v_account.held, 0));
    INSERT INTO transfers (kind, ref) VALUES ('adjustment', 'advance-reversal:credit:' || v_a.credit_id)
        RETURNING id INTO v_transfer;
    INSERT INTO postings (transfer_id, account_id, amount)
        SELECT v_transfer, p.account_id, p.amount FROM (VALUES
            (ledger_system_account('topups:' || v_chain), v_a.amount),
            (v_a.account_id, -v_take),
            (ledger_system_account('topup_losses'), -(v_a.amount - v_take))) AS p (account_id, amount)
        WHERE p.amount <> 0;
    UPDATE topup_advances SET state = 'reversed', recovered = v_take, written_off = v_a.amount - v_take,
                              recoverable = least(v_a.amount - v_take, greatest(v_account.held, 0)),
                              reversal_transfer_id = v_transfer, resolved_at = now()
        WHERE credit_id = v_a.credit_id;
    RETURN NULL;
END
$$;

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

-- As 0009's, then a recovery when the account has a write-off to take back
-- (one probe of a partial index that is empty for almost every account).
CREATE OR REPLACE FUNCTION ledger_capture(h holds, p_extra bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_post bigint := h.charged - h.posted + p_extra;
    v_transfer bigint;
BEGIN
    -- the reservation goes first: the money moved is money it covered, and
    -- the account's available balance never dips below zero on the way
    PERFORM ledger_release(h, v_post);
    IF v_post > 0 THEN
        INSERT INTO transfers (kind, ref) VALUES ('commit', 'hold:' || h.id) RETURNING id INTO v_transfer;
        INSERT INTO postings (transfer_id, account_id, amount) VALUES
            (v_transfer, h.account_id, -v_post),
            (v_transfer, ledger_system_account('revenue'), v_post);
    END IF;
    IF EXISTS (SELECT 1 FROM topup_advances WHERE account_id = h.account_id AND recovered_later < recoverable) THEN
        PERFORM ledger_recover_advances(h.account_id, h.id);
    END IF;
    RETURN v_transfer;
END
$$;

-- The audit (as 0011's): an advance follows its settlement, a reversal moved
-- exactly what it records, and the recoveries after it moved exactly
-- recovered_later from the account to the write-off.
CREATE OR REPLACE FUNCTION ledger_audit_advances() RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH recovery AS (
        SELECT split_part(t.ref, ':', 3)::bigint AS credit_id, p.account_id, p.amount, a.code
        FROM transfers t
        JOIN postings p ON p.transfer_id = t.id
        JOIN accounts a ON a.id = p.account_id
        WHERE t.kind = 'adjustment' AND t.ref LIKE 'advance-recovery:credit:%')
    SELECT jsonb_build_object('name', 'advances_follow_settlements', 'ok', count(*) = 0,
                              'detail', coalesce(jsonb_agg(v.credit_id), '[]'))
    FROM topup_advances v
    JOIN settlements s ON s.id = v.settlement_id
    JOIN credits c ON c.id = v.credit_id
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(-r.amount) FILTER (WHERE r.account_id = v.account_id), 0) AS taken,
               coalesce(sum(r.amount) FILTER (WHERE r.code = 'topup_losses'), 0) AS given,
               count(*) FILTER (WHERE r.account_id <> v.account_id AND r.code IS DISTINCT FROM 'topup_losses') AS stray
        FROM recovery r WHERE r.credit_id = v.credit_id) l
    WHERE c.account_id <> v.account_id OR c.amount <> v.amount OR c.kind <> 'topup'
       OR (v.state = 'open' AND s.state NOT IN ('begun', 'signed'))
       OR (v.state = 'settled' AND s.state <> 'confirmed')
       OR (v.state = 'reversed' AND (s.state <> 'failed' OR
           coalesce((SELECT sum(-p.amount) FROM postings p
                     WHERE p.transfer_id = v.reversal_transfer_id AND p.account_id = v.account_id), 0) <> v.recovered OR
           coalesce((SELECT sum(p.amount) FROM postings p
                     WHERE p.transfer_id = v.reversal_transfer_id AND p.account_id <> v.account_id), 0)
               <> v.recovered))
       OR l.taken <> v.recovered_later OR l.given <> v.recovered_later OR l.stray > 0
$$;
