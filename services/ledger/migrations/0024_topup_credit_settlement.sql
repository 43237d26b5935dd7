-- 0024_topup_credit_settlement: a topup is credited only for a recorded
-- settlement of a topup payment to that account, of that amount, and always
-- under that settlement's own source (its network, its first transaction).
--
-- A topup's credit is keyed by its source (network, transaction, index 0),
-- and the sweeper of topups nobody credited (0017) credits a confirmed
-- settlement under (settlements.network, settlements.tx_hash) unless a credit
-- of that source exists. Until now ledger.credit took the source it was
-- given, only mapping a settled_by transaction to tx_hash (0019). Two ways to
-- name one payment with another source were left, each a second credit of
-- the same money once the sweeper came:
--   - the network's other name: a topup paid with a v1 X-PAYMENT header was
--     credited by the edge under the v1 name ("base-sepolia"), the
--     settlement being under CAIP-2 ("eip155:84532");
--   - a transaction the settlement did not record yet: the verifier could
--     answer a settlement confirmed by another transaction before the
--     ledger had recorded that transaction as settled_by.
-- Now a topup credit (ledger.credit kind topup, ledger.topup_advance, the
-- sweeper's) must name a settlement's transaction on its network: tx_hash,
-- settled_by or resigned_tx. Anything else is refused (settlement_not_found),
-- changing nothing: the credit comes later, from the edge asked again or
-- from the sweeper once the settlement is confirmed. The settlement's
-- authorization must be this account's topup of this amount
-- (settlement_mismatch), and not failed (settlement_failed), as
-- ledger.topup_advance already required (0011). A plain ledger.credit of a
-- topup needs its settlement confirmed (settlement_not_confirmed): one not
-- final yet is credited only as an advance (ledger.topup_advance), whose
-- limit and reversal on failure apply; a plain credit of it stood even when
-- the transfer then failed.

-- The settlement a topup credit's source names on its network, or NULL.
CREATE FUNCTION ledger_topup_settlement(p_chain text, p_tx text) RETURNS settlements
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_s settlements;
BEGIN
    SELECT * INTO v_s FROM settlements WHERE network = p_chain AND tx_hash = p_tx;
    IF v_s.id IS NULL THEN
        SELECT * INTO v_s FROM settlements WHERE network = p_chain AND settled_by = p_tx ORDER BY id LIMIT 1;
    END IF;
    IF v_s.id IS NULL THEN
        SELECT * INTO v_s FROM settlements WHERE network = p_chain AND resigned_tx = p_tx ORDER BY id LIMIT 1;
    END IF;
    RETURN v_s;
END
$$;

-- A topup credit's or advance's arguments checked against its settlement:
-- {args} with the source made the settlement's own, or {refused} (an error
-- answer). Arguments a credit refuses by themselves (no such account, no amount),
-- and a source credited before (that credit answers, or the difference
-- is refused), go on as they are.
CREATE FUNCTION ledger_topup_checked(p_args jsonb, p_plain boolean) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_chain text := p_args -> 'source' ->> 'chain';
    v_tx text := p_args -> 'source' ->> 'tx';
    v_account bigint := ledger_id(p_args, 'account_id');
    v_amount bigint := ledger_amount(p_args, 'amount_micro');
    v_s settlements;
    v_auth authorizations;
    v_args jsonb;
BEGIN
    IF jsonb_typeof(p_args -> 'source') IS DISTINCT FROM 'object' OR p_args -> 'source' ->> 'index' IS DISTINCT FROM '0'
       OR v_chain IS NULL OR v_tx IS NULL THEN
        RETURN jsonb_build_object('refused',
            ledger_err('bad_request', 'a topup''s source is its settlement''s transaction: {chain, tx, index: "0"}'));
    END IF;
    IF v_account IS NULL OR v_amount IS NULL OR v_amount = 0 OR NOT EXISTS (SELECT 1 FROM accounts WHERE id = v_account) THEN
        RETURN jsonb_build_object('args', p_args);
    END IF;
    v_s := ledger_topup_settlement(v_chain, v_tx);
    IF v_s.id IS NULL THEN
        RETURN jsonb_build_object('refused',
            ledger_err('settlement_not_found', 'no settlement has transaction ' || v_tx || ' on ' || v_chain ||
                       ' (a topup is credited for its recorded settlement)'));
    END IF;
    v_args := jsonb_set(jsonb_set(p_args, '{source,chain}', to_jsonb(v_s.network)), '{source,tx}', to_jsonb(v_s.tx_hash));
    IF EXISTS (SELECT 1 FROM credits WHERE source_chain = v_s.network AND source_tx = v_s.tx_hash
                                        AND source_index = '0') THEN
        RETURN jsonb_build_object('args', v_args);
    END IF;
    SELECT * INTO v_auth FROM authorizations WHERE id = v_s.authorization_id;
    IF v_auth.resource IS DISTINCT FROM 'topup:account:' || v_account OR v_auth.amount IS DISTINCT FROM v_amount THEN
        RETURN jsonb_build_object('refused',
            ledger_err('settlement_mismatch', 'settlement ' || v_s.id || ' pays ' || v_auth.amount ||
                       ' micro-USDC for "' || v_auth.resource || '", not this topup', ledger_settlement_view(v_s)));
    END IF;
    IF v_s.state = 'failed' THEN
        RETURN jsonb_build_object('refused',
            ledger_err('settlement_failed', 'settlement ' || v_s.id || ' failed: ' || v_s.reason,
                       ledger_settlement_view(v_s)));
    END IF;
    IF p_plain AND v_s.state <> 'confirmed' THEN
        RETURN jsonb_build_object('refused',
            ledger_err('settlement_not_confirmed', 'settlement ' || v_s.id || ' is not confirmed yet: a topup is '
                       'credited once it is (or as an advance, ledger.topup_advance)', ledger_settlement_view(v_s)));
    END IF;
    RETURN jsonb_build_object('args', v_args);
END
$$;

CREATE OR REPLACE FUNCTION ledger_credit(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v jsonb;
BEGIN
    IF p_args ->> 'kind' IS DISTINCT FROM 'topup' THEN
        RETURN ledger_credit_as_asked(p_args);
    END IF;
    v := ledger_topup_checked(p_args, true);
    RETURN coalesce(v -> 'refused', ledger_credit_as_asked(v -> 'args'));
END
$$;

CREATE OR REPLACE FUNCTION ledger_topup_advance(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v jsonb := ledger_topup_checked(p_args, false);
BEGIN
    RETURN coalesce(v -> 'refused', ledger_topup_advance_as_asked(v -> 'args'));
END
$$;

DROP FUNCTION ledger_topup_source(jsonb, text);

-- 0011's advance, its arguments checked above, crediting through
-- ledger_credit_as_asked: its settlement may be pending, which a plain credit
-- now refuses.
CREATE OR REPLACE FUNCTION ledger_topup_advance_as_asked(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
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
        RETURN ledger_advance_answer(ledger_credit_as_asked(v_credit), v_s);
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
        RETURN ledger_advance_answer(ledger_credit_as_asked(v_credit), v_s);
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
    v_result := ledger_credit_as_asked(v_credit);
    IF v_result ->> 'status' <> 'ok' THEN
        RETURN v_result;
    END IF;
    INSERT INTO topup_advances (credit_id, account_id, settlement_id, amount)
        VALUES ((v_result -> 'body' ->> 'credit_id')::bigint, v_account.id, v_s.id, v_amount);
    RETURN ledger_advance_answer(v_result, v_s);
END
$$;
