"""What the admin API and the CLI share: budgets, reports, forecasts, export, alerts."""
