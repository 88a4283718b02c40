-- Analytics at scale: usage events in monthly range partitions, their idempotency in a narrow
-- table of their own, and rollups that a trigger keeps in the inserting statement's transaction.
-- Existing usage events move into the new store (and its rollups) here.

-- Idempotency. A unique constraint on a partitioned table must include the partition key, and
-- one LLM call may arrive twice with different timestamps (the sidecar's usage report and an
-- analytics event from the SDK), so (agent_id, event_id) is made unique here instead: an event
-- is new iff its row can be inserted. Narrow on purpose: one index entry per event.
-- No foreign keys on the event store: agents and leases are never deleted (agents are only
-- marked deleted), and every writer holds the agent's row lock while it inserts.
CREATE TABLE usage_event_ids (
    agent_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (agent_id, event_id)
);

ALTER TABLE usage_events RENAME TO usage_events_0001;

-- One row per LLM call, whichever way it arrived first (``source``).
CREATE TABLE usage_events (
    agent_id      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    lease_id      TEXT,                   -- the lease charged; NULL: no open lease, all overdraw
    cost_micros   BIGINT NOT NULL CHECK (cost_micros >= 0),
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    model         TEXT NOT NULL,
    provider      TEXT NOT NULL,          -- the label the runtime reported
    status        TEXT NOT NULL CHECK (status IN ('completed', 'failed')),
    latency_ms    INT,
    error_code    TEXT,
    error_message TEXT,
    source        TEXT NOT NULL CHECK (source IN ('budget', 'analytics')),
    occurred_at   TIMESTAMPTZ NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now()
) PARTITION BY RANGE (occurred_at);
-- Cost and label ride along, so a median over few events reads the index only.
CREATE INDEX usage_events_time ON usage_events (occurred_at) INCLUDE (cost_micros, provider);
CREATE INDEX usage_events_agent_time ON usage_events (agent_id, occurred_at) INCLUDE (cost_micros, provider);
-- Timestamps outside the window below (clock errors, far backfills) land here.
CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;

-- Creates the month's partition (any moment of the month) unless it exists; false when the month
-- is outside [now - 2 years, now + 3 months) or the default partition already holds rows of it
-- (they stay there). The only place partitions are made: by this migration and, ahead of each
-- insert into a month the process has not seen yet, by the ingestion code.
CREATE FUNCTION usage_events_add_partition(moment TIMESTAMPTZ) RETURNS BOOLEAN
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
    IF EXISTS (SELECT 1 FROM usage_events_default WHERE occurred_at >= lo AND occurred_at < hi) THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    RETURN true;
EXCEPTION WHEN check_violation THEN  -- a row reached the default partition meanwhile
    RETURN false;
END $$;

-- Cost histograms, for medians: bin 0 holds cost 0, bin b >= 1 holds [2^((b-1)/8), 2^(b/8))
-- microdollars, so a bin is 9 % wide and its geometric middle is within 4.4 % of any cost in it.
CREATE FUNCTION usage_cost_bin(cost_micros BIGINT) RETURNS SMALLINT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cost_micros <= 0 THEN 0 ELSE 1 + floor(8 * ln(cost_micros::float8) / ln(2.0)) END::smallint
$$;

-- Two sparse histograms (bins ascending, counts) added together.
CREATE FUNCTION usage_hist_merge(
    bins1 SMALLINT[], counts1 BIGINT[], bins2 SMALLINT[], counts2 BIGINT[],
    OUT bins SMALLINT[], OUT counts BIGINT[]
) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(b ORDER BY b), array_agg(n ORDER BY b)
    FROM (
        SELECT b, sum(n)::bigint AS n
        FROM (SELECT * FROM unnest(bins1, counts1) UNION ALL SELECT * FROM unnest(bins2, counts2)) AS u (b, n)
        GROUP BY b
    ) AS merged
$$;

