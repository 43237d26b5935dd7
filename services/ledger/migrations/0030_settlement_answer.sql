-- 0030_settlement_answer: a facilitator's settlement is answered "success"
-- once, whichever settle asks for it.
--
-- The facilitator API answers a payment's success to one settle only (five
-- copies of a payment presented to a resource server: one served). Until now
-- that one was the settle that began the settlement; a later one was told
-- duplicate_settlement. But a settle that begins a settlement may have to
-- answer settlement_pending (no receipt within the wait), and the official
-- x402 resource server then asks settle again for the same payment, expecting
-- the broadcast transaction's outcome: it was told duplicate_settlement, did
-- not serve, and the payer's transfer was mined all the same.
--
-- Now a settlement begun by such a settle (settlement_begin's answer_once) owes
-- one success answer (answer_owed), and ledger.settlement_answer takes it, once,
-- when the settlement is confirmed: the settle that takes it answers success,
-- any other duplicate_settlement. A settle answered pending leaves it owed for
-- the next. Settlements begun before this migration, and those begun by the
-- edge's own x402 calls (whose authorization is recorded when verified), owe
-- none.
ALTER TABLE settlements ADD COLUMN answer_owed boolean NOT NULL DEFAULT false;

ALTER FUNCTION ledger_settlement_begin(jsonb) RENAME TO ledger_settlement_begin_0029;
CREATE FUNCTION ledger_settlement_begin(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb := ledger_settlement_begin_0029(p_args);
BEGIN
    IF coalesce((p_args ->> 'answer_once')::boolean, false) AND v_result ->> 'status' = 'ok'
       AND (v_result -> 'body' ->> 'created')::boolean THEN
        UPDATE settlements SET answer_owed = true WHERE id = (v_result -> 'body' ->> 'settlement_id')::bigint;
    END IF;
    RETURN v_result;
END
$$;

-- settlement_answer: {settlement_id} -> {claimed}: true for the one caller
-- that takes a confirmed settlement's owed answer, false for every other.
CREATE FUNCTION ledger_settlement_answer(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint := ledger_id(p_args, 'settlement_id');
    v_state text;
BEGIN
    IF v_id IS NULL THEN
        RETURN ledger_err('bad_request', 'settlement_id must be a positive integer');
    END IF;
    UPDATE settlements SET answer_owed = false WHERE id = v_id AND answer_owed AND state = 'confirmed';
    IF FOUND THEN
        RETURN ledger_ok(jsonb_build_object('settlement_id', v_id, 'claimed', true));
    END IF;
    SELECT state INTO v_state FROM settlements WHERE id = v_id;
    IF v_state IS NULL THEN
        RETURN ledger_err('settlement_not_found', 'no settlement ' || v_id);
    END IF;
    RETURN ledger_ok(jsonb_build_object('settlement_id', v_id, 'claimed', false, 'state', v_state));
END
$$;

CREATE OR REPLACE FUNCTION ledger_write_more(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN CASE p_method
        WHEN 'ledger.topup_advance' THEN ledger_topup_advance(p_args)
        WHEN 'ledger.settlement_renonce' THEN ledger_settlement_renonce(p_args)
        WHEN 'ledger.settlement_answer' THEN ledger_settlement_answer(p_args)
        ELSE ledger_err('unknown_method', 'the ledger has no write operation ' || p_method)
    END;
END
$$;
