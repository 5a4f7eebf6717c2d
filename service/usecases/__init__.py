"""Use cases, written once and called by both the API handlers and the CLI: each takes a session (or a data
folder) and settings as keyword arguments, reads through service/db, computes with service/scoring and
service/monitoring, and returns a typed result that the caller renders as JSON, a table or an HTML report."""