-- Additive figures per grain x scope x bucket x provider x model; the grains nest: hour, day,
-- dekad (days 1-10, 11-20, 21 to the end of the month) and month. ``scope`` is
-- an agent id (the agent's own rows), or '' for the rows of all agents together, striped over 8
-- ``shard``s (by the agent's hash) so that concurrent ingestion of different agents rarely waits on
-- one row. ``provider`` is the reported label in lower case. A query over [from, to) reads whole
-- months, then dekads, days and hours from here and only the sub-hour edges from the events.
CREATE TABLE usage_rollups (
    grain         TEXT NOT NULL CHECK (grain IN ('hour', 'day', 'dekad', 'month')),
    scope         TEXT NOT NULL,
    bucket        TIMESTAMPTZ NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    shard         SMALLINT NOT NULL,
    requests      BIGINT NOT NULL,
    failed        BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_micros   BIGINT NOT NULL,
    cost_min      BIGINT NOT NULL,
    cost_max      BIGINT NOT NULL,
    latency_count BIGINT NOT NULL,
    latency_sum   BIGINT NOT NULL,
    latency_min   INT,
    latency_max   INT,
    last_at       TIMESTAMPTZ NOT NULL,
    cost_bins     SMALLINT[] NOT NULL,
    cost_counts   BIGINT[] NOT NULL,
    PRIMARY KEY (grain, scope, bucket, provider, model, shard)
);
CREATE INDEX usage_rollups_time ON usage_rollups (grain, bucket);
-- Histograms are read only for medians: kept out of line, so scans of the sums read narrow rows.
ALTER TABLE usage_rollups SET (toast_tuple_target = 128);
ALTER TABLE usage_rollups ALTER COLUMN cost_bins SET STORAGE EXTERNAL,
    ALTER COLUMN cost_counts SET STORAGE EXTERNAL;

-- Every insert into usage_events, by whatever path, adds its rows here in the same statement.
-- Rows are upserted in one total order, so concurrent inserts lock shared rows in the same order
-- (no deadlock; writers insert each batch in one statement); bucket before scope, so rows of one
-- time are stored together and a time range reads few pages.
CREATE FUNCTION usage_rollups_add() RETURNS TRIGGER
LANGUAGE plpgsql SET TimeZone = 'UTC' SET work_mem = '64MB' AS $$
BEGIN
    INSERT INTO usage_rollups AS r (
        grain, scope, bucket, provider, model, shard, requests, failed, input_tokens, output_tokens,
        cost_micros, cost_min, cost_max, latency_count, latency_sum, latency_min, latency_max, last_at,
        cost_bins, cost_counts
    )
    SELECT grain, scope, bucket, provider, model, shard, sum(requests), sum(failed), sum(input_tokens),
        sum(output_tokens), sum(cost_micros), min(cost_min), max(cost_max), sum(latency_count),
        sum(latency_sum), min(latency_min), max(latency_max), max(last_at),
        array_agg(bin ORDER BY bin), array_agg(requests ORDER BY bin)
    FROM (
        -- then each grain's bucket, for the agent's own rows and its shard of the all-agent ones
        SELECT g.grain, s.scope, CASE WHEN g.grain = 'dekad'
                THEN date_trunc('month', h.hour)
                    + least(extract(day FROM h.hour)::int - 1, 20) / 10 * INTERVAL '10 days'
                ELSE date_trunc(g.grain, h.hour) END AS bucket,
            h.provider, h.model, s.shard, h.bin, sum(h.requests) AS requests, sum(h.failed) AS failed,
            sum(h.input_tokens) AS input_tokens, sum(h.output_tokens) AS output_tokens,
            sum(h.cost_micros) AS cost_micros, min(h.cost_min) AS cost_min, max(h.cost_max) AS cost_max,
            sum(h.latency_count) AS latency_count, sum(h.latency_sum) AS latency_sum,
            min(h.latency_min) AS latency_min, max(h.latency_max) AS latency_max, max(h.last_at) AS last_at
        FROM (
            -- first per agent, hour, label, model and cost bin: a batch of live calls is a few rows
            SELECT e.agent_id, date_trunc('hour', e.occurred_at) AS hour, lower(e.provider) AS provider,
                e.model, usage_cost_bin(e.cost_micros) AS bin, count(*) AS requests,
                count(*) FILTER (WHERE e.status = 'failed') AS failed, sum(e.input_tokens) AS input_tokens,
                sum(e.output_tokens) AS output_tokens, sum(e.cost_micros) AS cost_micros,
                min(e.cost_micros) AS cost_min, max(e.cost_micros) AS cost_max,
                count(e.latency_ms) AS latency_count, coalesce(sum(e.latency_ms), 0) AS latency_sum,
                min(e.latency_ms) AS latency_min, max(e.latency_ms) AS latency_max,
                max(e.occurred_at) AS last_at
            FROM new_events e
            GROUP BY 1, 2, 3, 4, 5
        ) AS h
        CROSS JOIN (VALUES ('hour'), ('day'), ('dekad'), ('month')) AS g (grain)
        CROSS JOIN LATERAL (VALUES (h.agent_id, 0), ('', hashtext(h.agent_id) & 7)) AS s (scope, shard)
        GROUP BY 1, 2, 3, 4, 5, 6, 7
    ) AS per_bin
    GROUP BY grain, scope, bucket, provider, model, shard
    ORDER BY grain, bucket, scope, provider, model, shard
    ON CONFLICT (grain, scope, bucket, provider, model, shard) DO UPDATE SET
        requests = r.requests + excluded.requests,
        failed = r.failed + excluded.failed,
        input_tokens = r.input_tokens + excluded.input_tokens,
        output_tokens = r.output_tokens + excluded.output_tokens,
        cost_micros = r.cost_micros + excluded.cost_micros,
        cost_min = least(r.cost_min, excluded.cost_min),
        cost_max = greatest(r.cost_max, excluded.cost_max),
        latency_count = r.latency_count + excluded.latency_count,
        latency_sum = r.latency_sum + excluded.latency_sum,
        latency_min = least(r.latency_min, excluded.latency_min),
        latency_max = greatest(r.latency_max, excluded.latency_max),
        last_at = greatest(r.last_at, excluded.last_at),
        (cost_bins, cost_counts) = (
            SELECT m.bins, m.counts
            FROM usage_hist_merge(r.cost_bins, r.cost_counts, excluded.cost_bins, excluded.cost_counts) AS m
        );
    RETURN NULL;
END $$;

CREATE TRIGGER usage_events_rollup AFTER INSERT ON usage_events
REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION usage_rollups_add();

-- Partitions for the months the existing events fall in, this month and the next two.
SELECT usage_events_add_partition(month)
FROM (
    SELECT DISTINCT date_trunc('month', occurred_at, 'UTC') FROM usage_events_0001
    UNION
    SELECT date_trunc('month', now() + n * INTERVAL '1 month', 'UTC') FROM generate_series(0, 2) AS n
) AS months (month);

INSERT INTO usage_event_ids (agent_id, event_id) SELECT agent_id, event_id FROM usage_events_0001;
INSERT INTO usage_events (
    agent_id, event_id, lease_id, cost_micros, input_tokens, output_tokens, model, provider, status,
    latency_ms, source, occurred_at, received_at
)
SELECT agent_id, event_id, lease_id, cost_micros, input_tokens, output_tokens, model, provider, status,
    latency_ms, 'budget', occurred_at, received_at
FROM usage_events_0001;
DROP TABLE usage_events_0001;
