"""The audit trail beyond the store: its JSON form, exports to where audit teams look, replay and search."""
