"""The schema, in SQLAlchemy Core. Amounts are BigInteger units scaled by the currency's precision.

Member-scoped tables carry (program_id, profile_id) so that every write of one operation touches one member.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from loyalty.storage.types import UtcMicros

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

databases = Table(
    "databases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcMicros, nullable=False),
)

db_fields = Table(
    "db_fields",
    metadata,
    Column("db_id", Integer, ForeignKey("databases.id"), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("type", String(10), nullable=False),
    Column("is_unique", Boolean, nullable=False, default=False),
    CheckConstraint("type IN ('string','int','float','bool','date')", name="type"),
)

profiles = Table(
    "profiles",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("db_id", Integer, ForeignKey("databases.id"), nullable=False),
    Column("email", String(320)),
    Column("email_norm", String(320)),
    Column("phones", Text, nullable=False, server_default="[]"),
    Column("fname", String(200)),
    Column("lname", String(200)),
    Column("regdate", UtcMicros),
    Column("created_at", UtcMicros, nullable=False),
    Column("updated_at", UtcMicros, nullable=False),
    Column("custom", Text, nullable=False, server_default="{}"),
    UniqueConstraint("db_id", "email_norm", name="uq_profiles_db_email"),
)

# Lookup indexes for matching: one row per (normalised phone | custom field value) of a profile.
profile_phones = Table(
    "profile_phones",
    metadata,
    Column("db_id", Integer, primary_key=True),
    Column("phone", String(40), primary_key=True),
    Column("profile_id", String(24), ForeignKey("profiles.id"), primary_key=True),
)

profile_values = Table(
    "profile_values",
    metadata,
    Column("db_id", Integer, primary_key=True),
    Column("field", String(100), primary_key=True),
    Column("value", String(500), primary_key=True),
    Column("profile_id", String(24), ForeignKey("profiles.id"), primary_key=True),
)
Index("ix_profile_values_profile", profile_values.c.profile_id)
Index("ix_profile_phones_profile", profile_phones.c.profile_id)

programs = Table(
    "programs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("external_id", String(200), unique=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("db_id", Integer, ForeignKey("databases.id"), nullable=False),
    Column("status", String(10), nullable=False, server_default="active"),
    # Order settings are exact decimals kept as text: they are rates, not amounts of a currency.
    Column("earn_rate", String(40), nullable=False, server_default="0"),
    Column("point_value", String(40), nullable=False, server_default="1"),
    Column("max_redeem_share", String(40), nullable=False, server_default="1"),
    Column("return_window_days", Integer, nullable=False, server_default="0"),
    Column("created_at", UtcMicros, nullable=False),
    Column("updated_at", UtcMicros, nullable=False),
    CheckConstraint("status IN ('active','archived')", name="status"),
)

currencies = Table(
    "currencies",
    metadata,
    Column("program_id", Integer, ForeignKey("programs.id"), primary_key=True),
    Column("iid", Integer, primary_key=True, autoincrement=False),
    Column("eid", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("precision", Integer, nullable=False),
    Column("initial_balance", BigInteger, nullable=False, server_default="0"),
    Column("lifetime_kind", String(20), nullable=False, server_default="never"),
    Column("lifetime_n", Integer),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    Column("status", String(10), nullable=False, server_default="active"),
    UniqueConstraint("program_id", "eid", name="uq_currencies_program_eid"),
    CheckConstraint("kind IN ('standard','qualification')", name="kind"),
    CheckConstraint("precision BETWEEN 0 AND 6", name="precision"),
    CheckConstraint("lifetime_kind IN ('never','days','end_of_month')", name="lifetime_kind"),
)

promotions = Table(
    "promotions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("program_id", Integer, ForeignKey("programs.id"), nullable=False),
    Column("external_id", String(200)),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("start_date", UtcMicros),
    Column("end_date", UtcMicros),
    Column("is_active", Boolean, nullable=False),
    Column("per_member", Integer),
    Column("per_day", Integer),
    UniqueConstraint("program_id", "external_id", name="uq_promotions_program_eid"),
)

promotion_rules = Table(
    "promotion_rules",
    metadata,
    Column("promotion_id", Integer, ForeignKey("promotions.id"), primary_key=True),
    Column("side", String(10), primary_key=True),
    Column("currency_iid", Integer, primary_key=True, autoincrement=False),
    Column("static_amount", BigInteger),
    Column("min_amount", BigInteger),
    Column("max_amount", BigInteger),
    CheckConstraint("side IN ('accrual','redeem')", name="side"),
)

tier_groups = Table(
    "tier_groups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("program_id", Integer, ForeignKey("programs.id"), nullable=False),
    Column("external_id", String(200)),
    Column("name", String(200), nullable=False),
    Column("type", String(20), nullable=False),
    Column("window_days", Integer),
    Column("currency_iid", Integer, nullable=False),
    Column("status", String(10), nullable=False, server_default="active"),
    CheckConstraint("type IN ('cumulative','period')", name="type"),
)

tiers = Table(
    "tiers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("group_id", Integer, ForeignKey("tier_groups.id"), nullable=False),
    Column("eid", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("threshold", BigInteger, nullable=False),
    Column("tier_order", Integer, nullable=False),
    Column("status", String(10), nullable=False, server_default="active"),
)

members = Table(
    "members",
    metadata,
    Column("program_id", Integer, ForeignKey("programs.id"), primary_key=True),
    Column("profile_id", String(24), ForeignKey("profiles.id"), primary_key=True),
    Column("status", String(10), nullable=False),
    Column("registered_at", UtcMicros, nullable=False),
    Column("first_registered_at", UtcMicros, nullable=False),
    Column("removed_at", UtcMicros),
    CheckConstraint("status IN ('active','removed')", name="status"),
)

# The tiers a member has reached in a tier group, lowest first; the highest is the current tier.
member_tiers = Table(
    "member_tiers",
    metadata,
    Column("program_id", Integer, primary_key=True),
    Column("profile_id", String(24), primary_key=True),
    Column("group_id", Integer, primary_key=True, autoincrement=False),
    Column("tier_id", Integer, primary_key=True, autoincrement=False),
    Column("reached_at", UtcMicros, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("program_id", Integer, primary_key=True),
    Column("profile_id", String(24), primary_key=True),
    Column("currency_iid", Integer, primary_key=True, autoincrement=False),
    Column("active", BigInteger, nullable=False, server_default="0"),
    Column("pending", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    Column("temp_accrued", BigInteger, nullable=False, server_default="0"),
    Column("debt", BigInteger, nullable=False, server_default="0"),
    # Earliest instant at which a lot activates or expires or a temp deadline passes; reads settle the account
    # first when it has passed, so time-dependent effects are right without scanning history.
    Column("next_event_at", UtcMicros),
    # Counters kept with the balances so reads never scan history: rows in the account's history, and
    # qualification points ever earned (committed credits minus cancelled ones) for cumulative tiers.
    Column("txn_count", BigInteger, nullable=False, server_default="0"),
    Column("earned", BigInteger, nullable=False, server_default="0"),
    Column("version", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("pending >= 0 AND held >= 0 AND temp_accrued >= 0 AND debt >= 0", name="nonneg"),
)
Index("ix_accounts_next_event", accounts.c.next_event_at)

lots = Table(
    "lots",
    metadata,
    # A lot is made by exactly one accrual, so it shares that transaction's id.
    Column("id", String(36), primary_key=True),
    Column("program_id", Integer, nullable=False),
    Column("profile_id", String(24), nullable=False),
    Column("currency_iid", Integer, nullable=False),
    Column("original", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False, server_default="0"),
    Column("expired", BigInteger, nullable=False, server_default="0"),
    Column("activates_at", UtcMicros, nullable=False),
    Column("expires_at", UtcMicros),
    Column("is_active", Boolean, nullable=False),
    Column("cancelled", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UtcMicros, nullable=False),
    CheckConstraint("remaining >= 0 AND remaining <= original", name="remaining"),
    CheckConstraint("held >= 0 AND expired >= 0", name="held"),
)
Index(
    "ix_lots_open",
    lots.c.program_id,
    lots.c.profile_id,
    lots.c.currency_iid,
    lots.c.expires_at,
    sqlite_where=text("remaining > 0"),
    postgresql_where=text("remaining > 0"),
)
Index("ix_lots_account_created", lots.c.program_id, lots.c.profile_id, lots.c.currency_iid, lots.c.created_at)

transactions = Table(
    "transactions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("program_id", Integer, nullable=False),
    Column("profile_id", String(24), nullable=False),
    Column("currency_iid", Integer, nullable=False),
    Column("eid", String(200)),
    Column("type", String(20), nullable=False),
    Column("status", String(12), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_before", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("promo_iid", Integer),
    Column("promo_eid", String(200)),
    Column("description", Text),
    Column("activation_date", UtcMicros),
    Column("expiration_date", UtcMicros),
    Column("source_type", String(12), nullable=False, server_default="api"),
    Column("source_iid", Integer),
    Column("source_eid", String(200)),
    Column("external_data", Text),
    Column("created_at", UtcMicros, nullable=False),
    Column("recorded_at", UtcMicros, nullable=False),
    Column("deadline_at", UtcMicros),
    Column("resolved_at", UtcMicros),
    Column("payload_hash", String(64)),
    UniqueConstraint("program_id", "eid", name="uq_transactions_program_eid"),
    CheckConstraint(
        "type IN ('accrual','redemption','initial','expiration','forfeit','order_accrual','order_redemption')",
        name="type",
    ),
    CheckConstraint("status IN ('temp','committed','rolled_back','cancelled')", name="status"),
    CheckConstraint("amount >= 0", name="amount"),
)
Index("ix_transactions_history", transactions.c.program_id, transactions.c.profile_id, transactions.c.currency_iid,
      transactions.c.id)
# Open holds by account: the account's earliest deadline is one index probe, however many holds other members
# have open (a global deadline index made it a scan of every open hold, on every redeem and commit).
Index(
    "ix_transactions_temp_account",
    transactions.c.program_id, transactions.c.profile_id, transactions.c.currency_iid, transactions.c.deadline_at,
    sqlite_where=text("status = 'temp'"),
    postgresql_where=text("status = 'temp'"),
)
# Promotion limits count a promotion's uses; most transactions have none, and need no entry.
Index("ix_transactions_promo", transactions.c.promo_iid, transactions.c.recorded_at,
      sqlite_where=text("promo_iid IS NOT NULL"), postgresql_where=text("promo_iid IS NOT NULL"))
Index("ix_transactions_export", transactions.c.program_id, transactions.c.currency_iid, transactions.c.created_at,
      transactions.c.id)

# What a redemption (or a cancel's clawback) took from each lot, so that it can be put back exactly.
consumptions = Table(
    "consumptions",
    metadata,
    Column("transaction_id", String(36), primary_key=True),
    Column("lot_id", String(36), primary_key=True),
    Column("program_id", Integer, nullable=False),
    Column("profile_id", String(24), nullable=False),
    Column("amount", BigInteger, nullable=False),
    CheckConstraint("amount > 0", name="amount"),
)

# Append-only journal of every change to an account's cached balances; `loyalty verify` replays it.
postings = Table(
    "postings",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("program_id", Integer, nullable=False),
    Column("profile_id", String(24), nullable=False),
    Column("currency_iid", Integer, nullable=False),
    Column("transaction_id", String(36)),
    Column("reason", String(20), nullable=False),
    Column("d_active", BigInteger, nullable=False),
    Column("d_pending", BigInteger, nullable=False),
    Column("d_held", BigInteger, nullable=False),
    Column("d_temp", BigInteger, nullable=False),
    Column("d_debt", BigInteger, nullable=False),
    Column("at", UtcMicros, nullable=False),
)
Index("ix_postings_account", postings.c.program_id, postings.c.profile_id, postings.c.currency_iid)

orders = Table(
    "orders",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("program_id", Integer, nullable=False),
    Column("profile_id", String(24), nullable=False),
    Column("external_id", String(200), nullable=False),
    Column("status", String(50)),
    Column("currency", String(3), nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("points_accrued", BigInteger, nullable=False),
    Column("points_redeemed", BigInteger, nullable=False),
    Column("accrual_txn_id", String(36)),
    Column("redemption_txn_id", String(36)),
    # The first answer, kept verbatim: a repeated preorder_commit returns exactly it.
    Column("result", Text, nullable=False),
    Column("created_at", UtcMicros, nullable=False),
    UniqueConstraint("program_id", "external_id", name="uq_orders_program_external_id"),
)

# One row per recurring job; a process runs a job only while it holds the row's lease, so with several
# processes each run happens once, and a dead process's lease simply runs out.
jobs = Table(
    "jobs",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("lease_owner", String(100)),
    Column("lease_until", UtcMicros),
    Column("last_started_at", UtcMicros),
    Column("last_finished_at", UtcMicros),
    Column("last_error", Text),
    Column("runs", BigInteger, nullable=False, server_default="0"),
)

export_tasks = Table(
    "export_tasks",
    metadata,
    Column("id", String(60), primary_key=True),
    Column("program_id", Integer, nullable=False),
    Column("currency_iid", Integer, nullable=False),
    Column("date_from", UtcMicros, nullable=False),
    Column("date_to", UtcMicros, nullable=False),
    Column("from_id", String(36)),
    Column("token_id", Integer),
    Column("status", String(10), nullable=False),
    Column("rows", BigInteger, nullable=False, server_default="0"),
    Column("file", Text),
    Column("error", Text),
    Column("lease_owner", String(100)),
    Column("lease_until", UtcMicros),
    Column("created_at", UtcMicros, nullable=False),
    Column("started_at", UtcMicros),
    Column("finished_at", UtcMicros),
    CheckConstraint("status IN ('queued','running','done','failed','expired')", name="status"),
)
Index("ix_export_tasks_status", export_tasks.c.status, export_tasks.c.created_at)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("roles", Text, nullable=False),
    Column("programs", Text),
    Column("databases", Text),
    Column("created_at", UtcMicros, nullable=False),
    Column("last_used_at", UtcMicros),
    Column("revoked_at", UtcMicros),
)

# Counters bumped in the same transaction as a change to what processes cache (the catalogue, the tokens), so
# every process notices the change on its next request with one keyed read instead of reloading everything.
change_counters = Table(
    "change_counters",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", BigInteger, nullable=False, server_default="0"),
)
CHANGE_COUNTER_NAMES = ("catalog", "tokens")
