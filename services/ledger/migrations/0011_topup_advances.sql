-- 0011_topup_advances: topups credited before their settlement is final.
--
-- A topup is an x402 payment to the treasury. Credited after its settlement
-- confirms (ledger.credit), it carries no risk. An operator may instead credit
-- it as soon as its transaction is broadcast (ledger.topup_advance): the credit
-- is then an advance against the settlement, bounded per account
-- (advance_limit_micro: the account's open advances, this one included) and
-- tracked here until the chain decides:
--
--   confirmed  the advance is settled; nothing moves
--   failed     the advance is reversed in one transfer: what the account has
--              available (up to the advance) goes back to the topups clearing
--              account, and the rest, already spent, is written off to the
--              system account 'topup_losses' (it goes negative: the operator's
--              loss). An account with a reversed advance gets no more advances.
--
-- The reversal runs in the same transaction as the settlement's result (a
-- trigger on settlements), so no verdict is recorded without it.

CREATE TABLE topup_advances (
    credit_id            bigint      PRIMARY KEY REFERENCES credits (id),
    account_id           bigint      NOT NULL REFERENCES accounts (id),
    settlement_id        bigint      NOT NULL UNIQUE REFERENCES settlements (id),
    amount               bigint      NOT NULL CHECK (amount > 0),
    state                text        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'settled', 'reversed')),
    recovered            bigint      NOT NULL DEFAULT 0 CHECK (recovered >= 0),   -- taken back from the account
    written_off          bigint      NOT NULL DEFAULT 0 CHECK (written_off >= 0), -- the rest: the operator's loss
    reversal_transfer_id bigint      REFERENCES transfers (id),
    created_at           timestamptz NOT NULL DEFAULT now(),
    resolved_at          timestamptz,
    CONSTRAINT reversal_is_whole CHECK (state <> 'reversed' OR
                                        (recovered + written_off = amount AND reversal_transfer_id IS NOT NULL)),
    CONSTRAINT only_reversals_move CHECK (state = 'reversed' OR
                                          (recovered = 0 AND written_off = 0 AND reversal_transfer_id IS NULL))
);
CREATE INDEX topup_advances_by_account ON topup_advances (account_id) WHERE state <> 'settled';
CREATE INDEX settlements_by_transaction ON settlements (network, tx_hash);

CREATE FUNCTION ledger_advance_view(v topup_advances) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('credit_id', v.credit_id, 'account_id', v.account_id, 'settlement_id', v.settlement_id,
                              'amount_micro', v.amount, 'state', v.state, 'recovered_micro', v.recovered,
                              'written_off_micro', v.written_off, 'reversal_transfer_id', v.reversal_transfer_id,
                              'created_at_ms', ledger_ms(v.created_at), 'resolved_at_ms', ledger_ms(v.resolved_at))
$$;

-- A credit's answer names its settlement's state, its advance (if any) and
-- the account's balances now (a duplicate's too).
CREATE FUNCTION ledger_advance_answer(p_result jsonb, s settlements) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_result ->> 'status' <> 'ok' OR s.id IS NULL THEN p_result
                ELSE jsonb_set(p_result, '{body}', (p_result -> 'body') || jsonb_build_object(
                    'settlement_id', s.id, 'settlement_state', s.state,
                    'advance', (SELECT ledger_advance_view(v) FROM topup_advances v WHERE v.settlement_id = s.id),
                    'balance_micro', a.balance - ledger_pending(a.id), 'available_micro', a.balance - a.held))
           END
    FROM accounts a WHERE a.id = (p_result -> 'body' ->> 'account_id')::bigint
$$;

