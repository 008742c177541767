"""Just-in-time approval of held calls: the hold, the approval requests and decisions, and their store."""
