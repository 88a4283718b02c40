-- A month's partition takes over the month's rows from the default partition.
--
-- Events whose month had no partition yet (a runtime clock ahead by more than three months, a
-- far backfill) land in the default partition. Until now their month could never get its own
-- partition afterwards (the default partition already held rows of it), so every later event of
-- that month went to the default partition too. Now the partition is made as a table of its own,
-- the month's rows move into it, and it is attached, all in one transaction. Their rollups
-- already count them: the rollup trigger fires on inserts into usage_events, not into a table
-- being prepared. The default partition is locked first, so no row of the month reaches it
-- between the check and the attach; only inserts routed there (far-off timestamps) wait.
CREATE OR REPLACE FUNCTION usage_events_add_partition(moment TIMESTAMPTZ) RETURNS BOOLEAN
LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    lo   TIMESTAMPTZ := date_trunc('month', moment);
    hi   TIMESTAMPTZ := date_trunc('month', moment) + INTERVAL '1 month';
    name TEXT := 'usage_events_p' || to_char(date_trunc('month', moment), 'YYYYMM');
BEGIN
    IF lo < date_trunc('month', now()) - INTERVAL '2 years' OR lo >= now() + INTERVAL '3 months' THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('usage_events_add_partition'));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN true;
    END IF;
    LOCK TABLE usage_events_default IN SHARE ROW EXCLUSIVE MODE;
    IF NOT EXISTS (SELECT 1 FROM usage_events_default WHERE occurred_at >= lo AND occurred_at < hi) THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
        RETURN true;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format(
        'WITH moved AS (DELETE FROM usage_events_default WHERE occurred_at >= %L AND occurred_at < %L'
        ' RETURNING *) INSERT INTO %I SELECT * FROM moved', lo, hi, name);
    EXECUTE format('ALTER TABLE usage_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    RETURN true;
EXCEPTION WHEN check_violation THEN  -- not expected with the lock above; leaves things as they were
    RETURN false;
END $$;
