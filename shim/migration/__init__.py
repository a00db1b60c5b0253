"""Proving a migration before trusting it (README, Migration): shadow comparisons and dry runs, the
migration report, `shim explain` and `shim discover`. Uses the layers below it (translate, upstreams,
state), never the web layer."""
