"""Durable store: SQLAlchemy Core schema, alembic migrations, a group-commit writer, and queries."""
