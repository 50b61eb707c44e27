"""dss-console: console and headless worker for ITK-SNAP DSS service providers."""

__version__ = "0.1.0"
