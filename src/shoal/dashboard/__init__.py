"""The live dashboard: a page that a runtime (init(include_dashboard=True)) or
`shoal dashboard` serves; see server.py."""
