-- 0032_watch_cursor_start: a chain-watcher records where it starts.
--
-- A watcher on a network the ledger has no cursor for starts at the confirmed
-- head (FAREBOX_EVM_START_BLOCK=latest) or a configured block, and that start
-- reached the ledger only with its first scanned range. A watcher restarted
-- before that range went through (eth_getLogs refused by the endpoint, the
-- ledger down) started again at the new head: the blocks between, and the
-- deposits in them, were never scanned. Now the start is written first, with
-- ledger.advance_cursor's start flag: it sets the cursor only where there is
-- none, and answers the cursor there is, which the watcher then starts from —
-- so replicas starting together on a new network all start where the first
-- one to write did.
ALTER FUNCTION ledger_advance_cursor(jsonb) RENAME TO ledger_advance_cursor_0031;
CREATE FUNCTION ledger_advance_cursor(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_row watch_cursors;
BEGIN
    IF NOT coalesce((p_args ->> 'start')::boolean, false) THEN
        RETURN ledger_advance_cursor_0031(p_args);
    END IF;
    -- replicas starting together: the first to write sets it, the others read it
    PERFORM pg_advisory_xact_lock(hashtext('farebox.watch_cursor:' || coalesce(p_args ->> 'network', '')));
    SELECT * INTO v_row FROM watch_cursors WHERE network = p_args ->> 'network';
    IF v_row.network IS NOT NULL THEN
        RETURN ledger_ok(jsonb_build_object('network', v_row.network, 'block', v_row.block, 'hash', v_row.hash,
                                            'updated_at_ms', ledger_ms(v_row.updated_at)));
    END IF;
    RETURN ledger_advance_cursor_0031(p_args - 'start');
END
$$;
