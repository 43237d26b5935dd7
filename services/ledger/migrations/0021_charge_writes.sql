-- 0021_charge_writes: a charge write's charges stored in one row.
--
-- Under load a prepaid slice's charge write carries the charges of many
-- calls (~26 at the edge benchmark's HTTP/1.1 peak). Each was a row of
-- charges with three index entries (its id, its account, its hold), and those
-- rows were most of the write's Postgres work. Counted with callgrind (a
-- loop of ledger_charge_write calls in a single-user Postgres, instructions
-- per write): 28 charges 1,874k as rows against 1,004k as one row (-46%),
-- one charge 545k against 534-541k.
--
-- charge_writes holds one row per write: its hold, account and key, the
-- amounts and refs in the order they were sent, and first_id. Charge n
-- (1-based) of a write has id first_id + n - 1. first_id comes from
-- charge_ids, which steps by 1000, the most charges one ledger.charge takes:
-- a write's ids never meet another's, and the write holding charge id c is
-- the one whose first_id is c - c % 1000. The ids stay what they were to
-- callers: whole numbers, unique, growing with each write (with gaps).
--
-- Charges written before this migration stay rows, in charge_rows (renamed
-- from charges), which takes no new rows. The view charges shows both, as
-- before: every reader of charges (the audits, ledger.charges) reads the
-- same columns. Charges of a call (x402 calls with a stored answer) are in
-- charge_writes too, their call's charge_id naming them; calls.charge_id's
-- foreign key, which a view cannot be the target of, becomes an audit check.
ALTER TABLE charges RENAME TO charge_rows;
CREATE TRIGGER charge_rows_closed BEFORE INSERT ON charge_rows
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
ALTER TABLE calls DROP CONSTRAINT calls_charge_id_fkey;

CREATE SEQUENCE charge_ids INCREMENT BY 1000 MINVALUE 1000;
DO $$
BEGIN
    PERFORM setval('charge_ids', (coalesce((SELECT max(id) FROM charge_rows), 0) / 1000 + 1) * 1000, false);
END
$$;

