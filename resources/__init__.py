"""Data files shipped with dss-console (demo service, sample data, icons)."""
