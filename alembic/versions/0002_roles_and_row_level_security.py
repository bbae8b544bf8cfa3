"""Roles and row-level security: customers see only their own orders and reservations.

Two NOLOGIN roles that a unit of work assumes with ``SET LOCAL ROLE``
(`harbordb.uow.ROLES`):

- ``harbordb_anon``: reads the catalog (products, variants, tags).
- ``harbordb_authenticated``: reads the catalog; reads and changes its own
  customer row, orders, order items and stock reservations, where "own" means
  ``customer_id`` equals the ``sub`` claim of ``request.jwt.claims`` (set per
  transaction with ``set_config(..., true)``).

Row-level security is ENABLEd, not FORCEd: the tables' owner (the migration
role) and superusers bypass it, so units of work that assume no role see
everything. The role that logs in must be a member of both roles; this
revision grants them to the role running it. Give them to a separate
application login with ``GRANT harbordb_anon, harbordb_authenticated TO app``.

Roles belong to the cluster, not the database: they are created only if
missing, and dropped at downgrade only if no other database still uses them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANON = "harbordb_anon"
AUTHENTICATED = "harbordb_authenticated"
ROLES = (ANON, AUTHENTICATED)

CATALOG = ("products", "variants", "tags", "product_tags")
OWNED = ("customers", "orders", "order_items", "stock_reservations")

# The customer id of the current transaction's claims, or NULL: no claims, no
# ``sub``, or a ``sub`` that is not a plain integer (the policies then match no row).
CURRENT_CUSTOMER_FUNCTION = """
CREATE FUNCTION harbordb_current_customer_id() RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN sub ~ '^[0-9]{1,18}$' THEN sub::bigint END
    FROM (
        SELECT CAST(NULLIF(current_setting('request.jwt.claims', true), '') AS jsonb) ->> 'sub'
    ) AS claims (sub)
$$
"""

# Evaluated once per statement, not once per row.
CURRENT_CUSTOMER = "(SELECT harbordb_current_customer_id())"

POLICIES = {
    "customers": f"id = {CURRENT_CUSTOMER}",
    "orders": f"customer_id = {CURRENT_CUSTOMER}",
    "stock_reservations": f"customer_id = {CURRENT_CUSTOMER}",
    "order_items": (
        "EXISTS (SELECT 1 FROM orders WHERE orders.id = order_items.order_id "
        f"AND orders.customer_id = {CURRENT_CUSTOMER})"
    ),
}


def upgrade() -> None:
    for role in ROLES:
        # Another database in the cluster may have created it already, maybe just now.
        op.execute(
            f"""
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                    CREATE ROLE {role} NOLOGIN;
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END
            $$
            """
        )
    op.execute(f"GRANT {ANON}, {AUTHENTICATED} TO CURRENT_USER")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ANON}, {AUTHENTICATED}")
    op.execute(f"GRANT SELECT ON {', '.join(CATALOG)} TO {ANON}, {AUTHENTICATED}")
    op.execute(f"GRANT SELECT, UPDATE ON customers TO {AUTHENTICATED}")
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON orders, order_items, stock_reservations "
        f"TO {AUTHENTICATED}"
    )

    op.execute(CURRENT_CUSTOMER_FUNCTION)
    for table, condition in POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_own ON {table} FOR ALL TO {AUTHENTICATED} "
            f"USING ({condition}) WITH CHECK ({condition})"
        )


def downgrade() -> None:
    for table in OWNED:
        op.execute(f"DROP POLICY {table}_own ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute("DROP FUNCTION harbordb_current_customer_id()")
    tables = ", ".join(CATALOG + OWNED)
    op.execute(f"REVOKE ALL ON {tables} FROM {ANON}, {AUTHENTICATED}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ANON}, {AUTHENTICATED}")
    for role in ROLES:
        # Privileges this role holds in another database keep it alive there.
        op.execute(
            f"""
            DO $$
            BEGIN
                DROP ROLE IF EXISTS {role};
            EXCEPTION WHEN dependent_objects_still_exist THEN
                RAISE NOTICE 'role {role} is still used by another database: kept';
            END
            $$
            """
        )
