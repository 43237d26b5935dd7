-- 0025_open_settlements_order: the open settlements a tracker asks for come
-- lowest wallet nonce first, those it cannot act on last.
--
-- ledger.open_settlements listed the open settlements not touched for a while,
-- oldest update first, up to a limit (the trackers ask for 20). Whatever a
-- tracker does to a settlement (signing it again with a higher tip, a new
-- nonce) updates it, which sent it to the back of that list: behind 20 or
-- more settlements queued after it on the same wallet (never touched: none of
-- them can be mined before it), the settlement at the head of the wallet's
-- nonces was never listed again, never re-priced or sent again, and every
-- later settlement of the wallet waited behind it. On Solana, settlements
-- begun and never signed (a replica stopped in between: nothing was sent)
-- stay open untouched, and twenty of them hid every other one.
-- Now EVM settlements come by wallet nonce, so a wallet's head is always
-- among the first; Solana ones (no nonce) by their last update; settlements
-- begun with no transaction recorded and no nonce (Solana's unsigned ones)
-- last.
CREATE OR REPLACE FUNCTION ledger_read_settlements(p_method text, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
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
    -- open settlements not touched for older_than_ms, in the order above
    SELECT coalesce(jsonb_agg(ledger_settlement_view(s)
                              ORDER BY (s.raw_tx IS NULL AND s.nonce IS NULL), s.nonce NULLS LAST, s.updated_at),
                    '[]')
        INTO v_items
    FROM (SELECT * FROM settlements
          WHERE state IN ('begun', 'signed') AND (p_args ->> 'network' IS NULL OR network = p_args ->> 'network')
            AND updated_at < now() - coalesce(ledger_amount(p_args, 'older_than_ms'), 0) * interval '1 millisecond'
          ORDER BY (raw_tx IS NULL AND nonce IS NULL), nonce NULLS LAST, updated_at
          LIMIT least(greatest(coalesce(ledger_id(p_args, 'limit'), 50), 1), 500)) s;
    RETURN ledger_ok(jsonb_build_object('settlements', v_items));
END
$$;
