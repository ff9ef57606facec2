"""The dashboard: one page and its assets, served at /dashboard, reading the admin API."""
