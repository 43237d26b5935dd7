-- 0004_charges: charges against an open hold.
--
-- A hold can now be drawn down while it stays open: ledger.charge takes one or
-- more amounts out of it (each a charge: one row per served call, with the
-- caller's request id as ref), moves them to revenue in one transfer, and
-- keeps the rest reserved. The edge uses this to serve many calls of one key
-- from one hold (a "slice" of the balance) with one durable write per batch
-- of calls instead of two per call; every call's charge is still durable
-- before its answer goes out, and a slice whose edge died expires with only
-- its uncharged rest released.
--
-- holds.charged is the sum of the hold's charges. Resolution keeps it:
-- commit(amount) charges amount more (committed = charged + amount), void
-- releases the rest (committed = charged, state 'committed' when anything was
-- charged), expiry releases the rest and leaves charged as it was.
-- accounts.held and api_keys.held count each open hold's amount - charged.

ALTER TABLE holds ADD COLUMN charged bigint NOT NULL DEFAULT 0 CHECK (charged >= 0);
ALTER TABLE holds ADD CONSTRAINT charged_within_hold
    CHECK (charged <= amount AND (committed IS NULL OR committed >= charged));

CREATE TABLE charges (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hold_id     bigint      NOT NULL REFERENCES holds (id),
    account_id  bigint      NOT NULL REFERENCES accounts (id),
    key_id      bigint      REFERENCES api_keys (id),
    amount      bigint      NOT NULL CHECK (amount >= 0),
    ref         text        NOT NULL DEFAULT '',           -- the call's request id
    transfer_id bigint      REFERENCES transfers (id),     -- NULL for a charge of 0
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT paid_charges_have_transfers CHECK ((amount > 0) = (transfer_id IS NOT NULL))
);
CREATE INDEX charges_by_account ON charges (account_id, id);
CREATE INDEX charges_by_hold ON charges (hold_id);
CREATE TRIGGER charges_immutable BEFORE UPDATE OR DELETE ON charges
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER charges_no_truncate BEFORE TRUNCATE ON charges
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

CREATE OR REPLACE FUNCTION ledger_hold_view(h holds) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'hold_id', h.id, 'account_id', h.account_id, 'key_id', h.key_id, 'amount_micro', h.amount,
        'state', h.state, 'committed_micro', h.committed, 'charged_micro', h.charged,
        'expires_at_ms', ledger_ms(h.expires_at), 'created_at_ms', ledger_ms(h.created_at),
        'resolved_at_ms', ledger_ms(h.resolved_at), 'memo', h.memo)
$$;

