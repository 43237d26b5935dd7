-- 0026_settlement_result_resigning: a settlement being signed again is not
-- resolved before its new transaction is.
--
-- A settlement whose transaction lost its wallet nonce (or is replaced at its
-- own, 0020) goes back to 'begun' with its nonce allocated again, until a
-- tracker signs and sends it. A result recorded meanwhile, by a settle or a
-- tracker round that judged the old transaction from an older view, closed
-- it: its new nonce was never used, and every later settlement of the wallet
-- waited behind that gap. Now such a result is refused (invalid_state); the
-- new transaction is signed and sent, and the settlement is judged by it (a
-- transaction that reverts uses its nonce too; an authorization another
-- transaction used is found as before).
CREATE OR REPLACE FUNCTION ledger_settlement_result(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_s settlements;
    v_state text := p_args ->> 'state';
    v_by text := nullif(p_args ->> 'settled_by', '');
BEGIN
    IF v_state IS NULL OR v_state NOT IN ('confirmed', 'failed') THEN
        RETURN ledger_err('bad_request', 'state must be confirmed or failed');
    END IF;
    IF length(coalesce(p_args ->> 'reason', '')) > 500 THEN
        RETURN ledger_err('bad_request', 'reason is longer than 500 characters');
    END IF;
    IF v_by IS NOT NULL AND (v_state <> 'confirmed' OR v_by !~ '^0x[0-9a-f]{64}$') THEN
        RETURN ledger_err('bad_request', 'settled_by must be a lowercase 0x transaction hash, with state confirmed');
    END IF;
    SELECT * INTO v_s FROM settlements WHERE id = ledger_id(p_args, 'settlement_id') FOR UPDATE;
    IF v_s.id IS NULL THEN
        RETURN ledger_err('settlement_not_found', 'no settlement ' || coalesce(p_args ->> 'settlement_id', 'null'));
    END IF;
    IF v_s.state IN ('confirmed', 'failed') THEN
        IF v_s.state = v_state AND v_s.settled_by IS NOT DISTINCT FROM coalesce(v_by, v_s.settled_by) THEN
            RETURN ledger_ok(ledger_settlement_view(v_s));
        END IF;
        RETURN ledger_err('invalid_state', 'settlement ' || v_s.id || ' is already ' || v_s.state,
                          ledger_settlement_view(v_s));
    END IF;
    IF v_s.tx_hash IS NULL THEN
        RETURN ledger_err('invalid_state', 'settlement ' || v_s.id || ' has no transaction yet', ledger_settlement_view(v_s));
    END IF;
    IF v_s.state = 'begun' AND cardinality(v_s.displaced) > 0 THEN
        -- given a nonce again (0020) and not signed under it yet: its result comes with its new
        -- transaction, which must be sent (even to revert) so that the wallet's nonces leave no gap
        RETURN ledger_err('invalid_state', 'settlement ' || v_s.id || ' is being signed again under a new nonce',
                          ledger_settlement_view(v_s));
    END IF;
    UPDATE settlements SET state = v_state, reason = coalesce(p_args ->> 'reason', ''), settled_by = v_by,
                           updated_at = now()
        WHERE id = v_s.id RETURNING * INTO v_s;
    UPDATE authorizations SET state = CASE v_state WHEN 'confirmed' THEN 'settled' ELSE 'failed' END,
                              settlement_tx = coalesce(v_by, v_s.tx_hash), reason = coalesce(p_args ->> 'reason', ''),
                              updated_at = now()
        WHERE id = v_s.authorization_id AND state IN ('accepted', 'served');
    RETURN ledger_ok(ledger_settlement_view(v_s));
END
$$;
