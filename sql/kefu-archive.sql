-- kefu's archive of closed conversations in PostgreSQL (issue 11). The worker creates these
-- tables when they are missing (archive_db set) and fills them; kefu-export reads them.
-- Texts and names are stored as the worker's archive_mask option says (masked by default).
-- Every write is an upsert keyed by the conversation, so archiving one twice changes nothing
-- but what changed in between (a rating, a QA review).

CREATE TABLE IF NOT EXISTS kefu_schema (
    version integer NOT NULL
);

CREATE TABLE IF NOT EXISTS kefu_conversations (
    conv              text PRIMARY KEY,
    ticket            text NOT NULL DEFAULT '',
    channel           text NOT NULL DEFAULT '',
    grp               text NOT NULL DEFAULT '',       -- skill group ("group" is reserved)
    topic             text NOT NULL DEFAULT '',
    category          text NOT NULL DEFAULT '',
    priority          text NOT NULL DEFAULT '',
    level             text NOT NULL DEFAULT '',
    customer          text NOT NULL,
    customer_name     text NOT NULL DEFAULT '',
    agent             text NOT NULL DEFAULT '',
    agent_name        text NOT NULL DEFAULT '',
    resolution        text NOT NULL DEFAULT '',
    closed_by         text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    assigned_at       timestamptz,
    first_response_at timestamptz,
    closed_at         timestamptz NOT NULL,
    rating            smallint,
    rating_comment    text,
    rated_at          timestamptz,
    qa_score          smallint,
    qa_notes          text,
    qa_tags           text,
    qa_by             text,
    qa_at             timestamptz,
    meta              jsonb NOT NULL,                 -- every field of the Redis meta hash
    archived_at       timestamptz NOT NULL DEFAULT now(),
    archived_by       text NOT NULL DEFAULT ''        -- the worker's consumer name
);
CREATE INDEX IF NOT EXISTS kefu_conversations_closed_at ON kefu_conversations (closed_at);
CREATE INDEX IF NOT EXISTS kefu_conversations_agent ON kefu_conversations (agent, closed_at);

CREATE TABLE IF NOT EXISTS kefu_messages (
    conv   text NOT NULL REFERENCES kefu_conversations (conv) ON DELETE CASCADE,
    id     text NOT NULL,                             -- the Redis stream id: <ms>-<seq>
    at     timestamptz NOT NULL,
    sender text NOT NULL,                             -- "from": user id, or "bot"
    role   text NOT NULL,
    name   text NOT NULL DEFAULT '',
    body   text NOT NULL,                             -- the message text
    cid    text NOT NULL DEFAULT '',
    PRIMARY KEY (conv, id)
);

CREATE TABLE IF NOT EXISTS kefu_events (
    conv   text NOT NULL REFERENCES kefu_conversations (conv) ON DELETE CASCADE,
    id     text NOT NULL,                             -- the record stream's id
    at     timestamptz NOT NULL,
    ev     text NOT NULL,                             -- opened, queued, accepted, closed, rated, ...
    actor  text NOT NULL DEFAULT '',                  -- "by"
    fields jsonb NOT NULL,                            -- every field of the record entry
    PRIMARY KEY (conv, id)
);

INSERT INTO kefu_schema (version) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM kefu_schema);
