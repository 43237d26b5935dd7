-- 0003_settlements: on-chain settlement of x402 authorizations.
--
-- One settlement per authorization. EVM account nonces of the settlement wallet
-- are allocated here, atomically, so that any number of verifier replicas can
-- share one wallet. The signed transaction and its hash are recorded before
-- the broadcast (the first signer wins), so that a crash or a concurrent
-- duplicate broadcasts the same transaction again, never a second one. An
-- allocated nonce is always broadcast (even a transaction that reverts uses
-- its nonce), so the wallet's nonces never have a gap.

CREATE TABLE settlement_senders (
    network    text   NOT NULL,
    sender     text   NOT NULL,   -- the settlement wallet (lowercase 0x address; '' for Solana)
    next_nonce bigint NOT NULL CHECK (next_nonce >= 0),
    PRIMARY KEY (network, sender)
);

CREATE TABLE settlements (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    authorization_id bigint      NOT NULL UNIQUE REFERENCES authorizations (id),
    network          text        NOT NULL,
    sender           text        NOT NULL,
    nonce            bigint,                         -- EVM account nonce; NULL on Solana
    tx_hash          text,                           -- known before the broadcast
    raw_tx           text,                           -- hex (EVM) or base64 (Solana) of the signed transaction
    calldata         text        NOT NULL DEFAULT '', -- what the transaction calls (EVM): lets any replica sign it
    state            text        NOT NULL DEFAULT 'begun'
                                 CHECK (state IN ('begun', 'signed', 'confirmed', 'failed')),
    reason           text        NOT NULL DEFAULT '',
    broadcasts       integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (network, sender, nonce),
    CONSTRAINT signed_has_transaction CHECK (state = 'begun' OR tx_hash IS NOT NULL)
);
CREATE INDEX settlements_open ON settlements (updated_at) WHERE state IN ('begun', 'signed');

CREATE FUNCTION ledger_settlement_view(s settlements) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'settlement_id', s.id, 'authorization_id', s.authorization_id, 'network', s.network, 'sender', s.sender,
        'nonce', s.nonce, 'tx_hash', s.tx_hash, 'raw_tx', s.raw_tx, 'calldata', s.calldata, 'state', s.state,
        'reason', s.reason,
        'broadcasts', s.broadcasts, 'created_at_ms', ledger_ms(s.created_at), 'updated_at_ms', ledger_ms(s.updated_at))
$$;

