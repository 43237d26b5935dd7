-- 0007_lighter_charges: the same rules with less work per durable write.
--
-- A prepaid call's charge is the ledger's hottest write (one row per served
-- call, written in batches by the edges' slices), so its cost per row and per
-- batch is trimmed here without changing what is recorded or allowed:
--
-- * A charge's account_id and key_id are copies of its hold's, and its
--   transfer_id the hold commit transfer written just before it, in the same
--   function and transaction, under the hold's row lock. Their foreign keys
--   cost three lookups per served call and prove nothing the hold does not:
--   they go, the hold_id foreign key stays, and the audit checks that every
--   charge matches its hold (charges_follow_their_holds) and, as before, that
--   charges match their transfer's postings (charges_match_postings).
-- * ledger_ok and ledger_err are STABLE (jsonb_build_object is), so the
--   planner inlines them instead of running a SQL function per answer.
-- * ledger_charge checks and adds up its items in one pass, and skips the
--   idempotent-call loops when no item names a call.

ALTER TABLE charges DROP CONSTRAINT charges_account_id_fkey,
                    DROP CONSTRAINT charges_key_id_fkey,
                    DROP CONSTRAINT charges_transfer_id_fkey;

ALTER FUNCTION ledger_ok(jsonb) STABLE;
ALTER FUNCTION ledger_err(text, text, jsonb) STABLE;

CREATE OR REPLACE FUNCTION ledger_charge(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_items jsonb := p_args -> 'charges';
    v_total bigint;
    v_sum numeric;
    v_count integer;
    v_bad boolean;
    v_calls integer;
    v_transfer bigint;
    v_first bigint;
    v_id bigint;
    v_call calls;
    v_kept integer := 0;
    v_balance bigint;
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
    IF v_calls > 0 THEN
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
    END IF;
    SELECT balance INTO v_balance FROM accounts WHERE id = (v.hold).account_id;
    RETURN ledger_ok(jsonb_build_object(
        'hold_id', (v.hold).id, 'charged_micro', v_total, 'charges', v_count, 'first_charge_id', v_first,
        'hold_charged_micro', (v.hold).charged + v_total,
        'uncharged_micro', (v.hold).amount - (v.hold).charged - v_total, 'transfer_id', v_transfer,
        'balance_micro', v_balance, 'calls_resolved', v_kept));
END
$$;

-- Every charge belongs to its hold's account and key, and a paid charge to a
-- transfer that exists.
CREATE FUNCTION ledger_audit_charges() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('name', 'charges_follow_their_holds', 'ok', count(*) = 0,
                              'detail', coalesce(jsonb_agg(x.id), '[]'))
    FROM (SELECT c.id FROM charges c JOIN holds h ON h.id = c.hold_id
          LEFT JOIN transfers t ON t.id = c.transfer_id
          WHERE c.account_id <> h.account_id OR c.key_id IS DISTINCT FROM h.key_id
             OR (c.transfer_id IS NOT NULL AND t.id IS NULL)
          LIMIT 20) x
$$;

-- The audit with the settlement and charge checks added.
CREATE OR REPLACE FUNCTION ledger_audit_all() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb := ledger_audit();
    v_extra jsonb;
BEGIN
    FOREACH v_extra IN ARRAY ARRAY[ledger_audit_settlements(), ledger_audit_charges()] LOOP
        v_result := jsonb_set(v_result, '{body,checks}', (v_result -> 'body' -> 'checks') || v_extra);
        IF NOT (v_extra ->> 'ok')::boolean THEN
            v_result := jsonb_set(v_result, '{body,ok}', 'false');
        END IF;
    END LOOP;
    RETURN v_result;
END
$$;
