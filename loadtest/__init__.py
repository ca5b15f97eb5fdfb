"""Bot clients, scenarios and reports for load tests (to come)."""
