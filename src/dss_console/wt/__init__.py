"""itksnap-wt compatibility: its command line, output format and semantics (issue 10)."""
