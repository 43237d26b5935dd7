-- 0031_deposit_reinclusion: a deposit transaction is credited from one block.
--
-- An EVM deposit's source is (chain, transaction, log index), and a log's
-- index counts the logs of its block. A reorg deeper than the watcher's
-- confirmations that drops a credited transaction, which is then mined again
-- in another block, gives its transfer another log index: a new source, and
-- it was credited a second time (a review reproduced it on anvil).
--
-- The chain-watcher sends the block's hash with each deposit. A deposit whose
-- exact source was not credited, but whose transaction was credited from
-- another block, is now refused (idempotency_conflict, which the watcher
-- counts and passes): a transaction executes in one block, so all its
-- transfers were credited from the first one it was seen in. Credits without
-- a block hash (Solana's, topups, adjustments) are as before.
ALTER FUNCTION ledger_credit(jsonb) RENAME TO ledger_credit_0030;
CREATE FUNCTION ledger_credit(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_src jsonb := p_args -> 'source';
    v_hash text := coalesce(p_args -> 'source' ->> 'block_hash', '');
    v_other credits;
BEGIN
    IF p_args ->> 'kind' IS NOT DISTINCT FROM 'deposit' AND v_hash <> '' AND jsonb_typeof(v_src) = 'object'
       AND NOT EXISTS (SELECT 1 FROM credits WHERE source_chain = v_src ->> 'chain' AND source_tx = v_src ->> 'tx'
                                                AND source_index = v_src ->> 'index') THEN
        SELECT * INTO v_other FROM credits
            WHERE source_chain = v_src ->> 'chain' AND source_tx = v_src ->> 'tx' AND kind = 'deposit'
              AND block_hash <> '' AND block_hash <> v_hash
            LIMIT 1;
        IF v_other.id IS NOT NULL THEN
            RETURN ledger_err('idempotency_conflict', 'transaction ' || (v_src ->> 'tx') || ' was credited from block '
                              || v_other.block_hash || ', not ' || v_hash || ' (mined again after a reorg): once',
                              jsonb_build_object('credit_id', v_other.id));
        END IF;
    END IF;
    RETURN ledger_credit_0030(p_args);
END
$$;