-- topup_advance: credit a topup whose settlement is broadcast but not final.
-- The source names the settlement's transaction; the settlement's
-- authorization must have been recorded for this account's topup, for this
-- amount. A source credited before answers that credit (duplicate); a
-- confirmed settlement is credited plainly; a failed one, an account over its
-- limit or with a reversed advance are refused with nothing changed.
CREATE FUNCTION ledger_topup_advance(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_amount bigint := ledger_amount(p_args, 'amount_micro');
    v_limit bigint := ledger_amount(p_args, 'advance_limit_micro');
    v_chain text := p_args -> 'source' ->> 'chain';
    v_tx text := p_args -> 'source' ->> 'tx';
    v_credit jsonb := (p_args - 'advance_limit_micro') || '{"kind": "topup"}';
    v_account accounts;
    v_s settlements;
    v_auth authorizations;
    v_open bigint;
    v_result jsonb;
BEGIN
    IF v_limit IS NULL THEN
        RETURN ledger_err('bad_request', 'advance_limit_micro must be a whole number of micro-USDC in 0..' ||
                          ledger_max_amount());
    END IF;
    v_account := ledger_caller(ledger_id(p_args, 'account_id'));
    SELECT * INTO v_s FROM settlements WHERE network = v_chain AND tx_hash = v_tx FOR UPDATE;
    IF v_amount IS NULL OR v_amount = 0 OR v_account.id IS NULL OR v_chain IS NULL OR v_tx IS NULL
       OR EXISTS (SELECT 1 FROM credits WHERE source_chain = v_chain AND source_tx = v_tx
                                           AND source_index = p_args -> 'source' ->> 'index') THEN
        -- its checks, or the earlier credit of this source
        RETURN ledger_advance_answer(ledger_credit(v_credit), v_s);
    END IF;
    IF v_s.id IS NULL THEN
        RETURN ledger_err('settlement_not_found', 'no settlement has transaction ' || v_tx || ' on ' || v_chain);
    END IF;
    SELECT * INTO v_auth FROM authorizations WHERE id = v_s.authorization_id;
    IF v_auth.resource <> 'topup:account:' || v_account.id OR v_auth.amount <> v_amount THEN
        RETURN ledger_err('settlement_mismatch', 'settlement ' || v_s.id || ' pays ' || v_auth.amount ||
                          ' micro-USDC for "' || v_auth.resource || '", not this topup',
                          ledger_settlement_view(v_s));
    END IF;
    IF v_s.state = 'failed' THEN
        RETURN ledger_err('settlement_failed', 'settlement ' || v_s.id || ' failed: ' || v_s.reason,
                          ledger_settlement_view(v_s));
    END IF;
    IF v_s.state = 'confirmed' THEN
        RETURN ledger_advance_answer(ledger_credit(v_credit), v_s);
    END IF;
    IF EXISTS (SELECT 1 FROM topup_advances WHERE account_id = v_account.id AND state = 'reversed') THEN
        RETURN ledger_err('advance_refused', 'an earlier advance of account ' || v_account.id ||
                          ' was reversed: its topups are credited once settled',
                          jsonb_build_object('reason', 'reversed_before'));
    END IF;
    SELECT coalesce(sum(amount), 0) INTO v_open FROM topup_advances WHERE account_id = v_account.id AND state = 'open';
    IF v_open + v_amount > v_limit THEN
        RETURN ledger_err('advance_refused', 'account ' || v_account.id || ' has ' || v_open ||
                          ' micro-USDC of topups awaiting settlement; with this one it would pass the limit of ' ||
                          v_limit, jsonb_build_object('reason', 'limit', 'open_micro', v_open, 'limit_micro', v_limit));
    END IF;
    v_result := ledger_credit(v_credit);
    IF v_result ->> 'status' <> 'ok' THEN
        RETURN v_result;
    END IF;
    INSERT INTO topup_advances (credit_id, account_id, settlement_id, amount)
        VALUES ((v_result -> 'body' ->> 'credit_id')::bigint, v_account.id, v_s.id, v_amount);
    RETURN ledger_advance_answer(v_result, v_s);
END
$$;

-- The chain's verdict resolves the settlement's advance, in its transaction.
CREATE FUNCTION ledger_resolve_advance() RETURNS trigger LANGUAGE plpgsql AS $$
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
                              reversal_transfer_id = v_transfer, resolved_at = now()
        WHERE credit_id = v_a.credit_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER settlements_resolve_advances AFTER UPDATE OF state ON settlements
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('confirmed', 'failed'))
    EXECUTE FUNCTION ledger_resolve_advance();

-- The audit: an advance follows its settlement, and a reversal moved exactly
-- what it records.
CREATE FUNCTION ledger_audit_advances() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('name', 'advances_follow_settlements', 'ok', count(*) = 0,
                              'detail', coalesce(jsonb_agg(v.credit_id), '[]'))
    FROM topup_advances v
    JOIN settlements s ON s.id = v.settlement_id
    JOIN credits c ON c.id = v.credit_id
    WHERE c.account_id <> v.account_id OR c.amount <> v.amount OR c.kind <> 'topup'
       OR (v.state = 'open' AND s.state NOT IN ('begun', 'signed'))
       OR (v.state = 'settled' AND s.state <> 'confirmed')
       OR (v.state = 'reversed' AND (s.state <> 'failed' OR
           coalesce((SELECT sum(-p.amount) FROM postings p
                     WHERE p.transfer_id = v.reversal_transfer_id AND p.account_id = v.account_id), 0) <> v.recovered OR
           coalesce((SELECT sum(p.amount) FROM postings p
                     WHERE p.transfer_id = v.reversal_transfer_id AND p.account_id <> v.account_id), 0)
               <> v.recovered))
$$;

CREATE OR REPLACE FUNCTION ledger_audit_all() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb := ledger_audit();
    v_extra jsonb;
