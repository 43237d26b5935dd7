-- 0028_cursor_block_zero: a chain-watcher's cursor may be block 0.
--
-- ledger.advance_cursor read its block with ledger_id, which takes ids (1 or
-- more): block 0 came back as bad_request, though the message, the table's
-- CHECK and the RPC's field allow it. A watcher started at the genesis block
-- (FAREBOX_EVM_START_BLOCK=0) whose first range ended at block 0 (a range of
-- one block, or a new chain whose confirmed head was still 0) could never
-- record it, and asked again for ever. The block is now any integer from 0.
CREATE OR REPLACE FUNCTION ledger_advance_cursor(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_network text := p_args ->> 'network';
    v_block bigint;
    v_n numeric;
    v_row watch_cursors;
BEGIN
    IF jsonb_typeof(p_args -> 'block') = 'number' THEN
        v_n := (p_args -> 'block')::numeric;
        IF v_n = trunc(v_n) AND v_n BETWEEN 0 AND 9223372036854775807 THEN
            v_block := v_n::bigint;
        END IF;
    END IF;
    IF v_network IS NULL OR length(v_network) NOT BETWEEN 3 AND 100 OR v_block IS NULL THEN
        RETURN ledger_err('bad_request', 'network and a block number of 0 or more are required');
    END IF;
    INSERT INTO watch_cursors AS c (network, block, hash) VALUES (v_network, v_block, coalesce(p_args ->> 'hash', ''))
        ON CONFLICT (network) DO UPDATE SET block = EXCLUDED.block, hash = EXCLUDED.hash, updated_at = now()
        WHERE c.block < EXCLUDED.block;
    SELECT * INTO v_row FROM watch_cursors WHERE network = v_network;
    RETURN ledger_ok(jsonb_build_object('network', v_row.network, 'block', v_row.block, 'hash', v_row.hash,
                                        'updated_at_ms', ledger_ms(v_row.updated_at)));
END
$$;
