"""vantage6 4.x as a second job source: node client, payload crypto, sandbox (issue 11)."""
