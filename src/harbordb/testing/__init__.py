"""Test and benchmark support: throwaway PostgreSQL and PgBouncer servers (see ``cluster``)."""
