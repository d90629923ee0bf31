-- delistd case store: the schema, as a list of migrations.
--
-- This file is embedded in the binary and applied by it (src/cases/schema.rs). Each
-- section below starting with a `-- @version N` line is one migration; the database's
-- `PRAGMA user_version` says which have been applied. On open, delistd applies every
-- missing section in ONE transaction and sets user_version to the last one. A database
-- whose user_version is higher than the last section here is refused (it was written by a
-- newer delistd).
--
-- Rules for whoever edits this file:
--   * never edit or remove a section that has shipped: add a new `-- @version N+1` at the end;
--   * no `IF NOT EXISTS`: a migration runs exactly once, on exactly the schema before it;
--   * no PRAGMA journal_mode / foreign_keys here: they cannot change inside a transaction
--     and are set by the code on every open.
--
-- Reading it with the sqlite3 shell (safe while the daemon runs: the database is in WAL mode):
--   sqlite3 -readonly /var/lib/delistd/delistd.sqlite
--   sqlite> .mode box
--   sqlite> SELECT * FROM case_overview WHERE state = 'open' ORDER BY due_at LIMIT 20;
--   sqlite> SELECT json_extract(evidence, '$.status_code') FROM messages WHERE id = 12;
--
-- TIMES are INTEGER unix seconds, UTC. Why not RFC 3339 text: the SLA is arithmetic
-- (due_at = start + 48 h, time to first response = first_response_at - sla_started_at,
-- "overdue" = due_at < now), which stays plain integer arithmetic and comparison in SQL
-- and in the indexes; integers are 8 bytes in an index instead of ~25; and there is one
-- spelling of each instant, so ordering is never wrong. Seconds are precise enough for a
-- 48-hour SLA. To read one:  datetime(due_at, 'unixepoch')  (UTC) or
-- datetime(due_at, 'unixepoch', 'localtime'); the *_overview views below do it for you.

-- @version 1

-- Every message taken in, whatever happened to it. A row is written in the same
-- transaction as the case and the reply it led to, so a message is either fully handled
-- or not recorded at all; the daemon looks a message up here before handling it, which
-- is what makes a restart after a crash safe (never double-handled).
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    -- Where it came from: 'imap' (mailbox, uidvalidity, uid), 'maildir' or 'file' (path).
    source_kind   TEXT    NOT NULL CHECK (source_kind IN ('imap', 'maildir', 'file')),
    mailbox       TEXT,
    uidvalidity   INTEGER,
    uid           INTEGER,
    path          TEXT,
    -- Message-ID header without angle brackets, when it had one.
    message_id    TEXT,
    -- From: address and Subject: as decoded.
    sender        TEXT,
    subject       TEXT,
    received_at   INTEGER NOT NULL,
    -- Size of the raw message in bytes.
    size          INTEGER NOT NULL,
    -- SHA-256 of the raw bytes, lower-case hex: the same message seen twice (another
    -- mailbox, a re-delivery, a file given twice) is recognised by content.
    sha256        TEXT    NOT NULL UNIQUE,
    -- The raw RFC 5322 message, or where it is kept on disk (one or the other, or neither
    -- when storing it was turned off).
    raw           BLOB,
    raw_path      TEXT,
    -- What extraction found and what the decision table said, as JSON
    -- (query with json_extract(evidence, '$.ips[0].text')).
    evidence      TEXT CHECK (evidence IS NULL OR json_valid(evidence)),
    decision      TEXT CHECK (decision IS NULL OR json_valid(decision)),
    -- The decision's action: acknowledge, follow_up, missing_info, redirect_portal,
    -- tenant_support, ignore.
    action        TEXT,
    -- What became of it: received, processed, ignored, quarantined (kept aside, could not
    -- be handled; see error), failed.
    outcome       TEXT    NOT NULL DEFAULT 'received',
    error         TEXT,
    -- An IMAP message is identified by (mailbox, UIDVALIDITY, UID) (RFC 9051 §2.3.1.1).
    -- NULLs are distinct in a UNIQUE constraint, so file and maildir rows never collide.
    UNIQUE (mailbox, uidvalidity, uid)
);
CREATE INDEX messages_by_message_id ON messages (message_id);

