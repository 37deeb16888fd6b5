"""A small demo CRM — customers, orders, support tickets — and the systems.toml that connects it."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import sqlalchemy as sa

#: People the README names, so a newcomer knows whom to erase.
DOCUMENTED = [
    ("alice@example.com", "Alice Example", "London"),
    ("ivan.petrov@example.ru", "Иван Петров", "Москва"),
    ("li.wei@example.cn", "李伟", "北京"),
]
_GIVEN = [
    "Anna",
    "Ben",
    "Chloé",
    "David",
    "Émile",
    "Fatima",
    "Grace",
    "Hugo",
    "Olga",
    "Пётр",
    "Мария",
    "Алексей",
    "Наталья",
    "王芳",
    "张伟",
    "刘洋",
    "陈静",
    "Sofia",
    "Tomás",
    "Yuki",
]
_FAMILY = [
    "Martin",
    "Schmidt",
    "García",
    "Novak",
    "Kowalski",
    "Иванова",
    "Смирнов",
    "Кузнецова",
    "王",
    "李",
    "张",
    "O'Brien",
    "Rossi",
    "Dubois",
    "Jensen",
]
_CITIES = [
    "Dublin",
    "Berlin",
    "Paris",
    "Madrid",
    "Санкт-Петербург",
    "Казань",
    "上海",
    "广州",
    "Lisbon",
    "Warsaw",
]
_TOPICS = [
    "Where is my parcel?",
    "Refund please",
    "Wrong size",
    "Change my address",
    "Invoice copy",
    "Не пришёл заказ",
    "退货申请",
]


def _schema() -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    customers = sa.Table(
        "customers",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("full_name", sa.String(120), nullable=False),
        sa.Column("phone", sa.String(32)),
        sa.Column("city", sa.String(80)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("marketing_opt_in", sa.Boolean, nullable=False, default=True),
        # Lists the "inactive since a date" segment that bulk erasure can pick.
        sa.Column("last_login_at", sa.DateTime),
    )
    orders = sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.ForeignKey("customers.id"), nullable=False, index=True),
        sa.Column("placed_at", sa.DateTime, nullable=False),
        sa.Column("total_cents", sa.Integer, nullable=False),
        sa.Column("shipping_address", sa.String(200)),
    )
    tickets = sa.Table(
        "support_tickets",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.ForeignKey("customers.id"), nullable=False, index=True),
        sa.Column("opened_at", sa.DateTime, nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    return metadata, customers, orders, tickets


#: The demo's quiet customers last signed in before this day (and no one else did).
INACTIVE_BEFORE = datetime(2025, 1, 1)  # noqa: DTZ001  (the CRM stores naive local times)


def _last_login(rng: random.Random, created_at: datetime, *, quiet: bool) -> datetime:
    """Return a sign-in after ``created_at``; a quiet customer's is before INACTIVE_BEFORE."""
    if quiet and created_at < INACTIVE_BEFORE - timedelta(days=30):
        # Signed in for a while after creating the account, then never again.
        days = min((INACTIVE_BEFORE - created_at).days - 1, 90)
        return created_at + timedelta(days=rng.randint(1, days), minutes=rng.randint(0, 1439))
    recent = datetime(2025, 6, 1) + timedelta(days=rng.randint(0, 180))  # noqa: DTZ001
    return max(recent, created_at + timedelta(days=1))


def create_demo_crm(url: str, *, seed: int = 7, extra_customers: int = 37) -> int:
    """(Re)create the demo CRM in the database at ``url``; return the number of customers."""
    rng = random.Random(seed)  # noqa: S311  (demo data, not a secret)
    metadata, customers, orders, tickets = _schema()
    people = list(DOCUMENTED)
    for n in range(extra_customers):
        given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
        people.append(
            (f"customer{n + 1:03d}@example.org", f"{given} {family}", rng.choice(_CITIES))
        )
    start = datetime(2024, 1, 1)  # noqa: DTZ001  (the CRM stores naive local times)
    # Sign-ins come from their own generator so the rest of the data stays as it was.
    activity = random.Random(seed + 1)  # noqa: S311  (demo data, not a secret)
    customer_rows, order_rows, ticket_rows = [], [], []
    for cid, (email, name, city) in enumerate(people, start=1):
        documented = cid <= len(DOCUMENTED)
        customer_rows.append(
            {
                "id": cid,
                "email": email,
                "full_name": name,
                "city": city,
                "phone": f"+353 1 {rng.randint(1000000, 9999999)}",
                "created_at": start + timedelta(days=rng.randint(0, 600)),
                "marketing_opt_in": documented or rng.random() < 0.6,  # noqa: S311
            }
        )
        customer_rows[-1]["last_login_at"] = _last_login(
            activity, customer_rows[-1]["created_at"], quiet=not documented and cid % 2 == 0
        )
        for _ in range(rng.randint(2 if documented else 0, 5)):
            order_rows.append(
                {
                    "customer_id": cid,
                    "total_cents": rng.randint(500, 50000),
                    "placed_at": start + timedelta(days=rng.randint(0, 700)),
                    "shipping_address": f"{rng.randint(1, 99)} Main Street, {city}",
                }
            )
        for _ in range(rng.randint(1 if documented else 0, 3)):
            topic = rng.choice(_TOPICS)
            ticket_rows.append(
                {
                    "customer_id": cid,
                    "subject": topic,
                    "opened_at": start + timedelta(days=rng.randint(0, 700)),
                    "body": f"{topic} — {name}, {email}",
                }
            )
    engine = sa.create_engine(url)
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(customers.insert(), customer_rows)
            conn.execute(orders.insert(), order_rows)
            conn.execute(tickets.insert(), ticket_rows)
    finally:
        engine.dispose()
    return len(customer_rows)


