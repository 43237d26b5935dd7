-- 0022_solana_valid_height: a Solana settlement is judged expired by block
-- height, not by one endpoint's word.
--
-- A Solana transaction can land until its recent blockhash's block is 150
-- blocks old. The tracker judged a settlement with no status expired (and so
-- failed, the authorization with it) as soon as its endpoint's
-- isBlockhashValid said false; an endpoint behind the one that had the
-- blockhash (a lagging node, another behind a load balancer) says false for a
-- blockhash it has not seen yet, while the transaction can still land: the
-- payer would pay for a call refused as unpaid.
--
-- The verifier now records, with the signed transaction, a block height the
-- transaction cannot land after: the settling endpoint's block height when
-- it found the blockhash valid, plus 150 (the blockhash's block is at that
-- height or below). The tracker judges a settlement with no status expired
-- only once an endpoint's block height has passed it; a settlement signed
-- before this migration has none and is judged as before.
ALTER TABLE settlements ADD COLUMN last_valid_height bigint
    CONSTRAINT last_valid_height_whole CHECK (last_valid_height IS NULL OR last_valid_height >= 0);

CREATE OR REPLACE FUNCTION ledger_settlement_view(s settlements) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'settlement_id', s.id, 'authorization_id', s.authorization_id, 'network', s.network, 'sender', s.sender,
        'nonce', s.nonce, 'tx_hash', s.tx_hash, 'raw_tx', s.raw_tx, 'calldata', s.calldata, 'state', s.state,
        'reason', s.reason, 'settled_by', s.settled_by,
        'resigned_tx', s.resigned_tx, 'resigned_raw', s.resigned_raw, 'displaced', to_jsonb(s.displaced),
        'last_valid_height', s.last_valid_height,
        'broadcasts', s.broadcasts, 'created_at_ms', ledger_ms(s.created_at), 'updated_at_ms', ledger_ms(s.updated_at))
$$;

-- settlement_signed (0020) with last_valid_height, kept with the first
-- recorded transaction only.
CREATE OR REPLACE FUNCTION ledger_settlement_signed(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_s settlements;
BEGIN
    SELECT * INTO v_s FROM settlements WHERE id = ledger_id(p_args, 'settlement_id') FOR UPDATE;
    IF v_s.id IS NULL THEN
        RETURN ledger_err('settlement_not_found', 'no settlement ' || coalesce(p_args ->> 'settlement_id', 'null'));
    END IF;
    IF coalesce(length(p_args ->> 'tx_hash'), 0) NOT BETWEEN 1 AND 200
       OR coalesce(length(p_args ->> 'raw_tx'), 0) NOT BETWEEN 1 AND 20000 THEN
        RETURN ledger_err('bad_request', 'tx_hash and raw_tx are required strings');
    END IF;
    IF p_args ? 'last_valid_height' AND ledger_amount(p_args, 'last_valid_height') IS NULL THEN
        RETURN ledger_err('bad_request', 'last_valid_height is a block height, a whole number 0 or more');
    END IF;
    IF v_s.tx_hash IS NULL THEN
        UPDATE settlements SET tx_hash = p_args ->> 'tx_hash', raw_tx = p_args ->> 'raw_tx', state = 'signed',
                               last_valid_height = ledger_amount(p_args, 'last_valid_height'), updated_at = now()
            WHERE id = v_s.id RETURNING * INTO v_s;
    ELSIF v_s.state = 'begun' AND v_s.nonce = ledger_amount(p_args, 'nonce')
          AND p_args ->> 'tx_hash' <> v_s.tx_hash AND NOT p_args ->> 'tx_hash' = ANY (v_s.displaced) THEN
        UPDATE settlements SET resigned_tx = p_args ->> 'tx_hash', resigned_raw = p_args ->> 'raw_tx',
                               state = 'signed', updated_at = now()
            WHERE id = v_s.id RETURNING * INTO v_s;
    END IF;
    RETURN ledger_ok(ledger_settlement_view(v_s));
END
$$;