-- The shape rules as one function call: Postgres 15 rebuilds a table's CHECK
-- expressions from their stored text on every statement that writes it
-- (0013), and these rules written out in the CHECK cost a one-charge write
-- more instructions (~190k) than the rest of its INSERT.
CREATE FUNCTION ledger_charge_write_shape(p_first bigint, p_amounts bigint[], p_refs text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN p_first > 0 AND p_first % 1000 = 0
       AND array_ndims(p_amounts) = 1 AND cardinality(p_amounts) BETWEEN 1 AND 1000
       AND array_ndims(p_refs) = 1 AND cardinality(p_refs) = cardinality(p_amounts)
       AND 0 <= ALL (p_amounts) AND array_position(p_amounts, NULL) IS NULL AND array_position(p_refs, NULL) IS NULL;
END
$$;
CREATE TABLE charge_writes (
    first_id   bigint      PRIMARY KEY,
    hold_id    bigint      NOT NULL,
    account_id bigint      NOT NULL,
    key_id     bigint,
    amounts    bigint[]    NOT NULL,
    refs       text[]      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT charge_writes_shape CHECK (ledger_charge_write_shape(first_id, amounts, refs))
);
CREATE INDEX charge_writes_by_account ON charge_writes (account_id, first_id);
CREATE INDEX charge_writes_by_hold ON charge_writes (hold_id);
CREATE TRIGGER charge_writes_immutable BEFORE UPDATE OR DELETE ON charge_writes
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER charge_writes_no_truncate BEFORE TRUNCATE ON charge_writes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
-- like operations (0013): only ever read by key or summed
ALTER TABLE charge_writes ALTER COLUMN amounts SET STATISTICS 0, ALTER COLUMN refs SET STATISTICS 0;

CREATE VIEW charges AS
    SELECT id, hold_id, account_id, key_id, amount, ref, transfer_id, created_at FROM charge_rows
    UNION ALL
    SELECT w.first_id + x.n - 1, w.hold_id, w.account_id, w.key_id, x.amount, x.ref, NULL::bigint, w.created_at
    FROM charge_writes w CROSS JOIN LATERAL unnest(w.amounts, w.refs) WITH ORDINALITY AS x(amount, ref, n);

-- One write's charges, in order, as one row of charge_writes; its first id.
CREATE FUNCTION ledger_charge_insert(h holds, p_amounts bigint[], p_refs text[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_first bigint := nextval('charge_ids');
BEGIN
    INSERT INTO charge_writes (first_id, hold_id, account_id, key_id, amounts, refs)
        VALUES (v_first, h.id, h.account_id, h.key_id, p_amounts, p_refs);
    RETURN v_first;
END
$$;

-- 0013's plain charge write: the charges read once (sum, checks and the two
-- arrays in one pass), one row added.
CREATE OR REPLACE FUNCTION ledger_charge_write(p_idem text, p_fingerprint bytea, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_items jsonb := p_args -> 'charges';
    v_hold_id bigint;
    v_count integer;
    v_sum numeric;
    v_bad boolean;
    v_amounts numeric[];
    v_refs text[];
    v_first bigint;
    v_result jsonb;
    h holds;
BEGIN
    IF p_idem IS NULL OR jsonb_typeof(v_items) IS DISTINCT FROM 'array'
       OR jsonb_array_length(v_items) NOT BETWEEN 1 AND 1000
       OR jsonb_path_exists(v_items,
              '$[*] ? (@.type() != "object" || exists (@.call) || @.amount_micro.type() != "number")') THEN
        RETURN ledger_apply('ledger.charge', p_idem, p_fingerprint, p_args);
    END IF;
    v_hold_id := ledger_id(p_args, 'hold_id');
    PERFORM 1 FROM operations WHERE idem_key = p_idem;
    IF FOUND OR v_hold_id IS NULL THEN
        RETURN ledger_apply('ledger.charge', p_idem, p_fingerprint, p_args);
    END IF;
    SELECT count(*), sum(x.amount_micro),
           bool_or(x.amount_micro IS NULL OR x.amount_micro < 0 OR x.amount_micro <> trunc(x.amount_micro)),
           array_agg(x.amount_micro ORDER BY x.n), array_agg(left(coalesce(x.ref, ''), 100) ORDER BY x.n)
        INTO v_count, v_sum, v_bad, v_amounts, v_refs
        FROM ROWS FROM (jsonb_to_recordset(v_items) AS (amount_micro numeric, ref text)) WITH ORDINALITY
             AS x(amount_micro, ref, n);
    IF v_bad OR v_sum > ledger_max_amount() THEN
        RETURN ledger_apply('ledger.charge', p_idem, p_fingerprint, p_args);
    END IF;
    UPDATE holds SET charged = charged + v_sum::bigint
        WHERE id = v_hold_id AND state = 'open' AND expires_at > now() AND amount - charged >= v_sum
        RETURNING * INTO h;
    IF h.id IS NULL THEN
        RETURN ledger_apply('ledger.charge', p_idem, p_fingerprint, p_args);
    END IF;
    v_first := ledger_charge_insert(h, v_amounts::bigint[], v_refs);
    v_result := ledger_ok(jsonb_build_object(
        'hold_id', h.id, 'charged_micro', v_sum::bigint, 'charges', v_count, 'first_charge_id', v_first,
        'hold_charged_micro', h.charged, 'uncharged_micro', h.amount - h.charged, 'calls_resolved', 0));
    INSERT INTO operations (idem_key, method, fingerprint, result)
        VALUES (p_idem, 'ledger.charge', p_fingerprint, v_result)
        ON CONFLICT (idem_key) DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ledger.charge %: the same idempotency key was written at the same time', p_idem
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN v_result;
END
$$;

-- ledger.charge through ledger_apply (charges with a call, and every write
-- ledger_charge_write hands on): the same checks and answers as 0009's, the
-- charges in one row, in the order sent; a call's charge is the one at its
-- place in the list.
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
    v_call calls;
    v_kept integer := 0;
    v_item jsonb;
    v_n bigint;
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
    v_first := ledger_charge_insert(h,
        ARRAY(SELECT (e ->> 'amount_micro')::bigint FROM jsonb_array_elements(v_items) WITH ORDINALITY x(e, n)
              ORDER BY n),
        ARRAY(SELECT left(coalesce(e ->> 'ref', ''), 100) FROM jsonb_array_elements(v_items) WITH ORDINALITY x(e, n)
              ORDER BY n));
    -- calls with a name: each done (or released) with its charge
    IF v_calls > 0 THEN
        FOR v_item, v_n IN SELECT e, n FROM jsonb_array_elements(v_items) WITH ORDINALITY x(e, n)
                           WHERE e ? 'call' ORDER BY n LOOP
            v_call := ledger_claimed_call(v_item -> 'call');
            IF v_call.scope IS NULL THEN
                CONTINUE; -- the claim was lost: charged (it was served), nothing stored
            END IF;
            IF (v_item -> 'call') ? 'status' THEN
                UPDATE calls SET state = 'done', charge_id = v_first + v_n - 1,
                       status = (v_item -> 'call' ->> 'status')::integer,
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

-- ledger.charges, newest first: the rows before 0021 and the writes after it,
-- each side read through its account index and cut at the page size (every
-- write holds at least one charge, so a page's worth of writes is enough).
CREATE OR REPLACE FUNCTION ledger_read_charges(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit integer := least(greatest(coalesce(ledger_id(p_args, 'limit'), 100), 1), 1000);
    v_account bigint := ledger_id(p_args, 'account_id');
    v_hold bigint := ledger_id(p_args, 'hold_id');
    v_before bigint := ledger_id(p_args, 'before_id');
    v_items jsonb;
    v_cursor bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM accounts WHERE id = v_account) THEN
        RETURN ledger_err('account_not_found', 'no account ' || coalesce(p_args ->> 'account_id', 'null'));
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'charge_id', c.id, 'hold_id', c.hold_id, 'key_id', c.key_id, 'amount_micro', c.amount,
               'ref', c.ref, 'transfer_id', c.transfer_id, 'at_ms', ledger_ms(c.created_at)) ORDER BY c.id DESC), '[]'),
           min(c.id)
    INTO v_items, v_cursor
    FROM (SELECT * FROM (
              (SELECT r.id, r.hold_id, r.key_id, r.amount, r.ref, r.transfer_id, r.created_at FROM charge_rows r
               WHERE r.account_id = v_account AND (v_hold IS NULL OR r.hold_id = v_hold)
                 AND (v_before IS NULL OR r.id < v_before)
               ORDER BY r.id DESC LIMIT v_limit)
              UNION ALL
              (SELECT w.first_id + x.n - 1, w.hold_id, w.key_id, x.amount, x.ref, NULL::bigint, w.created_at
               FROM (SELECT * FROM charge_writes
                     WHERE account_id = v_account AND (v_hold IS NULL OR hold_id = v_hold)
                       AND (v_before IS NULL OR first_id < v_before)
                     ORDER BY first_id DESC LIMIT v_limit) w
               CROSS JOIN LATERAL unnest(w.amounts, w.refs) WITH ORDINALITY AS x(amount, ref, n)
               WHERE v_before IS NULL OR w.first_id + x.n - 1 < v_before)) a
          ORDER BY a.id DESC LIMIT v_limit) c;
    RETURN ledger_ok(jsonb_build_object('charges', v_items,
        'next_before_id', CASE WHEN jsonb_array_length(v_items) = v_limit THEN v_cursor END));
END
$$;

-- What calls.charge_id's foreign key promised: a done call names a charge
-- that exists.
CREATE FUNCTION ledger_audit_call_charges() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('name', 'calls_name_their_charges', 'ok', count(*) = 0,
                              'detail', coalesce(jsonb_agg(jsonb_build_object('scope', x.scope, 'idem_key', x.idem_key,
                                                                              'charge_id', x.charge_id)), '[]'))
    FROM (SELECT c.scope, c.idem_key, c.charge_id FROM calls c
          WHERE c.charge_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM charge_rows r WHERE r.id = c.charge_id)
            AND NOT EXISTS (SELECT 1 FROM charge_writes w
                            WHERE w.first_id = c.charge_id - c.charge_id % 1000
                              AND c.charge_id % 1000 < cardinality(w.amounts))
          LIMIT 20) x
$$;

CREATE OR REPLACE FUNCTION ledger_audit_all() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb := ledger_audit();
    v_extra jsonb;
BEGIN
    FOREACH v_extra IN ARRAY ARRAY[ledger_audit_settlements(), ledger_audit_charges(), ledger_audit_advances(),
                                   ledger_audit_call_charges()] LOOP
        v_result := jsonb_set(v_result, '{body,checks}', (v_result -> 'body' -> 'checks') || v_extra);
        IF NOT (v_extra ->> 'ok')::boolean THEN
            v_result := jsonb_set(v_result, '{body,ok}', 'false');
        END IF;
    END LOOP;
    RETURN v_result;
END
$$;
