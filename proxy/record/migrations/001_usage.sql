-- The usage of record: one row per request, and its daily and monthly rollups.

CREATE TABLE usage_events (
    request_id               text        NOT NULL,   -- the response's X-Request-Id
    ts                       timestamptz NOT NULL,   -- when it was recorded (decides its day and month)
    stream_id                text        NOT NULL,   -- its entry in Redis's event stream
    project                  text        NOT NULL,
    agent                    text        NOT NULL,
    session                  text,
    key_id                   text,
    model                    text        NOT NULL,   -- as the client asked
    priced_model             text        NOT NULL,   -- as the catalog priced it
    endpoint                 text        NOT NULL,
    upstream                 text        NOT NULL,
    status                   integer     NOT NULL,
    stream                   boolean     NOT NULL,
    estimated                boolean     NOT NULL,
    prompt_tokens            bigint      NOT NULL,
    completion_tokens        bigint      NOT NULL,
    cached_tokens            bigint      NOT NULL,
    cache_creation_tokens    bigint      NOT NULL,
    cache_creation_1h_tokens bigint      NOT NULL DEFAULT 0,
    reasoning_tokens         bigint      NOT NULL,
    web_search_calls         bigint      NOT NULL DEFAULT 0,
    cost_nano                bigint      NOT NULL,   -- nano-USD
    latency_ms               bigint      NOT NULL,
    ttfb_ms                  bigint,
    clamped_max_tokens       bigint,
    PRIMARY KEY (request_id, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX usage_events_project_ts ON usage_events (project, ts);

-- Rollups: one row per project, period, agent, model (as priced) and farebox key ('' = none).
CREATE TABLE usage_daily (
    project               text   NOT NULL,
    day                   date   NOT NULL,
    agent                 text   NOT NULL,
    model                 text   NOT NULL,
    key_id                text   NOT NULL DEFAULT '',
    requests              bigint NOT NULL,
    prompt_tokens         bigint NOT NULL,
    completion_tokens     bigint NOT NULL,
    cached_tokens         bigint NOT NULL,
    cache_creation_tokens bigint NOT NULL,
    reasoning_tokens      bigint NOT NULL,
    cost_nano             bigint NOT NULL,
    estimated             bigint NOT NULL,
    PRIMARY KEY (project, day, agent, model, key_id)
);

CREATE TABLE usage_monthly (
    project               text   NOT NULL,
    month                 date   NOT NULL,   -- its first day
    agent                 text   NOT NULL,
    model                 text   NOT NULL,
    key_id                text   NOT NULL DEFAULT '',
    requests              bigint NOT NULL,
    prompt_tokens         bigint NOT NULL,
    completion_tokens     bigint NOT NULL,
    cached_tokens         bigint NOT NULL,
    cache_creation_tokens bigint NOT NULL,
    reasoning_tokens      bigint NOT NULL,
    cost_nano             bigint NOT NULL,
    estimated             bigint NOT NULL,
    PRIMARY KEY (project, month, agent, model, key_id)
);
