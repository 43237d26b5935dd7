-- 0015_settlement_conflicts: a settlement is only ever the one of its own
-- authorization.
--
-- A settlement was found by the authorization's (network, payer, nonce) and
-- its amount compared, nothing else. Two EIP-3009 authorizations can share a
-- payer and nonce (only one can ever execute: the token contract uses the
-- nonce up): one to recipient R1, one to R2, both signed. Once the first was
-- settled, settling the second (through /facilitator/settle, with its own
-- payTo) found the first's settlement and answered success with its
-- transaction, though R2 was never paid; or, while the first was only signed,
-- sent the first's transaction again and read a transfer to R1 as the
-- second's failure. Now a settlement asked for another recipient than its
-- authorization was recorded with, or with other calldata than the
-- transaction it signed (another signature, validity window or recipient), is
-- refused as authorization_conflict (the verifier answers that payment's
-- nonce as used), before anything is allocated or sent. The calldata's length
-- is also checked before an EVM nonce is allocated, so that a refusal never
-- leaves a gap in the settlement wallet's nonces.
CREATE FUNCTION ledger_settlement_conflict(a authorizations, s settlements, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_pay_to text := lower(coalesce(p_args ->> 'pay_to', ''));
    v_calldata text := lower(coalesce(p_args ->> 'calldata', ''));
BEGIN
    IF a.id IS NOT NULL AND v_pay_to <> '' AND a.pay_to <> '' AND lower(a.pay_to) <> v_pay_to THEN
        RETURN ledger_err('authorization_conflict', 'nonce ' || a.nonce || ' of ' || a.payer ||
                          ' was recorded for another recipient', ledger_auth_view(a));
    END IF;
    IF s.id IS NOT NULL AND v_calldata <> '' AND s.calldata <> '' AND lower(s.calldata) <> v_calldata THEN
        RETURN ledger_err('authorization_conflict', 'nonce ' || a.nonce || ' of ' || a.payer ||
                          ' belongs to another authorization, settled as settlement ' || s.id,
                          ledger_settlement_view(s));
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ledger_settlement_begin(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_amount bigint := ledger_amount(p_args, 'amount_micro');
    v_network text := p_args ->> 'network';
    v_payer text := coalesce(p_args ->> 'payer', '');
    v_auth_nonce text := p_args ->> 'nonce';
    v_sender text := coalesce(p_args ->> 'sender', '');
    v_evm boolean := coalesce((p_args ->> 'evm')::boolean, false);
    v_floor bigint := ledger_amount(p_args, 'chain_nonce');
    v_auth authorizations;
    v_s settlements;
    v_nonce bigint;
    v_conflict jsonb;
BEGIN
    IF v_amount IS NULL OR v_amount = 0 THEN
        RETURN ledger_err('bad_request', 'amount_micro must be a whole number of micro-USDC in 1..' || ledger_max_amount());
    END IF;
    IF coalesce(length(v_network), 0) NOT BETWEEN 1 AND 100 OR coalesce(length(v_auth_nonce), 0) NOT BETWEEN 1 AND 200
       OR length(v_payer) > 100 OR length(v_sender) > 100 THEN
        RETURN ledger_err('bad_request', 'network, nonce, payer and sender must be short strings');
    END IF;
    IF coalesce((p_args ->> 'existing_only')::boolean, false) THEN
        -- only an existing settlement is wanted (the chain refuses a new one)
        SELECT s.* INTO v_s FROM settlements s JOIN authorizations a ON a.id = s.authorization_id
            WHERE a.network = v_network AND a.payer = v_payer AND a.nonce = v_auth_nonce;
        IF v_s.id IS NULL THEN
            RETURN ledger_err('settlement_not_found', 'this authorization has no settlement');
        END IF;
        SELECT * INTO v_auth FROM authorizations WHERE id = v_s.authorization_id;
        v_conflict := ledger_settlement_conflict(v_auth, v_s, p_args);
        IF v_conflict IS NOT NULL THEN
            RETURN v_conflict;
        END IF;
        RETURN ledger_ok(ledger_settlement_view(v_s) || jsonb_build_object('authorization_state', v_auth.state,
                                                                           'created', false));
    END IF;
    IF length(coalesce(p_args ->> 'calldata', '')) > 20000 THEN
        RETURN ledger_err('bad_request', 'calldata is longer than 20000 characters');
    END IF;
    IF v_evm AND v_floor IS NULL THEN
        RETURN ledger_err('bad_request', 'chain_nonce (the sender''s pending nonce on chain) is required for EVM');
    END IF;
    INSERT INTO authorizations (network, payer, nonce, amount, pay_to, resource)
        VALUES (v_network, v_payer, v_auth_nonce, v_amount, coalesce(p_args ->> 'pay_to', ''),
                coalesce(p_args ->> 'resource', ''))
        ON CONFLICT (network, payer, nonce) DO NOTHING;
    SELECT * INTO v_auth FROM authorizations
        WHERE network = v_network AND payer = v_payer AND nonce = v_auth_nonce FOR UPDATE;
    IF v_auth.amount <> v_amount THEN
        RETURN ledger_err('idempotency_conflict', 'this authorization was recorded with another amount',
                          ledger_auth_view(v_auth));
    END IF;
    SELECT * INTO v_s FROM settlements WHERE authorization_id = v_auth.id;
    v_conflict := ledger_settlement_conflict(v_auth, v_s, p_args);
    IF v_conflict IS NOT NULL THEN
        RETURN v_conflict;
    END IF;
    IF v_s.id IS NOT NULL THEN
        RETURN ledger_ok(ledger_settlement_view(v_s) || jsonb_build_object('authorization_state', v_auth.state,
                                                                           'created', false));
    END IF;
    IF v_auth.state = 'failed' THEN
        RETURN ledger_err('invalid_state', 'this authorization already failed: ' || v_auth.reason, ledger_auth_view(v_auth));
    END IF;
    IF v_evm THEN
        INSERT INTO settlement_senders (network, sender, next_nonce) VALUES (v_network, v_sender, v_floor + 1)
            ON CONFLICT (network, sender) DO UPDATE
                SET next_nonce = greatest(settlement_senders.next_nonce, excluded.next_nonce - 1) + 1
            RETURNING next_nonce - 1 INTO v_nonce;
    END IF;
    INSERT INTO settlements (authorization_id, network, sender, nonce, calldata)
        VALUES (v_auth.id, v_network, v_sender, v_nonce, coalesce(p_args ->> 'calldata', '')) RETURNING * INTO v_s;
    RETURN ledger_ok(ledger_settlement_view(v_s) || jsonb_build_object('authorization_state', v_auth.state,
                                                                       'created', true));
END
$$;
