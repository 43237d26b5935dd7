-- 0020_settlement_renonce: an EVM settlement whose wallet nonce another
-- transaction took is signed again with a new nonce.
--
-- The ledger allocates the settlement wallet's nonces, but the wallet is an
-- ordinary account: another transaction from it (farebox-sweep pays its gas
-- from it at the chain's pending nonce; an operator's own transfer) can take
-- a nonce a settlement was signed with before the settlement is mined. That
-- transaction can then never be mined, and the settlement stayed pending,
-- rebroadcast for ever. The verifier's tracker now notices (the wallet's
-- mined nonce passed the settlement's, and its transaction has no receipt),
-- asks the token whether the authorization was used (then the transaction
-- that used it decides, as for a reverted settlement), and otherwise has the
-- settlement's nonce allocated again here and signs it again.
--
-- tx_hash stays the settlement's first transaction: the name of the payment
-- a topup is credited under (0019). The transaction sent instead is
-- resigned_tx; the ones whose nonce was taken are kept in displaced, oldest
-- first (with those replaced at their own nonce for being priced under the
-- base fee). A settlement confirmed by its re-signed transaction records it as
-- settled_by, the transaction that moved the money (0018), so settle answers
-- with it and the authorization's settlement_tx names it. Executing the
-- authorization is possible once only (EIP-3009), so a second transaction of
-- one settlement can never move the money twice.
ALTER TABLE settlements ADD COLUMN resigned_tx text, ADD COLUMN resigned_raw text,
    ADD COLUMN displaced text[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT resigned_after_first CHECK (resigned_tx IS NULL OR (tx_hash IS NOT NULL AND resigned_raw IS NOT NULL));

CREATE OR REPLACE FUNCTION ledger_settlement_view(s settlements) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'settlement_id', s.id, 'authorization_id', s.authorization_id, 'network', s.network, 'sender', s.sender,
        'nonce', s.nonce, 'tx_hash', s.tx_hash, 'raw_tx', s.raw_tx, 'calldata', s.calldata, 'state', s.state,
        'reason', s.reason, 'settled_by', s.settled_by,
        'resigned_tx', s.resigned_tx, 'resigned_raw', s.resigned_raw, 'displaced', to_jsonb(s.displaced),
        'broadcasts', s.broadcasts, 'created_at_ms', ledger_ms(s.created_at), 'updated_at_ms', ledger_ms(s.updated_at))
$$;

-- settlement_renonce: the transaction tx_hash names (the settlement's
-- current one: resigned_tx, or tx_hash before any) lost its nonce, or, with
-- keep_nonce, is priced under the chain's base fee and is to be replaced at
-- the same nonce. Only a signed EVM settlement whose current transaction that
-- still is changes: it gets the wallet's next nonce (at least chain_nonce,
-- the wallet's pending nonce on chain), or keeps its own, and goes back to
-- begun, to be signed again (ledger.settlement_signed with that nonce).
-- Anything else is answered as it is, with renonced false: another replica
-- did it, or the chain decided. A replaced transaction may still be mined
-- (same nonce): the verifier then finds it by the authorization it used.
CREATE FUNCTION ledger_settlement_renonce(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_s settlements;
    v_floor bigint := ledger_amount(p_args, 'chain_nonce');
    v_keep boolean := coalesce((p_args ->> 'keep_nonce')::boolean, false);
    v_nonce bigint;
BEGIN
    IF (v_floor IS NULL AND NOT v_keep) OR coalesce(length(p_args ->> 'tx_hash'), 0) NOT BETWEEN 1 AND 200 THEN
        RETURN ledger_err('bad_request', 'tx_hash and chain_nonce (the wallet''s pending nonce on chain) are required');
    END IF;
    SELECT * INTO v_s FROM settlements WHERE id = ledger_id(p_args, 'settlement_id') FOR UPDATE;
    IF v_s.id IS NULL THEN
        RETURN ledger_err('settlement_not_found', 'no settlement ' || coalesce(p_args ->> 'settlement_id', 'null'));
    END IF;
    IF v_s.state <> 'signed' OR v_s.nonce IS NULL
       OR coalesce(v_s.resigned_tx, v_s.tx_hash) IS DISTINCT FROM p_args ->> 'tx_hash' THEN
        RETURN ledger_ok(ledger_settlement_view(v_s) || '{"renonced": false}');
    END IF;
    IF v_keep THEN
        v_nonce := v_s.nonce;
    ELSE
        UPDATE settlement_senders SET next_nonce = greatest(next_nonce, v_floor) + 1
            WHERE network = v_s.network AND sender = v_s.sender
            RETURNING next_nonce - 1 INTO v_nonce;
    END IF;
    UPDATE settlements SET nonce = v_nonce, displaced = displaced || coalesce(resigned_tx, tx_hash),
                           resigned_tx = NULL, resigned_raw = NULL, state = 'begun', updated_at = now()
        WHERE id = v_s.id RETURNING * INTO v_s;
    RETURN ledger_ok(ledger_settlement_view(v_s) || '{"renonced": true}');
END
$$;

-- settlement_signed: records the signed transaction of a begun settlement.
-- The first signature of a settlement becomes tx_hash (the first signer
-- wins, as before); a settlement begun again after its nonce was taken takes
-- the transaction signed with its new nonce (nonce required, and equal) as
-- resigned_tx. Otherwise the settlement is answered as it is.
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
    IF v_s.tx_hash IS NULL THEN
        UPDATE settlements SET tx_hash = p_args ->> 'tx_hash', raw_tx = p_args ->> 'raw_tx', state = 'signed',
                               updated_at = now()
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

CREATE OR REPLACE FUNCTION ledger_write_more(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN CASE p_method
        WHEN 'ledger.topup_advance' THEN ledger_topup_advance(p_args)
        WHEN 'ledger.settlement_renonce' THEN ledger_settlement_renonce(p_args)
        ELSE ledger_err('unknown_method', 'the ledger has no write operation ' || p_method)
    END;
END
$$;

-- A topup is one source (0019) under its re-signed transaction too: settle
-- answers with it while it is pending.
CREATE INDEX settlements_resigned ON settlements (network, resigned_tx) WHERE resigned_tx IS NOT NULL;

CREATE OR REPLACE FUNCTION ledger_topup_source(p_args jsonb, p_kind text) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_chain text := p_args -> 'source' ->> 'chain';
    v_tx text := p_args -> 'source' ->> 'tx';
    v_own text;
BEGIN
    IF p_kind IS DISTINCT FROM 'topup' OR jsonb_typeof(p_args -> 'source') IS DISTINCT FROM 'object'
       OR p_args -> 'source' ->> 'index' IS DISTINCT FROM '0' THEN
        RETURN p_args;
    END IF;
    SELECT tx_hash INTO v_own FROM settlements WHERE network = v_chain AND settled_by = v_tx;
    IF v_own IS NULL THEN
        SELECT tx_hash INTO v_own FROM settlements WHERE network = v_chain AND resigned_tx = v_tx;
    END IF;
    IF v_own IS NULL THEN
        RETURN p_args;
    END IF;
    RETURN jsonb_set(p_args, '{source,tx}', to_jsonb(v_own));
END
$$;
