-- 0006_calls: idempotent paid calls.
--
-- A paid call whose answer was lost (a connection cut after its money became
-- final) can be asked again without paying again. The caller names the call:
-- a prepaid call by its API key and the Idempotency-Key header, an x402 call
-- by its payment (the scope holds the payment header's hash). The first
-- serving claims the name with a lease as long as the call can run; once it is
-- paid, its answer is stored here (a prepaid call's in the same transaction as
-- its charge, so a charged call always has its answer kept). A retry then gets
-- the stored answer, 409 while the first serving's lease runs, or a fresh
-- serving when the lease ran out with nothing stored (the first serving died
-- before it was paid; an x402 payment that was settled is not settled again).
-- A name is kept for keep_ms after its claim, then forgotten by the sweeper.
-- ledger.call_claim is idempotent by its claim (the same serving asking again
-- keeps its claim), so its answers, which may carry a stored answer, are not
-- kept a second time in operations.

CREATE TABLE calls (
    scope            text        NOT NULL CHECK (length(scope) BETWEEN 1 AND 200),
    idem_key         text        NOT NULL CHECK (length(idem_key) <= 255),
    request_hash     text        NOT NULL CHECK (request_hash ~ '^[0-9a-f]{64}$'),
    state            text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
    claim            text        NOT NULL CHECK (length(claim) BETWEEN 1 AND 100),
    lease_until      timestamptz NOT NULL,
    authorization_id bigint      REFERENCES authorizations (id),
    charge_id        bigint      REFERENCES charges (id),
    status           integer,
    content_type     text,
    answer           text,        -- NULL once done: too large to keep
    answer_bytes     bigint,
    receipt          text,        -- an x402 call's PAYMENT-RESPONSE
    created_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (scope, idem_key),
    CONSTRAINT done_calls_have_answers CHECK ((state = 'done') = (status IS NOT NULL))
);
CREATE INDEX calls_by_expiry ON calls (expires_at);

CREATE FUNCTION ledger_call_view(c calls, p_with_answer boolean) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'scope', c.scope, 'idem_key', c.idem_key, 'state', c.state, 'claim', c.claim,
        'lease_ms', greatest(0, ledger_ms(c.lease_until) - ledger_ms(now())),
        'authorization_id', c.authorization_id, 'charge_id', c.charge_id, 'status', c.status,
        'content_type', c.content_type, 'answer', CASE WHEN p_with_answer THEN c.answer END,
        'answer_bytes', c.answer_bytes, 'receipt', c.receipt,
        'authorization_state', (SELECT a.state FROM authorizations a WHERE a.id = c.authorization_id),
        'created_at_ms', ledger_ms(c.created_at), 'done_at_ms', ledger_ms(c.done_at)))
$$;