-- Releases a resolving hold's uncharged rest from its account and key; p_spent
-- is what the resolution charges on top of the hold's charges.
CREATE OR REPLACE FUNCTION ledger_release(h holds, p_spent bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE accounts SET held = held - (h.amount - h.charged) WHERE id = h.account_id;
    UPDATE api_keys SET held = held - (h.amount - h.charged), spent = spent + p_spent, last_used_at = now()
        WHERE id = h.key_id;
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
    -- release the reservation first: the charge comes out of money it covered,
    -- and the account's available balance never dips below zero on the way
    PERFORM ledger_release(v.hold, v_amount);
    IF v_amount > 0 THEN
        INSERT INTO transfers (kind, ref) VALUES ('commit', 'hold:' || (v.hold).id) RETURNING id INTO v_transfer;
        INSERT INTO postings (transfer_id, account_id, amount) VALUES
            (v_transfer, (v.hold).account_id, -v_amount),
            (v_transfer, ledger_system_account('revenue'), v_amount);
    END IF;
    UPDATE holds SET state = 'committed', committed = charged + v_amount, resolved_at = now(),
                     transfer_id = v_transfer
        WHERE id = (v.hold).id;
    SELECT * INTO v_account FROM accounts WHERE id = (v.hold).account_id;
    RETURN ledger_ok(jsonb_build_object(
        'hold_id', (v.hold).id, 'committed_micro', (v.hold).charged + v_amount,
        'released_micro', (v.hold).amount - (v.hold).charged - v_amount,
        'transfer_id', v_transfer, 'balance_micro', v_account.balance,
        'available_micro', v_account.balance - v_account.held));
END
$$;

CREATE OR REPLACE FUNCTION ledger_void(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_account accounts;
BEGIN
    v := ledger_open_hold(p_args);
    IF v.err IS NOT NULL THEN
        RETURN v.err;
    END IF;
    -- a hold with charges keeps them: it ends committed for what was charged
    UPDATE holds SET state = CASE WHEN charged > 0 THEN 'committed' ELSE 'voided' END,
                     committed = CASE WHEN charged > 0 THEN charged END, resolved_at = now()
        WHERE id = (v.hold).id;
    PERFORM ledger_release(v.hold, 0);
    SELECT * INTO v_account FROM accounts WHERE id = (v.hold).account_id;
    RETURN ledger_ok(jsonb_build_object('hold_id', (v.hold).id, 'released_micro', (v.hold).amount - (v.hold).charged,
                                        'charged_micro', (v.hold).charged,
                                        'available_micro', v_account.balance - v_account.held));
END
$$;

CREATE OR REPLACE FUNCTION ledger_expire_holds(p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
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
        FROM (SELECT account_id, sum(amount - charged) AS total FROM holds WHERE id = ANY (v_ids)
              GROUP BY account_id) s
        WHERE a.id = s.account_id;
    UPDATE api_keys k SET held = k.held - s.total
        FROM (SELECT key_id, sum(amount - charged) AS total FROM holds WHERE id = ANY (v_ids) AND key_id IS NOT NULL
              GROUP BY key_id) s
        WHERE k.id = s.key_id;
    RETURN array_length(v_ids, 1);
END
$$;

-- ledger.charge {hold_id, charges: [{amount_micro, ref}]}: charges drawn from
-- an open hold in one transfer (the account pays, revenue receives), one row
-- each. All or nothing: a hold that is not open, past its expiry, or whose
-- uncharged rest is smaller than their sum is refused and nothing changes.
CREATE FUNCTION ledger_charge(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_items jsonb := p_args -> 'charges';
    v_total bigint;
    v_sum numeric;
    v_count integer;
    v_transfer bigint;
    v_first bigint;
    v_account accounts;
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
        FROM jsonb_array_elements(v_items) WITH ORDINALITY x(e, n) ORDER BY n
        RETURNING id)
    SELECT min(id) INTO v_first FROM rows;
    SELECT * INTO v_account FROM accounts WHERE id = (v.hold).account_id;
    RETURN ledger_ok(jsonb_build_object(
        'hold_id', (v.hold).id, 'charged_micro', v_total, 'charges', v_count, 'first_charge_id', v_first,
        'hold_charged_micro', (v.hold).charged + v_total,
        'uncharged_micro', (v.hold).amount - (v.hold).charged - v_total, 'transfer_id', v_transfer,
        'balance_micro', v_account.balance));
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

-- ledger.charges {account_id[, hold_id, before_id, limit]}: the account's
-- charges, newest first.
CREATE FUNCTION ledger_read_charges(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit integer := least(greatest(coalesce(ledger_id(p_args, 'limit'), 100), 1), 1000);
    v_items jsonb;
    v_cursor bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM accounts WHERE id = ledger_id(p_args, 'account_id')) THEN
        RETURN ledger_err('account_not_found', 'no account ' || coalesce(p_args ->> 'account_id', 'null'));
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'charge_id', c.id, 'hold_id', c.hold_id, 'key_id', c.key_id, 'amount_micro', c.amount,
               'ref', c.ref, 'transfer_id', c.transfer_id, 'at_ms', ledger_ms(c.created_at)) ORDER BY c.id DESC), '[]'),
           min(c.id)
    INTO v_items, v_cursor
    FROM (SELECT * FROM charges
          WHERE account_id = ledger_id(p_args, 'account_id')
            AND (ledger_id(p_args, 'hold_id') IS NULL OR hold_id = ledger_id(p_args, 'hold_id'))
            AND (ledger_id(p_args, 'before_id') IS NULL OR id < ledger_id(p_args, 'before_id'))
          ORDER BY id DESC LIMIT v_limit) c;
    RETURN ledger_ok(jsonb_build_object('charges', v_items,
        'next_before_id', CASE WHEN jsonb_array_length(v_items) = v_limit THEN v_cursor END));
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
    RETURN ledger_read(p_method, p_args);
END
$$;

-- The audit, with holds' charges counted: open holds reserve amount - charged,
-- a key has spent what its holds charged and committed, and a hold's charges
-- and final commit match their postings.
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
          LEFT JOIN (SELECT account_id, sum(amount - charged) AS total FROM holds WHERE state = 'open'
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
          LEFT JOIN (SELECT key_id, sum(amount - charged) FILTER (WHERE state = 'open') AS held,
                            sum(CASE WHEN state = 'committed' THEN committed ELSE charged END) AS spent
                     FROM holds WHERE key_id IS NOT NULL GROUP BY key_id) s ON s.key_id = k.id
          WHERE k.held <> coalesce(s.held, 0) OR k.spent <> coalesce(s.spent, 0) LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'key_totals_equal_holds', 'ok', v_bad = 0, 'detail', v_detail);

    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('hold_id', id)), '[]')
    INTO v_bad, v_detail
    FROM (SELECT h.id FROM holds h LEFT JOIN postings p ON p.transfer_id = h.transfer_id AND p.account_id = h.account_id
          WHERE h.state = 'committed' AND coalesce(-p.amount, 0) <> h.committed - h.charged LIMIT 20) x;
    v_checks := v_checks || jsonb_build_object('name', 'commits_match_postings', 'ok', v_bad = 0, 'detail', v_detail);

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
                                             'caller_balances_micro', (SELECT coalesce(sum(balance), 0) FROM accounts
                                                                       WHERE kind = 'caller')))));
END
$$;