-- One case per banned IP a sender asked us to delist. The reference staff and senders
-- see, DL-000123, is the id formatted; AUTOINCREMENT so an id is never handed out twice,
-- even after the highest case was deleted by hand.
CREATE TABLE cases (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The banned IP in canonical text form (RFC 5952 for IPv6); NULL while awaiting_info.
    ip                TEXT,
    -- Enhanced status code (RFC 3463), e.g. 5.7.511, and the full NDR line as given.
    status_code       TEXT,
    ndr_line          TEXT,
    -- Who asked: the address replies go to. Compared without regard to case.
    sender            TEXT    NOT NULL COLLATE NOCASE,
    -- ISO 639-1 code of the language replies are written in (en, fr, it, ja, de).
    language          TEXT    NOT NULL DEFAULT 'en',
    -- awaiting_info: we asked the sender for what was missing; no SLA clock runs.
    -- open:          complete request, staff must answer by due_at.
    -- resolved:      staff delisted the IP (or closed it without a reply).
    -- rejected:      staff refused the request.
    state             TEXT    NOT NULL CHECK (state IN ('awaiting_info', 'open', 'resolved', 'rejected')),
    opened_at         INTEGER NOT NULL,
    -- When the SLA clock started: opened_at for a complete request, the moment the
    -- sender completed it for one that was awaiting_info, the moment of a reopen.
    -- due_at = sla_started_at + SLA (48 h by default). Both NULL while awaiting_info.
    sla_started_at    INTEGER,
    due_at            INTEGER,
    -- First staff action or staff reply (the automatic acknowledgement does not count).
    first_response_at INTEGER,
    resolved_at       INTEGER,
    assignee          TEXT,
    -- The message that opened the case.
    opened_by         INTEGER REFERENCES messages (id),
    -- An open case always has a due time; a request still awaiting info never has one.
    -- (A case closed while awaiting_info keeps NULL: no clock ever ran for it.)
    CHECK (state <> 'open' OR due_at IS NOT NULL),
    CHECK (state <> 'awaiting_info' OR due_at IS NULL),
    CHECK ((due_at IS NULL) = (sla_started_at IS NULL)),
    CHECK ((state IN ('resolved', 'rejected')) = (resolved_at IS NOT NULL))
);
-- The staff work list: open cases by due time (list --overdue / --due-within, stats).
CREATE INDEX cases_by_state_due ON cases (state, due_at);
-- All cases of one IP (list --ip; the daemon's "is there an open case for this IP").
CREATE INDEX cases_by_ip ON cases (ip, state);
-- All cases of one sender (list --sender).
CREATE INDEX cases_by_sender ON cases (sender, opened_at);
-- Cases opened in a period (list --since, export --since).
CREATE INDEX cases_by_opened ON cases (opened_at);
-- SLA statistics over a window: covers the columns stats reads, so it never touches the table.
CREATE INDEX cases_sla_window ON cases (sla_started_at, due_at, first_response_at, resolved_at);

-- The history of each case, oldest first: every message, reply and staff action.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES cases (id),
    -- opened, completed, message, reply_queued, reply_sent, reply_failed, note,
    -- assigned, resolved, rejected, reopened.
    kind        TEXT    NOT NULL,
    -- 'delistd' for the daemon, the staff member's name otherwise.
    actor       TEXT    NOT NULL,
    text        TEXT,
    message_ref INTEGER REFERENCES messages (id),
    outbox_ref  INTEGER REFERENCES outbox (id),
    at          INTEGER NOT NULL
);
CREATE INDEX events_by_case ON events (case_id, at);
CREATE INDEX events_by_message ON events (message_ref) WHERE message_ref IS NOT NULL;

-- Replies to send. A row is complete when queued (the Message-ID is fixed then), so a
-- retry sends the very same bytes and the sender's client threads them as one message.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    case_id         INTEGER REFERENCES cases (id),
    -- The message this answers.
    caused_by       INTEGER REFERENCES messages (id),
    recipient       TEXT    NOT NULL COLLATE NOCASE,
    -- Message-ID of the reply, without angle brackets.
    message_id      TEXT    NOT NULL UNIQUE,
    subject         TEXT    NOT NULL,
    -- The whole RFC 5322 message as it will be sent.
    raw             BLOB    NOT NULL,
    -- queued (to send at next_attempt_at), sent, failed (gave up; see last_error).
    state           TEXT    NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    queued_at       INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    sent_at         INTEGER
);
-- The sender loop: what is due now.
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
-- The rate limit: replies to one address since a moment.
CREATE INDEX outbox_by_recipient ON outbox (recipient, queued_at);
CREATE INDEX outbox_by_case ON outbox (case_id) WHERE case_id IS NOT NULL;