-- The fields every call operation names: scope, idem_key and claim.
CREATE FUNCTION ledger_call_name_error(p_args jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN coalesce(length(p_args ->> 'scope'), 0) NOT BETWEEN 1 AND 200
                  OR length(coalesce(p_args ->> 'idem_key', '')) > 255
                  OR coalesce(length(p_args ->> 'claim'), 0) NOT BETWEEN 1 AND 100
                THEN ledger_err('bad_request', 'scope (1..200 characters), idem_key (..255) and claim (1..100) are strings')
           END
$$;

-- ledger.call_claim {scope, idem_key, request_hash, claim, lease_ms, keep_ms}:
-- claimed (run the call), the stored answer (done), or a refusal:
-- idempotency_in_progress (another serving's lease runs) or
-- idempotency_key_mismatch (the name was used for another request).
CREATE FUNCTION ledger_call_claim(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v calls;
    v_hash text := p_args ->> 'request_hash';
    v_lease bigint;
    v_keep bigint;
BEGIN
    IF ledger_call_name_error(p_args) IS NOT NULL THEN
        RETURN ledger_call_name_error(p_args);
    END IF;
    IF coalesce(v_hash, '') !~ '^[0-9a-f]{64}$' THEN
        RETURN ledger_err('bad_request', 'request_hash must be 64 lowercase hex digits');
    END IF;
    v_lease := ledger_id(p_args, 'lease_ms');
    v_keep := ledger_id(p_args, 'keep_ms');
    IF v_lease IS NULL OR v_lease NOT BETWEEN 1000 AND 86400000
       OR v_keep IS NULL OR v_keep NOT BETWEEN 60000 AND 2592000000 OR v_keep < v_lease THEN
        RETURN ledger_err('bad_request', 'lease_ms must be 1000..86400000 and keep_ms lease_ms..2592000000');
    END IF;
    INSERT INTO calls (scope, idem_key, request_hash, claim, lease_until, expires_at)
        VALUES (p_args ->> 'scope', coalesce(p_args ->> 'idem_key', ''), v_hash, p_args ->> 'claim',
                now() + v_lease * interval '1 millisecond', now() + v_keep * interval '1 millisecond')
        ON CONFLICT (scope, idem_key) DO NOTHING
        RETURNING * INTO v;
    IF v.scope IS NOT NULL THEN
        RETURN ledger_ok(ledger_call_view(v, false) || '{"claimed": true}');
    END IF;
    SELECT * INTO v FROM calls WHERE scope = p_args ->> 'scope' AND idem_key = coalesce(p_args ->> 'idem_key', '')
        FOR UPDATE;
    IF v.expires_at <= now() THEN
        -- kept long enough: the name is free again
        UPDATE calls SET request_hash = v_hash, state = 'running', claim = p_args ->> 'claim',
               lease_until = now() + v_lease * interval '1 millisecond', authorization_id = NULL, charge_id = NULL,
               status = NULL, content_type = NULL, answer = NULL, answer_bytes = NULL, receipt = NULL,
               created_at = now(), done_at = NULL, expires_at = now() + v_keep * interval '1 millisecond'
            WHERE scope = v.scope AND idem_key = v.idem_key RETURNING * INTO v;
        RETURN ledger_ok(ledger_call_view(v, false) || '{"claimed": true}');
    END IF;
    IF v.request_hash <> v_hash THEN
        RETURN ledger_err('idempotency_key_mismatch', 'this idempotency key was used for a different request',
                          jsonb_build_object('scope', v.scope, 'idem_key', v.idem_key));
    END IF;
    IF v.state = 'done' THEN
        RETURN ledger_ok(ledger_call_view(v, true) || '{"claimed": false}');
    END IF;
    IF v.claim = p_args ->> 'claim' THEN
        RETURN ledger_ok(ledger_call_view(v, false) || '{"claimed": true}'); -- the same serving asked again
    END IF;
    IF v.lease_until > now() THEN
        RETURN ledger_err('idempotency_in_progress', 'a call with this idempotency key is running',
                          jsonb_build_object('retry_after_ms', greatest(1, ledger_ms(v.lease_until) - ledger_ms(now()))));
    END IF;
    -- the first serving's lease ran out with nothing stored: this one takes over
    UPDATE calls SET claim = p_args ->> 'claim', lease_until = now() + v_lease * interval '1 millisecond'
        WHERE scope = v.scope AND idem_key = v.idem_key RETURNING * INTO v;
    RETURN ledger_ok(ledger_call_view(v, false) || '{"claimed": true, "taken_over": true}');
END
$$;

-- The running call under this claim, locked; NULL when the claim was lost.
CREATE FUNCTION ledger_claimed_call(p_args jsonb) RETURNS calls LANGUAGE sql AS $$
    SELECT * FROM calls WHERE scope = p_args ->> 'scope' AND idem_key = coalesce(p_args ->> 'idem_key', '')
        AND claim = p_args ->> 'claim' AND state = 'running' FOR UPDATE
$$;

-- ledger.call_release {scope, idem_key, claim}: the call ended unpaid; the name
-- is free for a fresh serving.
CREATE FUNCTION ledger_call_release(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v calls;
BEGIN
    IF ledger_call_name_error(p_args) IS NOT NULL THEN
        RETURN ledger_call_name_error(p_args);
    END IF;
    DELETE FROM calls WHERE scope = p_args ->> 'scope' AND idem_key = coalesce(p_args ->> 'idem_key', '')
        AND claim = p_args ->> 'claim' AND state = 'running' AND authorization_id IS NULL
        RETURNING * INTO v;
    IF v.scope IS NULL THEN
        -- an x402 call keeps its payment: a retry serves it without paying again
        UPDATE calls SET lease_until = now() WHERE scope = p_args ->> 'scope'
            AND idem_key = coalesce(p_args ->> 'idem_key', '') AND claim = p_args ->> 'claim' AND state = 'running';
    END IF;
    RETURN ledger_ok(jsonb_build_object('released', FOUND OR v.scope IS NOT NULL));
END
$$;

-- ledger.call_link {scope, idem_key, claim, authorization_id}: the x402 payment
-- that pays the call, recorded before it is settled.
CREATE FUNCTION ledger_call_link(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v calls;
    v_auth bigint := ledger_id(p_args, 'authorization_id');
BEGIN
    IF ledger_call_name_error(p_args) IS NOT NULL THEN
        RETURN ledger_call_name_error(p_args);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM authorizations WHERE id = v_auth) THEN
        RETURN ledger_err('authorization_not_found', 'no authorization ' || coalesce(p_args ->> 'authorization_id', 'null'));
    END IF;
    v := ledger_claimed_call(p_args);
    IF v.scope IS NULL THEN
        RETURN ledger_err('claim_lost', 'this serving no longer holds the call''s claim');
    END IF;
    IF v.authorization_id IS NOT NULL AND v.authorization_id <> v_auth THEN
        RETURN ledger_err('idempotency_key_mismatch', 'the call is paid by another authorization');
    END IF;
    UPDATE calls SET authorization_id = v_auth WHERE scope = v.scope AND idem_key = v.idem_key RETURNING * INTO v;
    RETURN ledger_ok(ledger_call_view(v, false));
END
$$;

-- The answer fields of a call: status 100..599, content_type, the answer text
-- (or none: too large to keep) and its size.
CREATE FUNCTION ledger_answer_error(p jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p -> 'status') IS DISTINCT FROM 'number'
                  OR (p ->> 'status')::numeric NOT BETWEEN 100 AND 599
                  OR coalesce(length(p ->> 'content_type'), 0) NOT BETWEEN 1 AND 100
                  OR (p ? 'answer' AND jsonb_typeof(p -> 'answer') <> 'string')
                  OR jsonb_typeof(p -> 'answer_bytes') IS DISTINCT FROM 'number'
                  OR (p ->> 'answer_bytes')::numeric < 0
                  OR length(coalesce(p ->> 'receipt', '')) > 4000
                THEN ledger_err('bad_request', 'an answer needs status (100..599), content_type (1..100 characters), '
                                'answer_bytes (0 or more), and optionally answer (text) and receipt (..4000)')
           END
$$;

-- ledger.call_done {scope, idem_key, claim, status, content_type, answer,
-- answer_bytes, receipt}: an x402 call's answer, once its payment settled.
CREATE FUNCTION ledger_call_done(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v calls;
BEGIN
    IF ledger_call_name_error(p_args) IS NOT NULL THEN
        RETURN ledger_call_name_error(p_args);
    END IF;
    IF ledger_answer_error(p_args) IS NOT NULL THEN
        RETURN ledger_answer_error(p_args);
    END IF;
    v := ledger_claimed_call(p_args);
    IF v.scope IS NULL THEN
        RETURN ledger_err('claim_lost', 'this serving no longer holds the call''s claim');
    END IF;
    UPDATE calls SET state = 'done', status = (p_args ->> 'status')::integer, content_type = p_args ->> 'content_type',
           answer = p_args ->> 'answer', answer_bytes = (p_args ->> 'answer_bytes')::bigint,
           receipt = p_args ->> 'receipt', done_at = now()
        WHERE scope = v.scope AND idem_key = v.idem_key RETURNING * INTO v;
    RETURN ledger_ok(ledger_call_view(v, false));
END
$$;

-- Forgets calls kept past their keep_ms; returns how many.
CREATE FUNCTION ledger_forget_calls(p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM calls WHERE ctid IN (SELECT ctid FROM calls WHERE expires_at <= now() LIMIT p_limit
                                     FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- ledger.charge, as in 0004, where a charge may also carry its call
-- {scope, idem_key, claim[, status, content_type, answer, answer_bytes]}: with
-- an answer the call is done, stored in the same transaction as its charge;
-- without one (the client left mid-stream) its name is released. A call whose
-- claim was lost (its lease ran out) is still charged (it was served) and
-- stores nothing.
CREATE OR REPLACE FUNCTION ledger_charge(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_items jsonb := p_args -> 'charges';
    v_total bigint;
    v_sum numeric;
    v_count integer;
    v_transfer bigint;
    v_first bigint;
    v_id bigint;
    v_call calls;
    v_kept integer := 0;
    v_account accounts;
    v_item jsonb;
BEGIN
    IF jsonb_typeof(v_items) IS DISTINCT FROM 'array' OR jsonb_array_length(v_items) NOT BETWEEN 1 AND 1000 THEN
        RETURN ledger_err('bad_request', 'charges must be a list of 1..1000 charges');
    END IF;
    -- the RPC layer sends whole numbers 0..2^63-1; the checks here keep the function safe on its own
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(v_items) e
               WHERE CASE WHEN jsonb_typeof(e -> 'amount_micro') = 'number'
                          THEN (e -> 'amount_micro')::numeric < 0
                               OR (e -> 'amount_micro')::numeric <> trunc((e -> 'amount_micro')::numeric)
                          ELSE true END) THEN
        RETURN ledger_err('bad_request', 'each charge needs amount_micro, a whole number of micro-USDC, 0 or more');
    END IF;
    FOR v_item IN SELECT x FROM jsonb_array_elements(v_items) x WHERE x ? 'call' LOOP
        IF jsonb_typeof(v_item -> 'call') <> 'object' OR ledger_call_name_error(v_item -> 'call') IS NOT NULL
           OR ((v_item -> 'call') ? 'status' AND ledger_answer_error(v_item -> 'call') IS NOT NULL) THEN
            RETURN ledger_err('bad_request', 'a charge''s call is {scope, idem_key, claim[, status, content_type, '
                              'answer, answer_bytes]}');
        END IF;
    END LOOP;
    SELECT sum((e -> 'amount_micro')::numeric), count(*) INTO v_sum, v_count FROM jsonb_array_elements(v_items) e;
    IF v_sum > ledger_max_amount() THEN
        RETURN ledger_err('bad_request', 'the charges add up to more than ' || ledger_max_amount());
    END IF;
    v_total := v_sum::bigint;
    v := ledger_open_hold(p_args);
    IF v.err IS NOT NULL THEN
        RETURN v.err;
    END IF;
    IF v_total > (v.hold).amount - (v.hold).charged THEN
        RETURN ledger_err('amount_exceeds_hold', 'charges of ' || v_total || ' are more than the hold''s uncharged '
                          || ((v.hold).amount - (v.hold).charged),
            jsonb_build_object('hold_id', (v.hold).id, 'held_micro', (v.hold).amount - (v.hold).charged,
                               'requested_micro', v_total));
    END IF;
    -- the reservation shrinks first, then the money moves (available never dips)
    UPDATE holds SET charged = charged + v_total WHERE id = (v.hold).id;
    UPDATE accounts SET held = held - v_total WHERE id = (v.hold).account_id;
    UPDATE api_keys SET held = held - v_total, spent = spent + v_total, last_used_at = now()
        WHERE id = (v.hold).key_id;
    IF v_total > 0 THEN
        INSERT INTO transfers (kind, ref) VALUES ('commit', 'hold:' || (v.hold).id) RETURNING id INTO v_transfer;
        INSERT INTO postings (transfer_id, account_id, amount) VALUES
            (v_transfer, (v.hold).account_id, -v_total),
            (v_transfer, ledger_system_account('revenue'), v_total);
    END IF;
    WITH rows AS (
        INSERT INTO charges (hold_id, account_id, key_id, amount, ref, transfer_id)
        SELECT (v.hold).id, (v.hold).account_id, (v.hold).key_id, (e ->> 'amount_micro')::bigint,
               left(coalesce(e ->> 'ref', ''), 100),
               CASE WHEN (e ->> 'amount_micro')::bigint > 0 THEN v_transfer END
        FROM jsonb_array_elements(v_items) WITH ORDINALITY x(e, n) WHERE NOT e ? 'call' ORDER BY n
        RETURNING id)
    SELECT min(id) INTO v_first FROM rows;
    -- calls with a name: one row each, and the call done (or released) with it
    FOR v_item IN SELECT x FROM jsonb_array_elements(v_items) x WHERE x ? 'call' LOOP
        INSERT INTO charges (hold_id, account_id, key_id, amount, ref, transfer_id)
            VALUES ((v.hold).id, (v.hold).account_id, (v.hold).key_id, (v_item ->> 'amount_micro')::bigint,
                    left(coalesce(v_item ->> 'ref', ''), 100),
                    CASE WHEN (v_item ->> 'amount_micro')::bigint > 0 THEN v_transfer END)
            RETURNING id INTO v_id;
        v_first := least(coalesce(v_first, v_id), v_id);
        v_call := ledger_claimed_call(v_item -> 'call');
        IF v_call.scope IS NULL THEN
            CONTINUE; -- the claim was lost: charged (it was served), nothing stored
        END IF;
        IF (v_item -> 'call') ? 'status' THEN
            UPDATE calls SET state = 'done', charge_id = v_id, status = (v_item -> 'call' ->> 'status')::integer,
                   content_type = v_item -> 'call' ->> 'content_type', answer = v_item -> 'call' ->> 'answer',
                   answer_bytes = (v_item -> 'call' ->> 'answer_bytes')::bigint, done_at = now()
                WHERE scope = v_call.scope AND idem_key = v_call.idem_key;
        ELSE
            DELETE FROM calls WHERE scope = v_call.scope AND idem_key = v_call.idem_key;
        END IF;
        v_kept := v_kept + 1;
    END LOOP;
    SELECT * INTO v_account FROM accounts WHERE id = (v.hold).account_id;
    RETURN ledger_ok(jsonb_build_object(
        'hold_id', (v.hold).id, 'charged_micro', v_total, 'charges', v_count, 'first_charge_id', v_first,
        'hold_charged_micro', (v.hold).charged + v_total,
        'uncharged_micro', (v.hold).amount - (v.hold).charged - v_total, 'transfer_id', v_transfer,
        'balance_micro', v_account.balance, 'calls_resolved', v_kept));
END
$$;

CREATE FUNCTION ledger_read_call(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v calls;
BEGIN
    SELECT * INTO v FROM calls WHERE scope = p_args ->> 'scope' AND idem_key = coalesce(p_args ->> 'idem_key', '');
    IF v.scope IS NULL THEN
        RETURN ledger_err('call_not_found', 'no call with this scope and idempotency key');
    END IF;
    RETURN ledger_ok(ledger_call_view(v, true));
END
$$;

CREATE OR REPLACE FUNCTION ledger_read_dispatch(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_method IN ('ledger.settlement', 'ledger.open_settlements') THEN
        RETURN ledger_read_settlements(p_method, p_args);
    END IF;
    IF p_method = 'ledger.charges' THEN
        RETURN ledger_read_charges(p_args);
    END IF;
    IF p_method = 'ledger.deposit_addresses' THEN
        RETURN ledger_read_deposit_addresses(p_args);
    END IF;
    IF p_method = 'ledger.watch_cursor' THEN
        RETURN ledger_read_watch_cursor(p_args);
    END IF;
    IF p_method = 'ledger.call' THEN
        RETURN ledger_read_call(p_args);
    END IF;
    RETURN ledger_read(p_method, p_args);
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
        ELSE ledger_err('unknown_method', 'the ledger has no write operation ' || p_method)
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
