-- 0009_deferred_capture: a charge is the hold's until the hold resolves.
--
-- Until now every ledger.charge moved its money at once: a transfer, two
-- postings (each updating a balance row and checked at commit), the
-- account's and the key's totals, and the revenue account's balance, which
-- made that one row a lock every charge write of every key waited on. A
-- prepaid slice is a hold: the money of its calls is already reserved, so a
-- charge now only records its rows and adds to the hold's charged amount, and
-- the hold's charges move to revenue in one transfer when it resolves
-- (commit, void or expiry), as a card authorization is captured. A charge
-- write touches the hold's row and its charge rows, nothing shared.
--
-- holds.posted is the part of charged already moved (charges written before
-- this migration moved at once: posted = charged for them). Stored totals
-- keep their meaning as sums of postings and open reservations:
-- accounts.held and api_keys.held count each open hold's amount - posted,
-- api_keys.spent what holds posted, accounts.balance its postings. What a
-- caller or operator reads counts every charge at once: a view's balance_micro
-- and held_micro (and a key's spent_micro and held_micro, and the revenue
-- account's balance_micro) take the open holds' unposted charges
-- (pending_charges_micro) into account; available_micro = balance - held was
-- never changed by a charge and stays exact either way. The audit checks the
-- stored totals against the holds and postings, and that every resolved hold
-- posted exactly its charges.

ALTER TABLE holds ADD COLUMN posted bigint NOT NULL DEFAULT 0;
UPDATE holds SET posted = charged;
ALTER TABLE holds ADD CONSTRAINT posted_within_charged CHECK (posted >= 0 AND posted <= charged);
CREATE INDEX holds_open_by_account ON holds (account_id) WHERE state = 'open';
CREATE INDEX holds_open_by_key ON holds (key_id) WHERE state = 'open' AND key_id IS NOT NULL;
-- a paid charge written from now on has no transfer of its own (its hold's has it)
ALTER TABLE charges DROP CONSTRAINT paid_charges_have_transfers;
ALTER TABLE charges ADD CONSTRAINT charge_transfers_are_paid CHECK (transfer_id IS NULL OR amount > 0);

-- Charges on open holds not moved yet: of an account, of a key, of all (revenue's).
CREATE FUNCTION ledger_pending(p_account bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(charged - posted), 0)::bigint FROM holds WHERE account_id = p_account AND state = 'open'
$$;
CREATE FUNCTION ledger_key_pending(p_key bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(charged - posted), 0)::bigint FROM holds WHERE key_id = p_key AND state = 'open'
$$;
CREATE FUNCTION ledger_revenue_pending() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(charged - posted), 0)::bigint FROM holds WHERE state = 'open'
$$;

CREATE OR REPLACE FUNCTION ledger_account_view(a accounts) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('account_id', a.id, 'kind', a.kind, 'code', a.code, 'label', a.label,
                              'balance_micro', a.balance - p.own + p.revenue, 'held_micro', a.held - p.own,
                              'available_micro', a.balance - a.held, 'pending_charges_micro', p.own + p.revenue,
                              'created_at_ms', ledger_ms(a.created_at))
    FROM (SELECT CASE WHEN a.kind = 'caller' THEN ledger_pending(a.id) ELSE 0 END AS own,
                 CASE WHEN a.code = 'revenue' THEN ledger_revenue_pending() ELSE 0 END AS revenue) p
$$;

CREATE OR REPLACE FUNCTION ledger_key_view(k api_keys) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'key_id', k.id, 'account_id', k.account_id, 'prefix', k.prefix, 'label', k.label, 'status', k.status,
        'spend_cap_micro', k.spend_cap, 'spent_micro', k.spent + p.pending, 'held_micro', k.held - p.pending,
        'models', to_jsonb(k.models), 'created_at_ms', ledger_ms(k.created_at),
        'last_used_at_ms', ledger_ms(k.last_used_at), 'revoked_at_ms', ledger_ms(k.revoked_at))
    FROM (SELECT ledger_key_pending(k.id) AS pending) p
$$;

-- A hold's view names what of its charges has moved to revenue (posted_micro)
-- and the transfer that moved it.
CREATE OR REPLACE FUNCTION ledger_hold_view(h holds) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'hold_id', h.id, 'account_id', h.account_id, 'key_id', h.key_id, 'amount_micro', h.amount,
        'state', h.state, 'committed_micro', h.committed, 'charged_micro', h.charged, 'posted_micro', h.posted,
        'transfer_id', h.transfer_id, 'expires_at_ms', ledger_ms(h.expires_at),
        'created_at_ms', ledger_ms(h.created_at), 'resolved_at_ms', ledger_ms(h.resolved_at), 'memo', h.memo)
