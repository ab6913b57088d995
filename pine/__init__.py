"""Pine: trading operations for CME futures strategies."""
