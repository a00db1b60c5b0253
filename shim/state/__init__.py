"""What must be remembered between requests: the duplicate-action guard."""