-- For people with the sqlite3 shell: the same tables with readable UTC times.
CREATE VIEW case_overview AS
SELECT printf('DL-%06d', id)                         AS ref,
       state, ip, status_code, sender, language, assignee,
       datetime(opened_at, 'unixepoch')              AS opened_utc,
       datetime(due_at, 'unixepoch')                 AS due_utc,
       datetime(first_response_at, 'unixepoch')      AS first_response_utc,
       datetime(resolved_at, 'unixepoch')            AS resolved_utc,
       id, opened_at, due_at
FROM cases;

CREATE VIEW event_overview AS
SELECT printf('DL-%06d', case_id) AS ref, datetime(at, 'unixepoch') AS at_utc,
       kind, actor, text, message_ref, outbox_ref, case_id, at
FROM events;

-- @version 2
-- The rate limit runs for every incoming message. With only (recipient, queued_at) in the
-- index, SQLite read each past reply's table row to see its state: a sender with hundreds
-- of replies in the window cost hundreds of table-row reads per message (the backlog
-- benchmark sends 500 replies to each of its 20 senders). With the state in the index the
-- count is read from the index alone.
DROP INDEX outbox_by_recipient;
CREATE INDEX outbox_by_recipient ON outbox (recipient, queued_at, state);

-- @version 3
-- What each outbox row is (issue 12: metrics and staff escalation mail).
--   kind:     the reply kind (acknowledge, missing_info, ..., delisted, rejected) or the
--             staff mail (escalation_due_soon, escalation_overdue, escalation_digest);
--             NULL on rows queued before this version.
--   to_staff: 1 for mail to our own staff: never counted in a sender's per-recipient
--             reply limit, which the rate-limit index below keeps answering alone.
ALTER TABLE outbox ADD COLUMN kind TEXT;
ALTER TABLE outbox ADD COLUMN to_staff INTEGER NOT NULL DEFAULT 0 CHECK (to_staff IN (0, 1));
DROP INDEX outbox_by_recipient;
CREATE INDEX outbox_by_recipient ON outbox (recipient, queued_at, state, to_staff);
-- One row per local day whose escalation digest was handled (queued, or found empty and
-- not sent), so a restart never sends the day's digest twice.
CREATE TABLE escalation_digests (
    day       TEXT    PRIMARY KEY,  -- YYYY-MM-DD in the escalation time zone
    at        INTEGER NOT NULL,
    cases     INTEGER NOT NULL
);

