-- 0002_operations: the ledger's operations as functions.
--
-- Every operation takes its arguments as jsonb and answers jsonb:
--   {"status":"ok","body":{...}}  or  {"status":"error","code":"...","message":"...","body":{...}}
-- so that refusals are answers, not exceptions: many operations share one
-- transaction (group commit) and one refusal must not abort its neighbours.
-- Exceptions mean bugs or broken invariants (the CHECK constraints and the
-- balanced-transfer trigger stay armed as a safety net) and abort the batch,
-- which the ledger then retries one operation per transaction.
--
-- Lock order, to keep concurrent batches free of deadlocks: a batch first calls
-- ledger_lock() with every hold, account, key and system account code it will
-- touch, which locks holds, then accounts, then keys, each in id order. The
-- sweeper takes the same order.

CREATE FUNCTION ledger_ok(p_body jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('status', 'ok', 'body', p_body)
$$;

CREATE FUNCTION ledger_err(p_code text, p_message text, p_body jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('status', 'error', 'code', p_code, 'message', p_message, 'body', p_body)
$$;

CREATE FUNCTION ledger_ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM t) * 1000)::bigint
$$;

-- The largest amount one operation may move: 10^15 micro-USDC (a billion USDC).
-- Far below bigint's limit, so sums of many amounts cannot overflow.
CREATE FUNCTION ledger_max_amount() RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT 1000000000000000::bigint $$;

-- Reads an integer amount from args: NULL when absent or not a whole number in
-- 0..ledger_max_amount().
CREATE FUNCTION ledger_amount(p_args jsonb, p_key text) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := p_args -> p_key;
    n numeric;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'number' THEN
        RETURN NULL;
    END IF;
    n := v::numeric;
    IF n <> trunc(n) OR n < 0 OR n > ledger_max_amount() THEN
        RETURN NULL;
    END IF;
    RETURN n::bigint;
END
$$;

-- Reads a positive id (bigint) from args, or NULL.
CREATE FUNCTION ledger_id(p_args jsonb, p_key text) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := p_args -> p_key;
    n numeric;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'number' THEN
        RETURN NULL;
    END IF;
    n := v::numeric;
    IF n <> trunc(n) OR n < 1 OR n > 9223372036854775807 THEN
        RETURN NULL;
    END IF;
    RETURN n::bigint;
END
$$;

-- --- locking -------------------------------------------------------------------------

