-- 0016_advance_refusals: a refused ledger.topup_advance is answered with its
-- refusal.
--
-- ledger_advance_answer read the account named in the answer's body; a
-- refusal from ledger_credit (no such account, the source credited with other
-- fields, a bad amount or source) has none, so the function gave NULL and the
-- ledger answered "internal" — which a caller must take as an unknown outcome
-- and retry until its deadline, though nothing had changed. The answer is now
-- the refusal itself.
CREATE OR REPLACE FUNCTION ledger_advance_answer(p_result jsonb, s settlements) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_result ->> 'status' <> 'ok' OR s.id IS NULL OR a.id IS NULL THEN p_result
                ELSE jsonb_set(p_result, '{body}', (p_result -> 'body') || jsonb_build_object(
                    'settlement_id', s.id, 'settlement_state', s.state,
                    'advance', (SELECT ledger_advance_view(v) FROM topup_advances v WHERE v.settlement_id = s.id),
                    'balance_micro', a.balance - ledger_pending(a.id), 'available_micro', a.balance - a.held))
           END
    FROM (SELECT 1) AS one
    LEFT JOIN accounts a ON a.id = (p_result -> 'body' ->> 'account_id')::bigint
$$;