BEGIN
    FOREACH v_extra IN ARRAY ARRAY[ledger_audit_settlements(), ledger_audit_charges(), ledger_audit_advances()] LOOP
        v_result := jsonb_set(v_result, '{body,checks}', (v_result -> 'body' -> 'checks') || v_extra);
        IF NOT (v_extra ->> 'ok')::boolean THEN
            v_result := jsonb_set(v_result, '{body,ok}', 'false');
        END IF;
    END LOOP;
    RETURN v_result;
END
$$;

-- ledger.advances (read): an account's advances, newest first.
CREATE FUNCTION ledger_read_advances(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_account bigint := ledger_id(p_args, 'account_id');
BEGIN
    IF v_account IS NULL THEN
        RETURN ledger_err('bad_request', 'account_id must be a positive integer');
    END IF;
    RETURN ledger_ok(jsonb_build_object('advances', coalesce((
        SELECT jsonb_agg(ledger_advance_view(v) ORDER BY v.credit_id DESC)
        FROM (SELECT * FROM topup_advances WHERE account_id = v_account ORDER BY credit_id DESC LIMIT 100) v), '[]')));
END
$$;

-- The read dispatcher learns ledger.advances by wrapping the one before it
-- (renamed, not copied): a later migration can do the same.
ALTER FUNCTION ledger_read_dispatch(text, jsonb) RENAME TO ledger_read_dispatch_0010;
CREATE FUNCTION ledger_read_dispatch(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_method = 'ledger.advances' THEN
        RETURN ledger_read_advances(p_args);
    END IF;
    RETURN ledger_read_dispatch_0010(p_method, p_args);
END
$$;

-- Operations added from here on are dispatched by ledger_write_more, which a
-- later migration redefines alone (the operations before stay in
-- ledger_apply's CASE: every charge goes through it, and a second PL/pgSQL call
-- per write is not free). This is the last copy of ledger_apply.
CREATE FUNCTION ledger_write_more(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN CASE p_method
        WHEN 'ledger.topup_advance' THEN ledger_topup_advance(p_args)
        ELSE ledger_err('unknown_method', 'the ledger has no write operation ' || p_method)
    END;
END
$$;

CREATE OR REPLACE FUNCTION ledger_apply(p_method text, p_idem text, p_fingerprint bytea, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_prior jsonb;
    v_result jsonb;
BEGIN
    v_prior := ledger_claim(p_idem, p_method, p_fingerprint);
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;
    v_result := CASE p_method
        WHEN 'ledger.open_account' THEN ledger_open_account(p_args)
        WHEN 'ledger.mint_key' THEN ledger_mint_key(p_args)
        WHEN 'ledger.revoke_key' THEN ledger_revoke_key(p_args)
        WHEN 'ledger.update_key' THEN ledger_update_key(p_args)
        WHEN 'ledger.hold' THEN ledger_hold(p_args)
        WHEN 'ledger.charge' THEN ledger_charge(p_args)
        WHEN 'ledger.commit' THEN ledger_commit(p_args)
        WHEN 'ledger.void' THEN ledger_void(p_args)
        WHEN 'ledger.credit' THEN ledger_credit(p_args)
        WHEN 'ledger.record_authorization' THEN ledger_record_authorization(p_args)
        WHEN 'ledger.mark_served' THEN ledger_mark_authorization(p_args, 'served')
        WHEN 'ledger.mark_settled' THEN ledger_mark_authorization(p_args, 'settled')
        WHEN 'ledger.mark_failed' THEN ledger_mark_authorization(p_args, 'failed')
        WHEN 'ledger.settlement_begin' THEN ledger_settlement_begin(p_args)
        WHEN 'ledger.settlement_signed' THEN ledger_settlement_signed(p_args)
        WHEN 'ledger.settlement_broadcast' THEN ledger_settlement_broadcast(p_args)
        WHEN 'ledger.settlement_result' THEN ledger_settlement_result(p_args)
        WHEN 'ledger.add_deposit_address' THEN ledger_add_deposit_address(p_args)
        WHEN 'ledger.advance_cursor' THEN ledger_advance_cursor(p_args)
        WHEN 'ledger.call_claim' THEN ledger_call_claim(p_args)
        WHEN 'ledger.call_release' THEN ledger_call_release(p_args)
        WHEN 'ledger.call_link' THEN ledger_call_link(p_args)
        WHEN 'ledger.call_done' THEN ledger_call_done(p_args)
        ELSE ledger_write_more(p_method, p_args)
    END;
    IF p_idem IS NOT NULL THEN
        IF v_result ->> 'status' = 'ok' AND p_method <> 'ledger.call_claim' THEN
            UPDATE operations SET result = v_result WHERE idem_key = p_idem;
        ELSE
            DELETE FROM operations WHERE idem_key = p_idem;
        END IF;
    END IF;
    RETURN v_result;
END
$$;