CREATE FUNCTION ledger_system_account(p_code text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT id INTO v_id FROM accounts WHERE code = p_code;
    IF v_id IS NULL THEN
        INSERT INTO accounts (kind, code, label, allow_negative) VALUES ('system', p_code, p_code, true)
            ON CONFLICT (code) DO NOTHING;
        SELECT id INTO v_id FROM accounts WHERE code = p_code;
    END IF;
    RETURN v_id;
END
$$;

CREATE FUNCTION ledger_lock(p_holds bigint[], p_accounts bigint[], p_keys bigint[], p_codes text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_code text;
    v_system bigint[] := '{}';
BEGIN
    PERFORM 1 FROM holds WHERE id = ANY (p_holds) ORDER BY id FOR UPDATE;
    FOREACH v_code IN ARRAY coalesce(p_codes, '{}') LOOP
        v_system := v_system || ledger_system_account(v_code);
    END LOOP;
    PERFORM 1 FROM accounts
        WHERE id = ANY (p_accounts) OR id = ANY (v_system)
           OR id IN (SELECT account_id FROM holds WHERE id = ANY (p_holds))
        ORDER BY id FOR UPDATE;
    PERFORM 1 FROM api_keys
        WHERE id = ANY (p_keys) OR id IN (SELECT key_id FROM holds WHERE id = ANY (p_holds))
        ORDER BY id FOR UPDATE;
END
$$;

-- --- accounts and keys ------------------------------------------------------------------

CREATE FUNCTION ledger_open_account(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_label text := coalesce(p_args ->> 'label', '');
    v_id bigint;
BEGIN
    IF length(v_label) > 200 THEN
        RETURN ledger_err('bad_request', 'label is longer than 200 characters');
    END IF;
    INSERT INTO accounts (kind, label) VALUES ('caller', v_label) RETURNING id INTO v_id;
    RETURN ledger_ok(jsonb_build_object('account_id', v_id, 'label', v_label));
END
$$;

-- A caller account, locked, or NULL.
CREATE FUNCTION ledger_caller(p_id bigint) RETURNS accounts LANGUAGE sql AS $$
    SELECT * FROM accounts WHERE id = p_id AND kind = 'caller' FOR UPDATE
$$;

CREATE FUNCTION ledger_models(p_args jsonb, OUT ok boolean, OUT models text[]) LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := p_args -> 'models';
BEGIN
    ok := true;
    models := NULL;
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN;
    END IF;
    IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) > 256
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(v) e
                  WHERE jsonb_typeof(e) <> 'string' OR length(e #>> '{}') NOT BETWEEN 1 AND 200) THEN
        ok := false;
        RETURN;
    END IF;
    SELECT array_agg(e #>> '{}' ORDER BY e #>> '{}') INTO models FROM jsonb_array_elements(v) e;
    models := coalesce(models, '{}');
END
$$;

-- The public view of a key (never its HMAC).
CREATE FUNCTION ledger_key_view(k api_keys) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'key_id', k.id, 'account_id', k.account_id, 'prefix', k.prefix, 'label', k.label, 'status', k.status,
        'spend_cap_micro', k.spend_cap, 'spent_micro', k.spent, 'held_micro', k.held,
        'models', to_jsonb(k.models), 'created_at_ms', ledger_ms(k.created_at),
        'last_used_at_ms', ledger_ms(k.last_used_at), 'revoked_at_ms', ledger_ms(k.revoked_at))
$$;

-- mint_key: the ledger's C code made the key and passes its HMAC (hex) and
-- display prefix; the key itself never reaches the database.
CREATE FUNCTION ledger_mint_key(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account accounts;
    v_hmac bytea;
    v_cap bigint;
    v_models record;
    v_key api_keys;
BEGIN
    v_account := ledger_caller(ledger_id(p_args, 'account_id'));
    IF v_account.id IS NULL THEN
        RETURN ledger_err('account_not_found', 'no caller account ' || coalesce(p_args ->> 'account_id', 'null'));
    END IF;
    IF p_args ->> 'hmac' !~ '^[0-9a-f]{64}$' THEN
        RETURN ledger_err('bad_request', 'hmac must be 64 lowercase hex digits');
    END IF;
    v_hmac := decode(p_args ->> 'hmac', 'hex');
    v_cap := ledger_amount(p_args, 'spend_cap_micro');
    IF p_args ? 'spend_cap_micro' AND jsonb_typeof(p_args -> 'spend_cap_micro') <> 'null' AND v_cap IS NULL THEN
        RETURN ledger_err('bad_request', 'spend_cap_micro must be a whole number of micro-USDC, 0 or more');
    END IF;
    v_models := ledger_models(p_args);
    IF NOT v_models.ok THEN
        RETURN ledger_err('bad_request', 'models must be a list of at most 256 model ids (1..200 characters)');
    END IF;
    IF length(coalesce(p_args ->> 'label', '')) > 200 THEN
        RETURN ledger_err('bad_request', 'label is longer than 200 characters');
    END IF;
    INSERT INTO api_keys (account_id, hmac, prefix, label, spend_cap, models)
        VALUES (v_account.id, v_hmac, p_args ->> 'prefix', coalesce(p_args ->> 'label', ''), v_cap, v_models.models)
        RETURNING * INTO v_key;
    RETURN ledger_ok(ledger_key_view(v_key));
END
$$;

CREATE FUNCTION ledger_revoke_key(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_key api_keys;
BEGIN
    SELECT * INTO v_key FROM api_keys WHERE id = ledger_id(p_args, 'key_id') FOR UPDATE;
    IF v_key.id IS NULL THEN
        RETURN ledger_err('key_not_found', 'no key ' || coalesce(p_args ->> 'key_id', 'null'));
    END IF;
    IF v_key.status = 'active' THEN
        UPDATE api_keys SET status = 'revoked', revoked_at = now() WHERE id = v_key.id RETURNING * INTO v_key;
    END IF;
    RETURN ledger_ok(ledger_key_view(v_key));
END
$$;

CREATE FUNCTION ledger_update_key(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_key api_keys;
    v_cap bigint;
    v_models record;
BEGIN
    SELECT * INTO v_key FROM api_keys WHERE id = ledger_id(p_args, 'key_id') FOR UPDATE;
    IF v_key.id IS NULL THEN
        RETURN ledger_err('key_not_found', 'no key ' || coalesce(p_args ->> 'key_id', 'null'));
    END IF;
    IF p_args ? 'spend_cap_micro' THEN
        v_cap := ledger_amount(p_args, 'spend_cap_micro');
        IF jsonb_typeof(p_args -> 'spend_cap_micro') <> 'null' AND v_cap IS NULL THEN
            RETURN ledger_err('bad_request', 'spend_cap_micro must be a whole number of micro-USDC, 0 or more');
        END IF;
        v_key.spend_cap := v_cap;
    END IF;
    IF p_args ? 'models' THEN
        v_models := ledger_models(p_args);
        IF NOT v_models.ok THEN
            RETURN ledger_err('bad_request', 'models must be a list of at most 256 model ids (1..200 characters)');
        END IF;
        v_key.models := v_models.models;
    END IF;
    IF p_args ? 'label' THEN
        IF length(coalesce(p_args ->> 'label', '')) > 200 THEN
            RETURN ledger_err('bad_request', 'label is longer than 200 characters');
        END IF;
        v_key.label := coalesce(p_args ->> 'label', '');
    END IF;
    UPDATE api_keys SET spend_cap = v_key.spend_cap, models = v_key.models, label = v_key.label
        WHERE id = v_key.id RETURNING * INTO v_key;
    RETURN ledger_ok(ledger_key_view(v_key));
END
$$;

-- --- holds ------------------------------------------------------------------------------------

CREATE FUNCTION ledger_hold_view(h holds) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'hold_id', h.id, 'account_id', h.account_id, 'key_id', h.key_id, 'amount_micro', h.amount,
        'state', h.state, 'committed_micro', h.committed, 'expires_at_ms', ledger_ms(h.expires_at),
        'created_at_ms', ledger_ms(h.created_at), 'resolved_at_ms', ledger_ms(h.resolved_at), 'memo', h.memo)
$$;

CREATE FUNCTION ledger_hold(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_amount bigint := ledger_amount(p_args, 'amount_micro');
    v_ttl bigint := ledger_amount(p_args, 'expires_in_ms');
    v_key_id bigint := ledger_id(p_args, 'key_id');
    v_account accounts;
    v_key api_keys;
    v_available bigint;
    v_hold holds;
BEGIN
    IF v_amount IS NULL OR v_amount = 0 THEN
        RETURN ledger_err('bad_request', 'amount_micro must be a whole number of micro-USDC in 1..' || ledger_max_amount());
    END IF;
    IF v_ttl IS NULL OR v_ttl < 1000 OR v_ttl > 86400000 THEN
        RETURN ledger_err('bad_request', 'expires_in_ms must be 1000..86400000');
    END IF;
    IF length(coalesce(p_args ->> 'memo', '')) > 500 THEN
        RETURN ledger_err('bad_request', 'memo is longer than 500 characters');
    END IF;
    IF p_args ? 'key_id' AND jsonb_typeof(p_args -> 'key_id') <> 'null' AND v_key_id IS NULL THEN
        RETURN ledger_err('bad_request', 'key_id must be a positive integer');
    END IF;
    v_account := ledger_caller(ledger_id(p_args, 'account_id'));
    IF v_account.id IS NULL THEN
        RETURN ledger_err('account_not_found', 'no caller account ' || coalesce(p_args ->> 'account_id', 'null'));
    END IF;
    IF v_key_id IS NOT NULL THEN
        SELECT * INTO v_key FROM api_keys WHERE id = v_key_id FOR UPDATE;
        IF v_key.id IS NULL OR v_key.account_id <> v_account.id THEN
            RETURN ledger_err('key_not_found', 'no key ' || v_key_id || ' on account ' || v_account.id);
        END IF;
        IF v_key.status <> 'active' THEN
            RETURN ledger_err('key_revoked', 'key ' || v_key_id || ' is revoked');
        END IF;
        IF v_key.spend_cap IS NOT NULL AND v_key.spent + v_key.held + v_amount > v_key.spend_cap THEN
            RETURN ledger_err('spend_limit_exceeded', 'the key''s spend cap would be crossed',
                jsonb_build_object('spend_cap_micro', v_key.spend_cap, 'spent_micro', v_key.spent,
                                   'held_micro', v_key.held, 'required_micro', v_amount,
                                   'remaining_micro', greatest(v_key.spend_cap - v_key.spent - v_key.held, 0)));
        END IF;
    END IF;
    v_available := v_account.balance - v_account.held;
    IF v_available < v_amount THEN
        RETURN ledger_err('insufficient_balance', 'the account''s available balance does not cover the hold',
            jsonb_build_object('balance_micro', v_available, 'required_micro', v_amount,
                               'deficit_micro', v_amount - v_available));
    END IF;
    INSERT INTO holds (account_id, key_id, amount, expires_at, memo)
        VALUES (v_account.id, v_key_id, v_amount, now() + v_ttl * interval '1 millisecond',
                coalesce(p_args ->> 'memo', ''))
        RETURNING * INTO v_hold;
    UPDATE accounts SET held = held + v_amount WHERE id = v_account.id;
    IF v_key_id IS NOT NULL THEN
        UPDATE api_keys SET held = held + v_amount, last_used_at = now() WHERE id = v_key_id;
    END IF;
    RETURN ledger_ok(ledger_hold_view(v_hold) || jsonb_build_object('available_micro', v_available - v_amount));
END
$$;

-- An open hold, locked, checked for being resolvable now; or an error.
CREATE FUNCTION ledger_open_hold(p_args jsonb, OUT hold holds, OUT err jsonb) LANGUAGE plpgsql AS $$
BEGIN
    SELECT * INTO hold FROM holds WHERE id = ledger_id(p_args, 'hold_id') FOR UPDATE;
    IF hold.id IS NULL THEN
        err := ledger_err('hold_not_found', 'no hold ' || coalesce(p_args ->> 'hold_id', 'null'));
    ELSIF hold.state = 'expired' OR (hold.state = 'open' AND hold.expires_at <= now()) THEN
        err := ledger_err('hold_expired', 'hold ' || hold.id || ' expired at ' || hold.expires_at,
                          jsonb_build_object('hold_id', hold.id, 'state', 'expired'));
    ELSIF hold.state <> 'open' THEN
        err := ledger_err('hold_not_open', 'hold ' || hold.id || ' is already ' || hold.state,
                          jsonb_build_object('hold_id', hold.id, 'state', hold.state));
    END IF;
END
$$;

-- Releases a resolved hold's reservation from its account and key.
CREATE FUNCTION ledger_release(h holds, p_spent bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE accounts SET held = held - h.amount WHERE id = h.account_id;
    UPDATE api_keys SET held = held - h.amount, spent = spent + p_spent, last_used_at = now() WHERE id = h.key_id;
$$;

CREATE FUNCTION ledger_commit(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_amount bigint := ledger_amount(p_args, 'amount_micro');
    v record;
    v_transfer bigint;
    v_account accounts;
BEGIN
    IF v_amount IS NULL THEN
        RETURN ledger_err('bad_request', 'amount_micro must be a whole number of micro-USDC, 0 or more');
    END IF;
    v := ledger_open_hold(p_args);
    IF v.err IS NOT NULL THEN
        RETURN v.err;
    END IF;
    IF v_amount > (v.hold).amount THEN
        RETURN ledger_err('amount_exceeds_hold', 'commit of ' || v_amount || ' is more than the hold of ' || (v.hold).amount,
            jsonb_build_object('hold_id', (v.hold).id, 'held_micro', (v.hold).amount, 'requested_micro', v_amount));
    END IF;
    -- release the reservation first: the charge comes out of money it covered,
    -- and the account's available balance never dips below zero on the way
    PERFORM ledger_release(v.hold, v_amount);
    IF v_amount > 0 THEN
        INSERT INTO transfers (kind, ref) VALUES ('commit', 'hold:' || (v.hold).id) RETURNING id INTO v_transfer;
        INSERT INTO postings (transfer_id, account_id, amount) VALUES
            (v_transfer, (v.hold).account_id, -v_amount),
            (v_transfer, ledger_system_account('revenue'), v_amount);
    END IF;
    UPDATE holds SET state = 'committed', committed = v_amount, resolved_at = now(), transfer_id = v_transfer
        WHERE id = (v.hold).id;
    SELECT * INTO v_account FROM accounts WHERE id = (v.hold).account_id;
    RETURN ledger_ok(jsonb_build_object(
        'hold_id', (v.hold).id, 'committed_micro', v_amount, 'released_micro', (v.hold).amount - v_amount,
        'transfer_id', v_transfer, 'balance_micro', v_account.balance,
        'available_micro', v_account.balance - v_account.held));
END
$$;

CREATE FUNCTION ledger_void(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_account accounts;
BEGIN
    v := ledger_open_hold(p_args);
    IF v.err IS NOT NULL THEN
        RETURN v.err;
    END IF;
    UPDATE holds SET state = 'voided', resolved_at = now() WHERE id = (v.hold).id;
    PERFORM ledger_release(v.hold, 0);
    SELECT * INTO v_account FROM accounts WHERE id = (v.hold).account_id;
    RETURN ledger_ok(jsonb_build_object('hold_id', (v.hold).id, 'released_micro', (v.hold).amount,
                                        'available_micro', v_account.balance - v_account.held));
END
$$;

-- The sweeper: expires open holds past their expiry. SKIP LOCKED lets every
-- replica run it at once without processing a hold twice or waiting on a
-- batch that is resolving the same hold. Returns how many it expired.
CREATE FUNCTION ledger_expire_holds(p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    SELECT array_agg(id ORDER BY id) INTO v_ids FROM (
        SELECT id FROM holds WHERE state = 'open' AND expires_at <= now()
            ORDER BY id LIMIT p_limit FOR UPDATE SKIP LOCKED) s;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM accounts WHERE id IN (SELECT account_id FROM holds WHERE id = ANY (v_ids)) ORDER BY id FOR UPDATE;
    PERFORM 1 FROM api_keys WHERE id IN (SELECT key_id FROM holds WHERE id = ANY (v_ids)) ORDER BY id FOR UPDATE;
    UPDATE holds SET state = 'expired', resolved_at = now() WHERE id = ANY (v_ids);
    UPDATE accounts a SET held = a.held - s.total
        FROM (SELECT account_id, sum(amount) AS total FROM holds WHERE id = ANY (v_ids) GROUP BY account_id) s
        WHERE a.id = s.account_id;
    UPDATE api_keys k SET held = k.held - s.total
        FROM (SELECT key_id, sum(amount) AS total FROM holds WHERE id = ANY (v_ids) AND key_id IS NOT NULL
              GROUP BY key_id) s
        WHERE k.id = s.key_id;
    RETURN array_length(v_ids, 1);
END
$$;

-- --- credits -----------------------------------------------------------------------------------

-- The clearing account a credit comes from.
CREATE FUNCTION ledger_credit_source(p_kind text, p_chain text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_kind WHEN 'deposit' THEN 'deposits:' || p_chain
                       WHEN 'topup' THEN 'topups:' || p_chain
                       ELSE 'adjustments' END
$$;

CREATE FUNCTION ledger_credit(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_amount bigint := ledger_amount(p_args, 'amount_micro');
    v_kind text := p_args ->> 'kind';
    v_src jsonb := p_args -> 'source';
    v_chain text := v_src ->> 'chain';
    v_tx text := v_src ->> 'tx';
    v_index text := v_src ->> 'index';
    v_account accounts;
    v_existing credits;
    v_transfer bigint;
    v_credit bigint;
BEGIN
    IF v_amount IS NULL OR v_amount = 0 THEN
        RETURN ledger_err('bad_request', 'amount_micro must be a whole number of micro-USDC in 1..' || ledger_max_amount());
    END IF;
    IF v_kind IS NULL OR v_kind NOT IN ('deposit', 'topup', 'adjustment') THEN
        RETURN ledger_err('bad_request', 'kind must be deposit, topup or adjustment');
    END IF;
    IF v_src IS NULL OR jsonb_typeof(v_src) <> 'object' OR coalesce(length(v_chain), 0) NOT BETWEEN 1 AND 100
       OR coalesce(length(v_tx), 0) NOT BETWEEN 1 AND 200 OR coalesce(length(v_index), 0) NOT BETWEEN 1 AND 100 THEN
        RETURN ledger_err('bad_request', 'source must be {chain, tx, index}: strings of 1..100, 1..200, 1..100 characters');
    END IF;
    v_account := ledger_caller(ledger_id(p_args, 'account_id'));
    IF v_account.id IS NULL THEN
        RETURN ledger_err('account_not_found', 'no caller account ' || coalesce(p_args ->> 'account_id', 'null'));
    END IF;
    -- a source is credited once: a second credit of it is the first one's answer,
    -- or a conflict when its account or amount differ
    SELECT * INTO v_existing FROM credits WHERE source_chain = v_chain AND source_tx = v_tx AND source_index = v_index;
    IF v_existing.id IS NOT NULL THEN
        IF v_existing.account_id <> v_account.id OR v_existing.amount <> v_amount OR v_existing.kind <> v_kind THEN
            RETURN ledger_err('idempotency_conflict', 'source ' || v_chain || '/' || v_tx || '/' || v_index ||
                              ' was already credited with different fields',
                              jsonb_build_object('credit_id', v_existing.id));
        END IF;
        RETURN ledger_ok(jsonb_build_object('credit_id', v_existing.id, 'transfer_id', v_existing.transfer_id,
                                            'account_id', v_existing.account_id, 'amount_micro', v_existing.amount,
                                            'duplicate', true));
    END IF;
    INSERT INTO transfers (kind, ref) VALUES ('credit', v_kind || ':' || v_chain || ':' || v_tx || ':' || v_index)
        RETURNING id INTO v_transfer;
    INSERT INTO postings (transfer_id, account_id, amount) VALUES
        (v_transfer, v_account.id, v_amount),
        (v_transfer, ledger_system_account(ledger_credit_source(v_kind, v_chain)), -v_amount);
    INSERT INTO credits (account_id, amount, kind, source_chain, source_tx, source_index, block_hash, transfer_id)
        VALUES (v_account.id, v_amount, v_kind, v_chain, v_tx, v_index, coalesce(v_src ->> 'block_hash', ''), v_transfer)
        RETURNING id INTO v_credit;
    SELECT * INTO v_account FROM accounts WHERE id = v_account.id;
    RETURN ledger_ok(jsonb_build_object('credit_id', v_credit, 'transfer_id', v_transfer, 'account_id', v_account.id,
                                        'amount_micro', v_amount, 'balance_micro', v_account.balance,
                                        'available_micro', v_account.balance - v_account.held, 'duplicate', false));
END
$$;

-- --- x402 authorizations ----------------------------------------------------------------------------

CREATE FUNCTION ledger_auth_view(a authorizations) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'authorization_id', a.id, 'network', a.network, 'payer', a.payer, 'nonce', a.nonce,
        'amount_micro', a.amount, 'pay_to', a.pay_to, 'resource', a.resource, 'state', a.state,
        'settlement_tx', a.settlement_tx, 'reason', a.reason,
        'created_at_ms', ledger_ms(a.created_at), 'updated_at_ms', ledger_ms(a.updated_at))
$$;

-- Accepting the same authorization twice is refused: the unique index decides,
-- also between replicas racing (the second waits for the first to commit).
CREATE FUNCTION ledger_record_authorization(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_amount bigint := ledger_amount(p_args, 'amount_micro');
    v_network text := p_args ->> 'network';
    v_payer text := coalesce(p_args ->> 'payer', '');
    v_nonce text := p_args ->> 'nonce';
    v_auth authorizations;
BEGIN
    IF v_amount IS NULL OR v_amount = 0 THEN
        RETURN ledger_err('bad_request', 'amount_micro must be a whole number of micro-USDC in 1..' || ledger_max_amount());
    END IF;
    IF coalesce(length(v_network), 0) NOT BETWEEN 1 AND 100 OR length(v_payer) > 100
       OR coalesce(length(v_nonce), 0) NOT BETWEEN 1 AND 200
       OR length(coalesce(p_args ->> 'pay_to', '')) > 100 OR length(coalesce(p_args ->> 'resource', '')) > 2000 THEN
        RETURN ledger_err('bad_request', 'network (1..100), nonce (1..200), payer (..100), pay_to (..100) and resource (..2000) are strings');
    END IF;
    INSERT INTO authorizations (network, payer, nonce, amount, pay_to, resource)
        VALUES (v_network, v_payer, v_nonce, v_amount, coalesce(p_args ->> 'pay_to', ''), coalesce(p_args ->> 'resource', ''))
        ON CONFLICT (network, payer, nonce) DO NOTHING
        RETURNING * INTO v_auth;
    IF v_auth.id IS NULL THEN
        SELECT * INTO v_auth FROM authorizations WHERE network = v_network AND payer = v_payer AND nonce = v_nonce;
        RETURN ledger_err('authorization_used', 'this authorization was already accepted', ledger_auth_view(v_auth));
    END IF;
    RETURN ledger_ok(ledger_auth_view(v_auth));
END
$$;

-- Moves an authorization along accepted -> served -> settled | failed.
CREATE FUNCTION ledger_mark_authorization(p_args jsonb, p_to text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_auth authorizations;
    v_tx text := p_args ->> 'settlement_tx';
    v_allowed text[] := CASE p_to WHEN 'served' THEN ARRAY['accepted']
                                  WHEN 'settled' THEN ARRAY['accepted', 'served']
                                  ELSE ARRAY['accepted', 'served'] END;
BEGIN
    SELECT * INTO v_auth FROM authorizations WHERE id = ledger_id(p_args, 'authorization_id') FOR UPDATE;
    IF v_auth.id IS NULL THEN
        RETURN ledger_err('authorization_not_found', 'no authorization ' || coalesce(p_args ->> 'authorization_id', 'null'));
    END IF;
    IF p_to = 'settled' AND coalesce(length(v_tx), 0) NOT BETWEEN 1 AND 200 THEN
        RETURN ledger_err('bad_request', 'settlement_tx must be a string of 1..200 characters');
    END IF;
    IF length(coalesce(p_args ->> 'reason', '')) > 500 THEN
        RETURN ledger_err('bad_request', 'reason is longer than 500 characters');
    END IF;
    IF v_auth.state = p_to AND (p_to <> 'settled' OR v_auth.settlement_tx = v_tx) THEN
        RETURN ledger_ok(ledger_auth_view(v_auth));
    END IF;
    IF NOT v_auth.state = ANY (v_allowed) THEN
        RETURN ledger_err('invalid_state', 'authorization ' || v_auth.id || ' is ' || v_auth.state || ', not ' ||
                          array_to_string(v_allowed, ' or '), ledger_auth_view(v_auth));
    END IF;
    UPDATE authorizations SET state = p_to, updated_at = now(),
           settlement_tx = coalesce(v_tx, settlement_tx),
           reason = CASE WHEN p_to = 'failed' THEN coalesce(p_args ->> 'reason', '') ELSE reason END
        WHERE id = v_auth.id RETURNING * INTO v_auth;
    RETURN ledger_ok(ledger_auth_view(v_auth));
END
$$;

-- --- idempotency and dispatch -------------------------------------------------------------------------

-- Claims an idempotency key for this transaction: NULL when the operation
-- should run now, otherwise the answer to give instead (the stored first
-- result, or idempotency_conflict).
CREATE FUNCTION ledger_claim(p_idem text, p_method text, p_fingerprint bytea) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v operations;
BEGIN
    IF p_idem IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO operations (idem_key, method, fingerprint, result) VALUES (p_idem, p_method, p_fingerprint, 'null')
        ON CONFLICT (idem_key) DO NOTHING;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v FROM operations WHERE idem_key = p_idem;
    IF v.method = p_method AND v.fingerprint = p_fingerprint THEN
        RETURN v.result || jsonb_build_object('replayed', true);
    END IF;
    RETURN ledger_err('idempotency_conflict', 'idempotency key was already used with different fields',
                      jsonb_build_object('first_method', v.method));
END
$$;

-- Runs one write operation under its idempotency key. Successes are stored as
-- the key's answer; refusals release the key (nothing happened).
CREATE FUNCTION ledger_apply(p_method text, p_idem text, p_fingerprint bytea, p_args jsonb)
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

-- --- reads ---------------------------------------------------------------------------------------------

CREATE FUNCTION ledger_account_view(a accounts) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('account_id', a.id, 'kind', a.kind, 'code', a.code, 'label', a.label,
                              'balance_micro', a.balance, 'held_micro', a.held,
                              'available_micro', a.balance - a.held, 'created_at_ms', ledger_ms(a.created_at))
$$;

CREATE FUNCTION ledger_read(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_account accounts;
    v_key api_keys;
    v_limit integer;
    v_items jsonb;
    v_cursor bigint;
BEGIN
    v_limit := least(greatest(coalesce(ledger_id(p_args, 'limit'), 100), 1), 1000);
    IF p_method = 'ledger.lookup_key' THEN
        IF p_args ->> 'hmac' !~ '^[0-9a-f]{64}$' THEN
            RETURN ledger_err('bad_request', 'hmac must be 64 lowercase hex digits');
        END IF;
        SELECT * INTO v_key FROM api_keys WHERE hmac = decode(p_args ->> 'hmac', 'hex');
        IF v_key.id IS NULL THEN
            RETURN ledger_err('key_not_found', 'no key with this HMAC');
        END IF;
        SELECT * INTO v_account FROM accounts WHERE id = v_key.account_id;
        RETURN ledger_ok(ledger_key_view(v_key) || jsonb_build_object(
            'balance_micro', v_account.balance, 'account_held_micro', v_account.held,
            'available_micro', v_account.balance - v_account.held));
    END IF;
    IF p_method IN ('ledger.balance', 'ledger.holds', 'ledger.history', 'ledger.keys') THEN
        SELECT * INTO v_account FROM accounts WHERE id = ledger_id(p_args, 'account_id');
        IF v_account.id IS NULL THEN
            RETURN ledger_err('account_not_found', 'no account ' || coalesce(p_args ->> 'account_id', 'null'));
        END IF;
    END IF;
    CASE p_method
    WHEN 'ledger.balance' THEN
        RETURN ledger_ok(ledger_account_view(v_account) || jsonb_build_object(
            'open_holds', (SELECT count(*) FROM holds WHERE account_id = v_account.id AND state = 'open')));
    WHEN 'ledger.holds' THEN
        -- newest first; page with before_id
        SELECT coalesce(jsonb_agg(ledger_hold_view(h) ORDER BY h.id DESC), '[]'), min(h.id) INTO v_items, v_cursor
        FROM (SELECT * FROM holds
              WHERE account_id = v_account.id AND (p_args ->> 'state' IS NULL OR state = p_args ->> 'state')
                AND (ledger_id(p_args, 'before_id') IS NULL OR id < ledger_id(p_args, 'before_id'))
              ORDER BY id DESC LIMIT v_limit) h;
        RETURN ledger_ok(jsonb_build_object('holds', v_items,
            'next_before_id', CASE WHEN jsonb_array_length(v_items) = v_limit THEN v_cursor END));
    WHEN 'ledger.history' THEN
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'posting_id', p.id, 'transfer_id', p.transfer_id, 'amount_micro', p.amount,
                   'kind', t.kind, 'ref', t.ref, 'at_ms', ledger_ms(p.created_at)) ORDER BY p.id DESC), '[]'),
               min(p.id)
        INTO v_items, v_cursor
        FROM (SELECT * FROM postings
              WHERE account_id = v_account.id
                AND (ledger_id(p_args, 'before_id') IS NULL OR id < ledger_id(p_args, 'before_id'))
              ORDER BY id DESC LIMIT v_limit) p
        JOIN transfers t ON t.id = p.transfer_id;
        RETURN ledger_ok(jsonb_build_object('postings', v_items,
            'next_before_id', CASE WHEN jsonb_array_length(v_items) = v_limit THEN v_cursor END));
    WHEN 'ledger.keys' THEN
        SELECT coalesce(jsonb_agg(ledger_key_view(k) ORDER BY k.id), '[]') INTO v_items
        FROM api_keys k WHERE k.account_id = v_account.id;
        RETURN ledger_ok(jsonb_build_object('keys', v_items));
    WHEN 'ledger.account' THEN
        SELECT * INTO v_account FROM accounts WHERE id = ledger_id(p_args, 'account_id');
        IF v_account.id IS NULL THEN
            RETURN ledger_err('account_not_found', 'no account ' || coalesce(p_args ->> 'account_id', 'null'));
        END IF;
        RETURN ledger_ok(ledger_account_view(v_account));
    WHEN 'ledger.authorization' THEN
        RETURN coalesce(
            (SELECT ledger_ok(ledger_auth_view(a)) FROM authorizations a
             WHERE (ledger_id(p_args, 'authorization_id') IS NOT NULL AND a.id = ledger_id(p_args, 'authorization_id'))
                OR (a.network = p_args ->> 'network' AND a.payer = coalesce(p_args ->> 'payer', '')
                    AND a.nonce = p_args ->> 'nonce')
             LIMIT 1),
            ledger_err('authorization_not_found', 'no such authorization'));
    ELSE
        RETURN ledger_err('unknown_method', 'the ledger has no read ' || p_method);
    END CASE;
END
$$;

-- --- audit -----------------------------------------------------------------------------------------------

-- Checks every invariant of the ledger and reports each check. Expired holds
-- are swept first (a hold past its expiry that the sweeper has not reached yet
-- is the sweeper's work, not a broken invariant); one still open afterwards is.
CREATE FUNCTION ledger_audit() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_checks jsonb := '[]';
    v_bad bigint;
    v_detail jsonb;
    v_swept integer := 0;
    n integer;
BEGIN
    LOOP
        n := ledger_expire_holds(1000);
        v_swept := v_swept + n;
        EXIT WHEN n < 1000;
    END LOOP;

    SELECT coalesce(sum(amount), 0) INTO v_bad FROM postings;
    v_checks := v_checks || jsonb_build_object('name', 'postings_sum_to_zero', 'ok', v_bad = 0, 'detail',
                                               jsonb_build_object('sum_micro', v_bad));

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('transfer_id', transfer_id, 'sum_micro', s)) FILTER (WHERE true), '[]')
    INTO v_bad, v_detail
    FROM (SELECT transfer_id, sum(amount) AS s FROM postings GROUP BY transfer_id HAVING sum(amount) <> 0 LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'transfers_balance', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('account_id', id, 'balance_micro', balance,
                                                            'postings_micro', p)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT a.id, a.balance, coalesce(s.total, 0) AS p FROM accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) s ON s.account_id = a.id
          WHERE a.balance <> coalesce(s.total, 0) LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'balances_equal_postings', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('account_id', id, 'held_micro', held, 'open_holds_micro', h)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT a.id, a.held, coalesce(s.total, 0) AS h FROM accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM holds WHERE state = 'open' GROUP BY account_id) s
                 ON s.account_id = a.id
          WHERE a.held <> coalesce(s.total, 0) LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'held_equals_open_holds', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('account_id', id, 'available_micro', balance - held)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT * FROM accounts WHERE NOT allow_negative AND balance - held < 0 LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'no_negative_available', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('hold_id', id, 'expires_at_ms', ledger_ms(expires_at))), '[]')
    INTO v_bad, v_detail
    FROM (SELECT * FROM holds WHERE state = 'open' AND expires_at <= now() LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'no_open_hold_past_expiry', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('key_id', id)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT k.id FROM api_keys k
          LEFT JOIN (SELECT key_id, sum(amount) FILTER (WHERE state = 'open') AS held,
                            sum(committed) FILTER (WHERE state = 'committed') AS spent
                     FROM holds WHERE key_id IS NOT NULL GROUP BY key_id) s ON s.key_id = k.id
          WHERE k.held <> coalesce(s.held, 0) OR k.spent <> coalesce(s.spent, 0) LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'key_totals_equal_holds', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('hold_id', id)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT h.id FROM holds h LEFT JOIN postings p ON p.transfer_id = h.transfer_id AND p.account_id = h.account_id
          WHERE h.state = 'committed' AND coalesce(-p.amount, 0) <> h.committed LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'commits_match_postings', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('credit_id', id)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT c.id FROM credits c LEFT JOIN postings p ON p.transfer_id = c.transfer_id AND p.account_id = c.account_id
          WHERE coalesce(p.amount, 0) <> c.amount LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'credits_match_postings', 'ok', v_bad = 0, 'detail', v_detail);

    RETURN ledger_ok(jsonb_build_object(
        'ok', NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_checks) c WHERE NOT (c ->> 'ok')::boolean),
        'checks', v_checks, 'swept_holds', v_swept,
        'totals', (SELECT jsonb_build_object('accounts', (SELECT count(*) FROM accounts),
                                             'postings', (SELECT count(*) FROM postings),
                                             'holds_open', (SELECT count(*) FROM holds WHERE state = 'open'),
                                             'caller_balances_micro', (SELECT coalesce(sum(balance), 0) FROM accounts
                                                                       WHERE kind = 'caller')))));
END
$$;
