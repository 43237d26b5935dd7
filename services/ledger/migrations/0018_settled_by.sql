-- 0018_settled_by: a settlement whose authorization another transaction executed.
--
-- An EIP-3009 authorization is public once it is signed: anyone holding it can
-- send transferWithAuthorization, and the transfer goes to the signed payee
-- whoever sends it. When a third party's transaction executes it first, the
-- settlement's own transaction reverts, yet the payment was made. The
-- verifier then finds the transaction that executed it (its
-- AuthorizationUsed event and its Transfer to the payee) and records the
-- settlement confirmed with settled_by naming that transaction; tx_hash
-- stays the settlement's own (its wallet nonce, and the key credits of a
-- topup are made under). The authorization's settlement_tx is the
-- transaction that moved the money.
ALTER TABLE settlements ADD COLUMN settled_by text,
    ADD CONSTRAINT settled_by_only_when_confirmed CHECK (settled_by IS NULL OR state = 'confirmed');

CREATE OR REPLACE FUNCTION ledger_settlement_view(s settlements) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'settlement_id', s.id, 'authorization_id', s.authorization_id, 'network', s.network, 'sender', s.sender,
        'nonce', s.nonce, 'tx_hash', s.tx_hash, 'raw_tx', s.raw_tx, 'calldata', s.calldata, 'state', s.state,
        'reason', s.reason, 'settled_by', s.settled_by,
        'broadcasts', s.broadcasts, 'created_at_ms', ledger_ms(s.created_at), 'updated_at_ms', ledger_ms(s.updated_at))
$$;

-- settlement_result: the chain's verdict, and the authorization follows it;
-- settled_by (confirmed only) names the transaction that executed the
-- authorization when it is not the settlement's own.
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