def demo_systems_toml(crm_url: str) -> str:
    """Return a commented ``systems.toml`` that connects the demo CRM at ``crm_url``."""
    return f'''# Systems that Lethe erases people from. One [systems.NAME] table per system.
# Check it with `lethe systems check`; preview with `lethe systems plan someone@example.com`.

[systems.crm]
connector = "sql"                   # built-in SQL connector (PostgreSQL, MariaDB/MySQL, SQLite)
label = "Customer accounts"         # the name people and auditors see
url = "{crm_url}"

# Where the person is found: the table and the column(s) compared with their email.
[systems.crm.subject]
table = "customers"
columns = ["email"]
match = "case-insensitive"          # or "exact"

# What to do with each table that holds them. Tables hanging off `customers` are found
# through the database's foreign keys; any that is not listed here blocks erasure.
[systems.crm.tables.support_tickets]
action = "delete"

# Orders are invoices: tax law says keep them (GDPR Art. 17(3)(b)), without the address.
[systems.crm.tables.orders]
action = "anonymise"
ground = "art17-3-b"
note = "Invoices are kept 10 years under tax law"
columns = {{ shipping_address = "null" }}

# Orders still point at the customer row, so it is anonymised rather than deleted.
[systems.crm.tables.customers]
action = "anonymise"
ground = "art17-3-b"

[systems.crm.tables.customers.columns]  # column = null | placeholder | "fixed:TEXT"
email = "placeholder"
full_name = "fixed:Erased customer"
phone = "null"
city = "null"

# What "stop using my data for marketing" (GDPR Art. 21(3)) changes. Leave it out for a
# system that does no marketing: it then reports "not used for marketing".
[systems.crm.marketing]
table = "customers"
set = {{ marketing_opt_in = false }}

# Groups of people staff can erase at once (Bulk erasure on the staff side): here, the
# customers whose last sign-in is before the date staff enter. Try 2025-01-01.
[systems.crm.segments.inactive]
label = "Customers inactive since a date"
table = "customers"
column = "last_login_at"            # a date or timestamp column of the subject table
parameter = "before"                # staff enter a date; rows before it are listed

# What the person is told about this system in their copy of their data (Art. 15(1)).
[systems.crm.disclosure]
purposes = [
    "Running your account and delivering your orders",
    "Answering your questions",
    "Marketing, only if you agreed to it",
]
categories = ["Contact details", "Order history", "Support conversations"]
recipients = ["Our delivery partners, for the address of each order"]
retention = "Your account while it is open; invoices 10 years under tax law"
source = "You, when you created your account and placed orders"
'''


#: The reference of the sample proof.
SAMPLE_REFERENCE = "DSR-7K3F9Q2M"


def _sample_step(table: str, action: str, rows: int, **more: object) -> dict:
    step = {"table": table, "action": action, "rows": rows, "columns": {}, "ground": None}
    return {**step, "note": "", "via": "", **more}


def sample_proof_content() -> dict:
    """Return the content of a made-up proof (no real person), for pictures and benchmarks."""
    return {
        "format": "lethe-proof/1",
        "controller": "Example Ltd",
        "reference": SAMPLE_REFERENCE,
        "subject_hash": "3f1c9a0e5b7d2c4f8e6a1b3d5c7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e",
        "request_type": "erasure",
        "jurisdiction": "gdpr-eu",
        "legal_basis": "GDPR Art. 17",
        "received_on": "2026-03-05",
        "due_on": "2026-04-07",
        "extended_due_on": None,
        "completed_at": "2026-03-09T10:11:12+00:00",
        "on_time": True,
        "approved_by": "dpo@example.com",
        "systems": [
            {
                "system": "crm",
                "label": "Customer accounts",
                "connector": "sql",
                "connector_version": "1",
                "outcome": "completed",
                "steps": [
                    _sample_step("support_tickets", "delete", 3),
                    _sample_step(
                        "orders", "retain", 2, ground="art17-3-b", note="invoices: 10 years"
                    ),
                    _sample_step(
                        "customers",
                        "anonymise",
                        1,
                        columns={"email": "placeholder", "full_name": "null", "city": "null"},
                    ),
                ],
                "rows_affected": {"support_tickets": 3, "customers": 1},
                "verification": {
                    "clean": True,
                    "remaining": {"support_tickets": 0, "customers": 0},
                },
                "message": "",
            },
            {
                "system": "newsletter",
                "label": "Newsletter",
                "connector": "redis",
                "connector_version": "1",
                "outcome": "not_found",
                "steps": [_sample_step("subscriber:*", "delete", 0)],
                "rows_affected": {},
                "verification": {"clean": True, "remaining": {}},
                "message": "",
            },
        ],
        "partial": False,
        "audit_checkpoint": {"position": 42, "hash": "9c2e" * 16},
        "issued_at": "2026-03-09T10:11:13+00:00",
    }
