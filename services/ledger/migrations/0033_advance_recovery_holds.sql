-- 0033_advance_recovery_holds: a failed advance is taken back only from the
-- holds it was reserved in, and only what they give back.
--
-- 0012 recorded as recoverable what the account held at the reversal, and
-- took back whatever was available at each later hold resolution, up to it.
-- But since 0009 what an account holds includes the charges already made on
-- its open holds (calls served, not yet posted): money spent, which never
-- comes back as available. And a hold charged after the reversal gives back
-- less than it held. The rest stayed "recoverable" and was taken from the
-- account's next money: a review reproduced a deposit made after the
-- reversal going to topup_losses whole.
--
-- Now the recoverable part is what was held and not yet charged at the
-- reversal, and each resolution of a hold that was open then gives back at
-- most what that hold releases (its amount less its charges and its commit);
-- holds opened later give back nothing to it.
CREATE OR REPLACE FUNCTION ledger_note_recoverable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE topup_advances v SET recoverable = least(v.written_off, greatest(a.held - ledger_pending(a.id), 0))
        FROM accounts a
        WHERE v.settlement_id = NEW.id AND v.state = 'reversed' AND a.id = v.account_id
          AND v.recoverable = 0 AND v.recovered_later = 0;
    RETURN NULL;
END
$$;

-- h: the hold resolving (its row before the resolution), p_released: what it
-- gives back to the account's available balance.
CREATE FUNCTION ledger_recover_advances_from(h holds, p_released bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_available bigint;
    v_a topup_advances;
    v_take bigint;
    v_transfer bigint;
BEGIN
    SELECT least(balance - held, p_released) INTO v_available FROM accounts WHERE id = h.account_id;
    FOR v_a IN SELECT * FROM topup_advances
               WHERE account_id = h.account_id AND recovered_later < recoverable AND resolved_at >= h.created_at
               ORDER BY credit_id FOR UPDATE LOOP
        EXIT WHEN v_available <= 0;
        v_take := least(v_available, v_a.recoverable - v_a.recovered_later);
        INSERT INTO transfers (kind, ref)
            VALUES ('adjustment', 'advance-recovery:credit:' || v_a.credit_id || ':hold:' || h.id)
            RETURNING id INTO v_transfer;
        INSERT INTO postings (transfer_id, account_id, amount) VALUES
            (v_transfer, h.account_id, -v_take),
            (v_transfer, ledger_system_account('topup_losses'), v_take);
        UPDATE topup_advances SET recovered_later = recovered_later + v_take WHERE credit_id = v_a.credit_id;
        v_available := v_available - v_take;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ledger_capture(h holds, p_extra bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_transfer bigint := ledger_capture_0009(h, p_extra);
BEGIN
    IF EXISTS (SELECT 1 FROM topup_advances WHERE account_id = h.account_id AND recovered_later < recoverable) THEN
        PERFORM ledger_recover_advances_from(h, greatest(h.amount - h.charged - p_extra, 0));
    END IF;
    RETURN v_transfer;
END
$$;

DROP FUNCTION ledger_recover_advances(bigint, bigint);