$$;

-- ledger.lookup_key: the key's view with its account's balance, counted as the views count it.
CREATE FUNCTION ledger_read_key(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_key api_keys;
    v_account accounts;
    v_pending bigint;
BEGIN
    IF p_args ->> 'hmac' !~ '^[0-9a-f]{64}$' THEN
        RETURN ledger_err('bad_request', 'hmac must be 64 lowercase hex digits');
    END IF;
    SELECT * INTO v_key FROM api_keys WHERE hmac = decode(p_args ->> 'hmac', 'hex');
    IF v_key.id IS NULL THEN
        RETURN ledger_err('key_not_found', 'no key with this HMAC');
    END IF;
    SELECT * INTO v_account FROM accounts WHERE id = v_key.account_id;
    v_pending := ledger_pending(v_account.id);
    RETURN ledger_ok(ledger_key_view(v_key) || jsonb_build_object(
        'balance_micro', v_account.balance - v_pending, 'account_held_micro', v_account.held - v_pending,
        'available_micro', v_account.balance - v_account.held));
END
$$;

CREATE OR REPLACE FUNCTION ledger_read_dispatch(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_method = 'ledger.lookup_key' THEN
        RETURN ledger_read_key(p_args);
    END IF;
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

CREATE OR REPLACE FUNCTION ledger_hold(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_amount bigint := ledger_amount(p_args, 'amount_micro');
    v_ttl bigint := ledger_amount(p_args, 'expires_in_ms');
    v_key_id bigint := ledger_id(p_args, 'key_id');
    v_account accounts;
    v_key api_keys;
    v_available bigint;
    v_hold holds;
    v_pending bigint;
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
        -- spent + held counts every charge once, posted or not
        IF v_key.spend_cap IS NOT NULL AND v_key.spent + v_key.held + v_amount > v_key.spend_cap THEN
            v_pending := ledger_key_pending(v_key.id);
            RETURN ledger_err('spend_limit_exceeded', 'the key''s spend cap would be crossed',
                jsonb_build_object('spend_cap_micro', v_key.spend_cap, 'spent_micro', v_key.spent + v_pending,
                                   'held_micro', v_key.held - v_pending, 'required_micro', v_amount,
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

CREATE OR REPLACE FUNCTION ledger_credit(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
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
                                        'amount_micro', v_amount,
                                        'balance_micro', v_account.balance - ledger_pending(v_account.id),
                                        'available_micro', v_account.balance - v_account.held, 'duplicate', false));
END
$$;

CREATE OR REPLACE FUNCTION ledger_release(h holds, p_spent bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE accounts SET held = held - (h.amount - h.posted) WHERE id = h.account_id;
    UPDATE api_keys SET held = held - (h.amount - h.posted), spent = spent + p_spent, last_used_at = now()
        WHERE id = h.key_id;
$$;

-- Moves a resolving hold's unposted charges, plus p_extra, from its account
-- to revenue in one transfer (none when that is 0) and releases what the hold
-- still reserved. Returns the transfer, or NULL. The caller locked the hold,
-- its account and key, and the revenue account, and sets the hold's state,
-- transfer_id and posted = charged in the same UPDATE.
CREATE FUNCTION ledger_capture(h holds, p_extra bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_post bigint := h.charged - h.posted + p_extra;
    v_transfer bigint;
BEGIN
    -- the reservation goes first: the money moved is money it covered, and
    -- the account's available balance never dips below zero on the way
    PERFORM ledger_release(h, v_post);
    IF v_post > 0 THEN
        INSERT INTO transfers (kind, ref) VALUES ('commit', 'hold:' || h.id) RETURNING id INTO v_transfer;
        INSERT INTO postings (transfer_id, account_id, amount) VALUES
            (v_transfer, h.account_id, -v_post),
            (v_transfer, ledger_system_account('revenue'), v_post);
    END IF;
    RETURN v_transfer;
END
$$;

CREATE OR REPLACE FUNCTION ledger_commit(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
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
    IF v_amount > (v.hold).amount - (v.hold).charged THEN
        RETURN ledger_err('amount_exceeds_hold', 'commit of ' || v_amount || ' is more than the hold''s uncharged '
                          || ((v.hold).amount - (v.hold).charged),
            jsonb_build_object('hold_id', (v.hold).id, 'held_micro', (v.hold).amount - (v.hold).charged,
                               'requested_micro', v_amount));
    END IF;
    -- the hold's charges not posted yet and this amount move in one transfer
    v_transfer := ledger_capture(v.hold, v_amount);
    UPDATE holds SET state = 'committed', committed = charged + v_amount, resolved_at = now(),
                     transfer_id = v_transfer, posted = charged
        WHERE id = (v.hold).id;
    SELECT * INTO v_account FROM accounts WHERE id = (v.hold).account_id;
    RETURN ledger_ok(jsonb_build_object(
        'hold_id', (v.hold).id, 'committed_micro', (v.hold).charged + v_amount,
        'released_micro', (v.hold).amount - (v.hold).charged - v_amount,
        'transfer_id', v_transfer, 'balance_micro', v_account.balance - ledger_pending(v_account.id),
        'available_micro', v_account.balance - v_account.held));
END
$$;

CREATE OR REPLACE FUNCTION ledger_void(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_account accounts;
    v_transfer bigint;
BEGIN
    v := ledger_open_hold(p_args);
    IF v.err IS NOT NULL THEN
        RETURN v.err;
    END IF;
    -- a hold with charges keeps them (posted now if they were not): it ends
    -- committed for what was charged
    v_transfer := ledger_capture(v.hold, 0);
    UPDATE holds SET state = CASE WHEN charged > 0 THEN 'committed' ELSE 'voided' END,
                     committed = CASE WHEN charged > 0 THEN charged END, resolved_at = now(),
                     transfer_id = v_transfer, posted = charged
        WHERE id = (v.hold).id;
    SELECT * INTO v_account FROM accounts WHERE id = (v.hold).account_id;
    RETURN ledger_ok(jsonb_build_object('hold_id', (v.hold).id, 'released_micro', (v.hold).amount - (v.hold).charged,
                                        'charged_micro', (v.hold).charged,
                                        'available_micro', v_account.balance - v_account.held));
END
$$;

CREATE OR REPLACE FUNCTION ledger_expire_holds(p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v_revenue bigint := ledger_system_account('revenue');
    v_transfer bigint;
    h holds;
BEGIN
    SELECT array_agg(id ORDER BY id) INTO v_ids FROM (
        SELECT id FROM holds WHERE state = 'open' AND expires_at <= now()
            ORDER BY id LIMIT p_limit FOR UPDATE SKIP LOCKED) s;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    -- accounts (revenue among them: unposted charges move there) and keys, in id order
    PERFORM 1 FROM accounts WHERE id IN (SELECT account_id FROM holds WHERE id = ANY (v_ids)) OR id = v_revenue
        ORDER BY id FOR UPDATE;
    PERFORM 1 FROM api_keys WHERE id IN (SELECT key_id FROM holds WHERE id = ANY (v_ids)) ORDER BY id FOR UPDATE;
    -- each expired hold keeps its charges (posted now if they were not) and releases the rest
    FOR h IN SELECT * FROM holds WHERE id = ANY (v_ids) ORDER BY id LOOP
        v_transfer := ledger_capture(h, 0);
        UPDATE holds SET state = 'expired', resolved_at = now(), transfer_id = v_transfer, posted = charged
            WHERE id = h.id;
    END LOOP;
    RETURN array_length(v_ids, 1);
END
$$;

CREATE OR REPLACE FUNCTION ledger_charge(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v record;
    h holds;
    v_hold_id bigint := ledger_id(p_args, 'hold_id');
    v_items jsonb := p_args -> 'charges';
    v_total bigint;
    v_sum numeric;
    v_count integer;
    v_bad boolean;
    v_calls integer;
    v_first bigint;
    v_id bigint;
    v_call calls;
    v_kept integer := 0;
    v_item jsonb;
BEGIN
    IF jsonb_typeof(v_items) IS DISTINCT FROM 'array' OR jsonb_array_length(v_items) NOT BETWEEN 1 AND 1000 THEN
        RETURN ledger_err('bad_request', 'charges must be a list of 1..1000 charges');
    END IF;
    -- one pass over the items: amounts checked and added up, calls counted.
    -- The RPC layer sends whole numbers 0..2^63-1; the checks here keep the
    -- function safe on its own.
    SELECT count(*),
           bool_or(CASE WHEN jsonb_typeof(e -> 'amount_micro') = 'number'
                        THEN (e -> 'amount_micro')::numeric < 0
                             OR (e -> 'amount_micro')::numeric <> trunc((e -> 'amount_micro')::numeric)
                        ELSE true END),
           sum(CASE WHEN jsonb_typeof(e -> 'amount_micro') = 'number' THEN (e -> 'amount_micro')::numeric END),
           count(*) FILTER (WHERE e ? 'call')
        INTO v_count, v_bad, v_sum, v_calls
        FROM jsonb_array_elements(v_items) e;
    IF v_bad THEN
        RETURN ledger_err('bad_request', 'each charge needs amount_micro, a whole number of micro-USDC, 0 or more');
    END IF;
    IF v_calls > 0 THEN
        FOR v_item IN SELECT x FROM jsonb_array_elements(v_items) x WHERE x ? 'call' LOOP
            IF jsonb_typeof(v_item -> 'call') <> 'object' OR ledger_call_name_error(v_item -> 'call') IS NOT NULL
               OR ((v_item -> 'call') ? 'status' AND ledger_answer_error(v_item -> 'call') IS NOT NULL) THEN
                RETURN ledger_err('bad_request', 'a charge''s call is {scope, idem_key, claim[, status, '
                                  'content_type, answer, answer_bytes]}');
            END IF;
        END LOOP;
    END IF;
    IF v_sum > ledger_max_amount() THEN
        RETURN ledger_err('bad_request', 'the charges add up to more than ' || ledger_max_amount());
    END IF;
    v_total := v_sum::bigint;
    -- the charges are the hold's: its money moves to revenue, in one transfer,
    -- when the hold resolves (commit, void or expiry). One statement checks
    -- and adds; when it changes nothing, the hold says why.
    UPDATE holds SET charged = charged + v_total
        WHERE id = v_hold_id AND state = 'open' AND expires_at > now()
          AND amount - charged >= v_total
        RETURNING * INTO h;
    IF h.id IS NULL THEN
        v := ledger_open_hold(p_args);
        IF v.err IS NOT NULL THEN
            RETURN v.err;
        END IF;
        RETURN ledger_err('amount_exceeds_hold', 'charges of ' || v_total || ' are more than the hold''s uncharged '
                          || ((v.hold).amount - (v.hold).charged),
            jsonb_build_object('hold_id', (v.hold).id, 'held_micro', (v.hold).amount - (v.hold).charged,
                               'requested_micro', v_total));
    END IF;
    WITH rows AS (
        INSERT INTO charges (hold_id, account_id, key_id, amount, ref)
        SELECT h.id, h.account_id, h.key_id, (e ->> 'amount_micro')::bigint, left(coalesce(e ->> 'ref', ''), 100)
        FROM jsonb_array_elements(v_items) WITH ORDINALITY x(e, n) WHERE NOT e ? 'call' ORDER BY n
        RETURNING id)
    SELECT min(id) INTO v_first FROM rows;
    -- calls with a name: one row each, and the call done (or released) with it
    IF v_calls > 0 THEN
        FOR v_item IN SELECT x FROM jsonb_array_elements(v_items) x WHERE x ? 'call' LOOP
            INSERT INTO charges (hold_id, account_id, key_id, amount, ref)
                VALUES (h.id, h.account_id, h.key_id, (v_item ->> 'amount_micro')::bigint,
                        left(coalesce(v_item ->> 'ref', ''), 100))
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
    END IF;
    RETURN ledger_ok(jsonb_build_object(
        'hold_id', h.id, 'charged_micro', v_total, 'charges', v_count, 'first_charge_id', v_first,
        'hold_charged_micro', h.charged, 'uncharged_micro', h.amount - h.charged, 'calls_resolved', v_kept));
END
$$;

-- The audit: stored totals against holds (amount - posted) and postings; resolved holds posted
-- exactly their charges.
CREATE OR REPLACE FUNCTION ledger_audit() RETURNS jsonb LANGUAGE plpgsql AS $$
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
          LEFT JOIN (SELECT account_id, sum(amount - posted) AS total FROM holds WHERE state = 'open'
                     GROUP BY account_id) s ON s.account_id = a.id
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
          LEFT JOIN (SELECT key_id, sum(amount - posted) FILTER (WHERE state = 'open') AS held,
                            sum(CASE WHEN state = 'committed' THEN committed ELSE posted END) AS spent
                     FROM holds WHERE key_id IS NOT NULL GROUP BY key_id) s ON s.key_id = k.id
          WHERE k.held <> coalesce(s.held, 0) OR k.spent <> coalesce(s.spent, 0) LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'key_totals_equal_holds', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('hold_id', id)), '[]')
    INTO v_bad, v_detail
    -- a resolved hold's transfer moved what it ended with (committed, or its
    -- charges) less the charges posted one write at a time before 0009
    FROM (SELECT h.id FROM holds h LEFT JOIN postings p ON p.transfer_id = h.transfer_id AND p.account_id = h.account_id
          LEFT JOIN (SELECT hold_id, sum(amount) AS total FROM charges WHERE transfer_id IS NOT NULL GROUP BY hold_id) c
                 ON c.hold_id = h.id
          WHERE h.state <> 'open'
            AND coalesce(-p.amount, 0) <> CASE WHEN h.state = 'committed' THEN h.committed ELSE h.charged END
                                           - coalesce(c.total, 0)
          LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'commits_match_postings', 'ok', v_bad = 0, 'detail', v_detail);

    -- posted: what of a hold's charges has moved; all of them once it resolved
    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('hold_id', id)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT h.id FROM holds h
          LEFT JOIN (SELECT hold_id, sum(amount) AS total FROM charges WHERE transfer_id IS NOT NULL GROUP BY hold_id) c
                 ON c.hold_id = h.id
          WHERE CASE WHEN h.state = 'open' THEN h.posted <> coalesce(c.total, 0) ELSE h.posted <> h.charged END
          LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'holds_posted_their_charges', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('hold_id', id)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT h.id FROM holds h LEFT JOIN (SELECT hold_id, sum(amount) AS total FROM charges GROUP BY hold_id) c
                 ON c.hold_id = h.id
          WHERE h.charged <> coalesce(c.total, 0) LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'holds_charged_equal_charges', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('transfer_id', transfer_id)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT c.transfer_id FROM (SELECT transfer_id, account_id, sum(amount) AS total FROM charges
                                     WHERE transfer_id IS NOT NULL GROUP BY transfer_id, account_id) c
          LEFT JOIN postings p ON p.transfer_id = c.transfer_id AND p.account_id = c.account_id
          WHERE coalesce(-p.amount, 0) <> c.total LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'charges_match_postings', 'ok', v_bad = 0, 'detail', v_detail);

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
                                             'charges', (SELECT count(*) FROM charges),
                                             'pending_charges_micro', ledger_revenue_pending(),
                                             'caller_balances_micro', (SELECT coalesce(sum(balance), 0) FROM accounts
                                                                       WHERE kind = 'caller')))));
END
$$;