-- @version 4
-- The provider's blocklist itself (src/blocklist/). What it said of the case's IP when the
-- request came in or was last looked at again: the source (a DNSBL zone, or cidr:<path>),
-- the reason it gives (a DNSBL's TXT record, the right-hand side of a CIDR line), since when
-- if it says, and when it was looked up. NULL: not looked up (no [blocklist] configured,
-- or the lookup did not answer; the history says which).
ALTER TABLE cases ADD COLUMN listing_source TEXT;
ALTER TABLE cases ADD COLUMN listing_reason TEXT;
ALTER TABLE cases ADD COLUMN listing_since INTEGER;
ALTER TABLE cases ADD COLUMN listing_checked_at INTEGER;
-- How a resolved case was closed: 'delisted' (by staff, by delist_command or because the
-- IP left the list), 'not_listed' (the IP was on no source when the request came: answered
-- at once, no staff work), 'rejected'. NULL for cases closed before version 3.
ALTER TABLE cases ADD COLUMN resolution TEXT;
-- 1 while delist_command waits to run for the first request of an IP (auto_delist_first).
ALTER TABLE cases ADD COLUMN auto_delist INTEGER NOT NULL DEFAULT 0;
CREATE INDEX cases_auto_delist ON cases (id) WHERE auto_delist = 1;

-- @version 5
-- The rate limit counts the real mailbox (case-folded, `+tag` removed) and caps each
-- domain per hour: it reads every reply queued in the last day, by time.
CREATE INDEX outbox_by_queued_at ON outbox (queued_at, state);

-- @version 6
-- Retention (`[retention]` in the config, `delistd purge`). The raw bytes of a message are
-- the sender's personal data: they are dropped some days after the case closed, and the
-- moment is kept here so staff views can say "raw message purged on ...". The evidence,
-- the metadata and the history stay.
ALTER TABLE messages ADD COLUMN raw_purged_at INTEGER;
-- Retention asks, for each message, whether a case it opened is still young.
CREATE INDEX cases_by_opened_by ON cases (opened_by) WHERE opened_by IS NOT NULL;
-- Deleting a case (case_days) deletes its replies; a reply refers to the message it answers.
CREATE INDEX outbox_by_caused_by ON outbox (caused_by) WHERE caused_by IS NOT NULL;

-- @version 7
-- Staff accounts of the desk. Passwords are argon2id hashes in PHC form, never the
-- password itself. `role`: an agent acts on cases, a viewer only reads.
CREATE TABLE staff (
    name          TEXT PRIMARY KEY,
    email         TEXT,
    role          TEXT NOT NULL CHECK (role IN ('agent', 'viewer')),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
-- Web sessions: the cookie holds a random token; only its SHA-256 is stored, so a copy of
-- the database does not let anyone in. The CSRF token is per session.
CREATE TABLE web_sessions (
    token_sha256 TEXT PRIMARY KEY,
    staff        TEXT NOT NULL REFERENCES staff (name) ON DELETE CASCADE,
    csrf         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);

-- @version 8
-- Threads (issue 11): what a sender's new message does to a case, and staff questions.
--   needs_attention: 1 when a person wrote on the case since the last staff action. Set by
--                    the daemon, cleared by any staff action (reply, ask, resolve, note,
--                    assign, reopen). The SLA clock does not restart for it.
--   sla_remaining:   seconds left on the SLA clock (negative: overdue by that much) when
--                    staff asked the sender for information. An awaiting_info case has no
--                    due_at (see the CHECKs of version 1), so the time is kept here and given
--                    back when the answer arrives: due_at = answer + sla_remaining, and
--                    sla_started_at = due_at - SLA (the pause does not count against staff).
--                    NULL otherwise; an awaiting_info case with an IP and this set is waiting
--                    for the answer to a staff question.
ALTER TABLE cases ADD COLUMN needs_attention INTEGER NOT NULL DEFAULT 0 CHECK (needs_attention IN (0, 1));
ALTER TABLE cases ADD COLUMN sla_remaining INTEGER;
-- The board's "needs attention" count and filter read only the few marked cases.
CREATE INDEX cases_needs_attention ON cases (state, due_at) WHERE needs_attention = 1;

-- @version 9
-- Search (issue 11). `message_search` is the full-text index (FTS5) of each message's
-- subject and decoded readable text, rowid = messages.id, written in the same transaction
-- as the message. Contentless (content=''): the index keeps no second copy of the text,
-- and contentless_delete lets retention take a purged message's text out of it. The rows
-- of messages already stored are added by the code step of this version (schema.rs), which
-- decodes each raw message as the store does for a new one. (contentless_delete needs SQLite
-- 3.43: an older sqlite3 shell, such as Debian 12's 3.40, reads every other table as before
-- but not message_search and case_senders.)
CREATE VIRTUAL TABLE message_search USING fts5(
    subject, body, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 2'
);
-- The banned IP as a sortable key (a family byte, 4 or 6, then the address bytes in
-- network order), so a CIDR filter is one range of this index instead of a read of every
-- case. Filled by the code for new cases and by the code step for existing ones.
ALTER TABLE cases ADD COLUMN ip_key BLOB;
CREATE INDEX cases_by_ip_key ON cases (ip_key) WHERE ip_key IS NOT NULL;
-- The sender filter is a substring search ("shop.example", "postmaster@"): a trigram index
-- of the distinct senders finds the senders of a part of three characters or more, and
-- cases_by_sender their cases, without reading every case. One row per sender (compared
-- without regard to case, as cases.sender is), rowid = the id of its oldest case: the
-- index stays as small as the number of senders, so a part common to many of them still
-- reads short lists.
CREATE VIRTUAL TABLE case_senders USING fts5(
    sender, content = '', contentless_delete = 1, tokenize = 'trigram'
);
INSERT INTO case_senders (rowid, sender) SELECT min(id), sender FROM cases GROUP BY sender;
-- One person's cases (the board's "mine", `cases list --assignee`): for one name the index
-- is in case order, so the newest of them are read first without a sort.
CREATE INDEX cases_by_assignee ON cases (assignee) WHERE assignee IS NOT NULL;
-- The board's "closed today" count, on every board page: today's closed cases, not all.
CREATE INDEX cases_by_resolved_at ON cases (resolved_at) WHERE resolved_at IS NOT NULL;
-- Per-account API tokens for /api/cases (read-only): only the SHA-256 of the random token
-- is stored; one token per account, gone with the account.
CREATE TABLE api_tokens (
    staff        TEXT PRIMARY KEY REFERENCES staff (name) ON DELETE CASCADE,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL
);
