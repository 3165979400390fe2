package usagelog

// migrations are applied in order, each once, in its own transaction; the
// version of migrations[i] is i+1. Never edit an applied migration: append a
// new one.
//
// Money is INTEGER nanos, times are INTEGER Unix nanoseconds (UTC), lists are
// JSON arrays in TEXT. The usage table has no foreign key to users: a usage
// row must always be accepted from the stream (a batch that fails a
// constraint would block the flusher), and erasure anonymises rows in place.
// Usage has only the indexes its queries need, because every index costs
// insert throughput (the ledger must take ≥ 50k rows/s): by time (listing,
// retention) and by user and time (accounts, balance); a key's rows are
// found through its user (see ListUsage).
var migrations = []string{
	// 1: users, ledger, keys, usage, rejected stream entries.
	`
CREATE TABLE users (
	id         TEXT PRIMARY KEY,
	email      TEXT NOT NULL DEFAULT '',
	name       TEXT NOT NULL DEFAULT '',
	status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
	created_at INTEGER NOT NULL
);

CREATE TABLE ledger (
	id         INTEGER PRIMARY KEY,
	user_id    TEXT NOT NULL REFERENCES users (id),
	amount     INTEGER NOT NULL,
	kind       TEXT NOT NULL,
	reason     TEXT NOT NULL DEFAULT '',
	ref        TEXT UNIQUE,
	created_at INTEGER NOT NULL
);
CREATE INDEX ledger_user ON ledger (user_id);

CREATE TABLE keys (
	id          TEXT PRIMARY KEY,
	user_id     TEXT NOT NULL REFERENCES users (id),
	name        TEXT NOT NULL DEFAULT '',
	hash        TEXT NOT NULL UNIQUE,
	prefix      TEXT NOT NULL DEFAULT '',
	models      TEXT NOT NULL DEFAULT '[]',
	rpm         INTEGER NOT NULL DEFAULT 0,
	tpm         INTEGER NOT NULL DEFAULT 0,
	allowed_ips TEXT NOT NULL DEFAULT '[]',
	expires_at  INTEGER,
	status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
	created_at  INTEGER NOT NULL,
	revoked_at  INTEGER
);
CREATE INDEX keys_user ON keys (user_id);
CREATE INDEX keys_active ON keys (status) WHERE status = 'active';

CREATE TABLE usage (
	request_id          TEXT PRIMARY KEY,
	time                INTEGER NOT NULL,
	user_id             TEXT NOT NULL,
	key_id              TEXT NOT NULL DEFAULT '',
	model               TEXT NOT NULL DEFAULT '',
	endpoint            TEXT NOT NULL DEFAULT '',
	stream              INTEGER NOT NULL DEFAULT 0,
	status              INTEGER NOT NULL DEFAULT 0,
	outcome             TEXT NOT NULL DEFAULT '',
	input_tokens        INTEGER NOT NULL DEFAULT 0,
	cached_input_tokens INTEGER NOT NULL DEFAULT 0,
	cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
	output_tokens       INTEGER NOT NULL DEFAULT 0,
	reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
	cost                INTEGER NOT NULL DEFAULT 0,
	currency            TEXT NOT NULL DEFAULT '',
	estimated           INTEGER NOT NULL DEFAULT 0,
	duration_ms         INTEGER NOT NULL DEFAULT 0,
	ttft_ms             INTEGER NOT NULL DEFAULT 0,
	client_ip           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX usage_time ON usage (time);
CREATE INDEX usage_user_time ON usage (user_id, time);

CREATE TABLE usage_rejects (
	stream      TEXT NOT NULL,
	entry_id    TEXT NOT NULL,
	raw         TEXT NOT NULL,
	reason      TEXT NOT NULL,
	received_at INTEGER NOT NULL,
	PRIMARY KEY (stream, entry_id)
);
`,
	// 2: Stripe payments. Ledger entries made by a payment are written with
	// redis_applied = 0 and marked once their amount is in the Redis
	// balance, so a crash in between is repaired at the next start; every
	// entry made before (and by AddLedgerEntry) counts as applied.
	`
ALTER TABLE ledger ADD COLUMN redis_applied INTEGER NOT NULL DEFAULT 1;
CREATE INDEX ledger_unapplied ON ledger (id) WHERE redis_applied = 0;

CREATE TABLE stripe_events (
	id          TEXT PRIMARY KEY,
	type        TEXT NOT NULL,
	api_version TEXT NOT NULL DEFAULT '',
	created     INTEGER NOT NULL DEFAULT 0,
	received_at INTEGER NOT NULL,
	outcome     TEXT NOT NULL DEFAULT ''
);

CREATE TABLE payments (
	id             INTEGER PRIMARY KEY,
	ref            TEXT NOT NULL UNIQUE,
	kind           TEXT NOT NULL CHECK (kind IN ('topup', 'refund', 'dispute')),
	user_id        TEXT NOT NULL DEFAULT '',
	topup_id       TEXT NOT NULL DEFAULT '',
	session_id     TEXT NOT NULL DEFAULT '',
	payment_intent TEXT NOT NULL DEFAULT '',
	charge_id      TEXT NOT NULL DEFAULT '',
	dispute_id     TEXT NOT NULL DEFAULT '',
	amount         INTEGER NOT NULL DEFAULT 0,
	currency       TEXT NOT NULL DEFAULT '',
	credited       INTEGER NOT NULL DEFAULT 0,
	status         TEXT NOT NULL,
	event_id       TEXT NOT NULL DEFAULT '',
	created_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL
);
CREATE INDEX payments_user ON payments (user_id, created_at);
CREATE INDEX payments_created ON payments (created_at);
CREATE UNIQUE INDEX payments_session ON payments (session_id) WHERE kind = 'topup' AND session_id != '';
CREATE INDEX payments_intent ON payments (payment_intent) WHERE kind = 'topup' AND payment_intent != '';

CREATE TABLE stripe_charges (
	id             TEXT PRIMARY KEY,
	payment_intent TEXT NOT NULL DEFAULT '',
	amount         INTEGER NOT NULL DEFAULT 0,
	currency       TEXT NOT NULL DEFAULT '',
	refunded       INTEGER NOT NULL DEFAULT 0,
	debited        INTEGER NOT NULL DEFAULT 0,
	updated_at     INTEGER NOT NULL
);
CREATE INDEX stripe_charges_intent ON stripe_charges (payment_intent);

CREATE TABLE stripe_disputes (
	id             TEXT PRIMARY KEY,
	charge_id      TEXT NOT NULL DEFAULT '',
	payment_intent TEXT NOT NULL DEFAULT '',
	amount         INTEGER NOT NULL DEFAULT 0,
	currency       TEXT NOT NULL DEFAULT '',
	status         TEXT NOT NULL DEFAULT '',
	held           INTEGER NOT NULL DEFAULT 0,
	updated_at     INTEGER NOT NULL
);
CREATE INDEX stripe_disputes_intent ON stripe_disputes (payment_intent);
`,
	// 3: privacy. The audit trail of erasures, exports and retention runs,
	// and indexes for the retention job's range deletes. (No trigger
	// keeps late usage rows of an erased user from carrying a client IP:
	// it would cost a fifth of the insert throughput; ScrubErased does it.)
	`
CREATE TABLE audit (
	id      INTEGER PRIMARY KEY,
	time    INTEGER NOT NULL,
	action  TEXT NOT NULL,
	user_id TEXT NOT NULL DEFAULT '',
	detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_user ON audit (user_id, id);
CREATE INDEX audit_action ON audit (action, time);

CREATE INDEX usage_rejects_received ON usage_rejects (received_at);
CREATE INDEX stripe_events_received ON stripe_events (received_at);
CREATE INDEX payments_updated ON payments (updated_at);
`,
	// 4: usage_clamped, set on a row whose upstream usage report claimed
	// more tokens than the request could produce and was billed at the
	// most it could. ADD COLUMN with a constant default rewrites nothing:
	// old rows read 0.
	`
ALTER TABLE usage ADD COLUMN usage_clamped INTEGER NOT NULL DEFAULT 0;
`,
	// 5: the customers' dashboard. password_hash is a PHC argon2id string
	// ('' for users that cannot sign in: made by the admin API); a
	// verified email has email_verified_at; ip_logging = 0 keeps the
	// client IP out of the user's usage rows (applied as rows are
	// inserted, through the small partial index users_no_ip). Emails are
	// unique, ignoring case, among the active users that can sign in only:
	// admin-made users may share an email, as they always could.
	`
ALTER TABLE users ADD COLUMN password_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN email_verified_at INTEGER;
ALTER TABLE users ADD COLUMN ip_logging INTEGER NOT NULL DEFAULT 1;
CREATE INDEX users_no_ip ON users (id) WHERE ip_logging = 0;
CREATE UNIQUE INDEX users_login_email ON users (lower(email)) WHERE password_hash != '' AND status = 'active';
`,
	// 6: prepaid codes. A code is stored as the SHA-256 of its secret
	// only. Its status is unused, redeemed or void; an unused code past
	// expires_at is shown as expired. Redeeming sets redeemed_by and
	// redeemed_at and writes the ledger entry "code:<id>" in the same
	// transaction. Codes are payment records: an erasure keeps them.
	`
CREATE TABLE codes (
	id          TEXT PRIMARY KEY,
	hash        TEXT NOT NULL UNIQUE,
	amount      INTEGER NOT NULL CHECK (amount > 0),
	note        TEXT NOT NULL DEFAULT '',
	status      TEXT NOT NULL DEFAULT 'unused' CHECK (status IN ('unused', 'redeemed', 'void')),
	expires_at  INTEGER,
	created_at  INTEGER NOT NULL,
	redeemed_by TEXT REFERENCES users (id),
	redeemed_at INTEGER,
	voided_at   INTEGER
);
CREATE INDEX codes_created ON codes (created_at, id);
CREATE INDEX codes_redeemed_by ON codes (redeemed_by) WHERE redeemed_by IS NOT NULL;
`,
}
