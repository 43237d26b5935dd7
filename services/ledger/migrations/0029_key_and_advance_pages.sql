-- 0029_key_and_advance_pages: an account's keys and topup advances in pages.
--
-- ledger.keys answered every key of the account in one answer: an account
-- minting a key per customer or per deployment grows it past any RPC frame.
-- ledger.advances answered the newest 100 and no way to the older ones. Both
-- now take a limit (1..1000, 100 by default) and a cursor, and say where the
-- next page starts, as ledger.history and ledger.holds do:
--   ledger.keys      oldest first, after_id  -> next_after_id
--   ledger.advances  newest first, before_id -> next_before_id
-- The cursor is null on the last page (a full page may be followed by an
-- empty one).
CREATE INDEX api_keys_by_account_id ON api_keys (account_id, id);
DROP INDEX api_keys_by_account;
CREATE INDEX topup_advances_by_account_credit ON topup_advances (account_id, credit_id);

CREATE FUNCTION ledger_read_keys(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_account bigint := ledger_id(p_args, 'account_id');
    v_limit integer := least(greatest(coalesce(ledger_id(p_args, 'limit'), 100), 1), 1000);
    v_items jsonb;
    v_last bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM accounts WHERE id = v_account) THEN
        RETURN ledger_err('account_not_found', 'no account ' || coalesce(p_args ->> 'account_id', 'null'));
    END IF;
    SELECT coalesce(jsonb_agg(ledger_key_view(k) ORDER BY k.id), '[]'), max(k.id) INTO v_items, v_last
    FROM (SELECT * FROM api_keys
          WHERE account_id = v_account AND (ledger_id(p_args, 'after_id') IS NULL OR id > ledger_id(p_args, 'after_id'))
          ORDER BY id LIMIT v_limit) k;
    RETURN ledger_ok(jsonb_build_object('keys', v_items,
        'next_after_id', CASE WHEN jsonb_array_length(v_items) = v_limit THEN v_last END));
END
$$;

CREATE OR REPLACE FUNCTION ledger_read_advances(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_account bigint := ledger_id(p_args, 'account_id');
    v_limit integer := least(greatest(coalesce(ledger_id(p_args, 'limit'), 100), 1), 1000);
    v_items jsonb;
    v_first bigint;
BEGIN
    IF v_account IS NULL THEN
        RETURN ledger_err('bad_request', 'account_id must be a positive integer');
    END IF;
    SELECT coalesce(jsonb_agg(ledger_advance_view(v) ORDER BY v.credit_id DESC), '[]'), min(v.credit_id)
    INTO v_items, v_first
    FROM (SELECT * FROM topup_advances
          WHERE account_id = v_account
            AND (ledger_id(p_args, 'before_id') IS NULL OR credit_id < ledger_id(p_args, 'before_id'))
          ORDER BY credit_id DESC LIMIT v_limit) v;
    RETURN ledger_ok(jsonb_build_object('advances', v_items,
        'next_before_id', CASE WHEN jsonb_array_length(v_items) = v_limit THEN v_first END));
END
$$;

ALTER FUNCTION ledger_read_dispatch(text, jsonb) RENAME TO ledger_read_dispatch_0028;
CREATE FUNCTION ledger_read_dispatch(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_method = 'ledger.keys' THEN
        RETURN ledger_read_keys(p_args);
    END IF;
    RETURN ledger_read_dispatch_0028(p_method, p_args);
END
$$;
