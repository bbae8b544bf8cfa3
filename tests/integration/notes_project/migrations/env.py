"""The whole env.py a service needs: its metadata, handed to harbordb's helper."""

from sqlalchemy import Column, Integer, MetaData, Table, Text

from harbordb.migrations import run_migrations

metadata = MetaData()
Table("notes", metadata, Column("id", Integer, primary_key=True), Column("body", Text))

run_migrations(metadata, version_table="notes_version")