-- settlement_begin: the settlement of an authorization, created on first call
-- (recording the authorization too when no one has yet, and allocating the
-- sender's next nonce for EVM); later calls answer the same settlement.
CREATE FUNCTION ledger_settlement_begin(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
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
        RETURN ledger_ok(ledger_settlement_view(v_s) || jsonb_build_object('authorization_state', v_auth.state,
                                                                           'created', false));
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
    IF length(coalesce(p_args ->> 'calldata', '')) > 20000 THEN
        RETURN ledger_err('bad_request', 'calldata is longer than 20000 characters');
    END IF;
    INSERT INTO settlements (authorization_id, network, sender, nonce, calldata)
        VALUES (v_auth.id, v_network, v_sender, v_nonce, coalesce(p_args ->> 'calldata', '')) RETURNING * INTO v_s;
    RETURN ledger_ok(ledger_settlement_view(v_s) || jsonb_build_object('authorization_state', v_auth.state,
                                                                       'created', true));
END
$$;

-- settlement_signed: records the signed transaction, once: a second signer
-- gets the first one's transaction back, to broadcast that instead.
CREATE FUNCTION ledger_settlement_signed(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
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
    END IF;
    RETURN ledger_ok(ledger_settlement_view(v_s));
END
$$;

-- settlement_broadcast: counts a broadcast (and tells the tracker the
-- settlement is alive).
CREATE FUNCTION ledger_settlement_broadcast(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_s settlements;
BEGIN
    UPDATE settlements SET broadcasts = broadcasts + 1, updated_at = now()
        WHERE id = ledger_id(p_args, 'settlement_id') RETURNING * INTO v_s;
    IF v_s.id IS NULL THEN
        RETURN ledger_err('settlement_not_found', 'no settlement ' || coalesce(p_args ->> 'settlement_id', 'null'));
    END IF;
    RETURN ledger_ok(ledger_settlement_view(v_s));
END
$$;

-- settlement_result: the chain's verdict, and the authorization follows it.
CREATE FUNCTION ledger_settlement_result(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_s settlements;
    v_state text := p_args ->> 'state';
BEGIN
    IF v_state IS NULL OR v_state NOT IN ('confirmed', 'failed') THEN
        RETURN ledger_err('bad_request', 'state must be confirmed or failed');
    END IF;
    IF length(coalesce(p_args ->> 'reason', '')) > 500 THEN
        RETURN ledger_err('bad_request', 'reason is longer than 500 characters');
    END IF;
    SELECT * INTO v_s FROM settlements WHERE id = ledger_id(p_args, 'settlement_id') FOR UPDATE;
    IF v_s.id IS NULL THEN
        RETURN ledger_err('settlement_not_found', 'no settlement ' || coalesce(p_args ->> 'settlement_id', 'null'));
    END IF;
    IF v_s.state IN ('confirmed', 'failed') THEN
        IF v_s.state = v_state THEN
            RETURN ledger_ok(ledger_settlement_view(v_s));
        END IF;
        RETURN ledger_err('invalid_state', 'settlement ' || v_s.id || ' is already ' || v_s.state,
                          ledger_settlement_view(v_s));
    END IF;
    IF v_s.tx_hash IS NULL THEN
        RETURN ledger_err('invalid_state', 'settlement ' || v_s.id || ' has no transaction yet', ledger_settlement_view(v_s));
    END IF;
    UPDATE settlements SET state = v_state, reason = coalesce(p_args ->> 'reason', ''), updated_at = now()
        WHERE id = v_s.id RETURNING * INTO v_s;
    UPDATE authorizations SET state = CASE v_state WHEN 'confirmed' THEN 'settled' ELSE 'failed' END,
                              settlement_tx = v_s.tx_hash, reason = coalesce(p_args ->> 'reason', ''),
                              updated_at = now()
        WHERE id = v_s.authorization_id AND state IN ('accepted', 'served');
    RETURN ledger_ok(ledger_settlement_view(v_s));
END
$$;

-- The write dispatcher learns the new operations.
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
        ELSE ledger_err('unknown_method', 'the ledger has no write operation ' || p_method)
    END;
    IF p_idem IS NOT NULL THEN
        IF v_result ->> 'status' = 'ok' THEN
            UPDATE operations SET result = v_result WHERE idem_key = p_idem;
        ELSE
            DELETE FROM operations WHERE idem_key = p_idem;
        END IF;
    END IF;
    RETURN v_result;
END
$$;

-- Reads: one settlement, and the open ones (for the verifiers' tracker).
CREATE FUNCTION ledger_read_settlements(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_items jsonb;
BEGIN
    IF p_method = 'ledger.settlement' THEN
        RETURN coalesce(
            (SELECT ledger_ok(ledger_settlement_view(s)) FROM settlements s
             WHERE s.id = ledger_id(p_args, 'settlement_id')
                OR s.authorization_id = ledger_id(p_args, 'authorization_id')
             LIMIT 1),
            ledger_err('settlement_not_found', 'no such settlement'));
    END IF;
    -- open settlements not touched for older_than_ms, oldest first
    SELECT coalesce(jsonb_agg(ledger_settlement_view(s) ORDER BY s.updated_at), '[]') INTO v_items
    FROM (SELECT * FROM settlements
          WHERE state IN ('begun', 'signed') AND (p_args ->> 'network' IS NULL OR network = p_args ->> 'network')
            AND updated_at < now() - coalesce(ledger_amount(p_args, 'older_than_ms'), 0) * interval '1 millisecond'
          ORDER BY updated_at LIMIT least(greatest(coalesce(ledger_id(p_args, 'limit'), 50), 1), 500)) s;
    RETURN ledger_ok(jsonb_build_object('settlements', v_items));
END
$$;

CREATE OR REPLACE FUNCTION ledger_read_dispatch(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_method IN ('ledger.settlement', 'ledger.open_settlements') THEN
        RETURN ledger_read_settlements(p_method, p_args);
    END IF;
    RETURN ledger_read(p_method, p_args);
END
$$;

-- The audit knows settlements too: a confirmed settlement's authorization is settled.
CREATE OR REPLACE FUNCTION ledger_audit_settlements() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('name', 'settlements_match_authorizations', 'ok', count(*) = 0,
                              'detail', coalesce(jsonb_agg(s.id), '[]'))
    FROM settlements s JOIN authorizations a ON a.id = s.authorization_id
    WHERE (s.state = 'confirmed' AND a.state <> 'settled') OR (s.state = 'failed' AND a.state <> 'failed')
$$;

-- The audit with the settlement check added.
CREATE FUNCTION ledger_audit_all() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb := ledger_audit();
    v_extra jsonb := ledger_audit_settlements();
BEGIN
    v_result := jsonb_set(v_result, '{body,checks}', (v_result -> 'body' -> 'checks') || v_extra);
    IF NOT (v_extra ->> 'ok')::boolean THEN
        v_result := jsonb_set(v_result, '{body,ok}', 'false');
    END IF;
    RETURN v_result;
END
$$;
