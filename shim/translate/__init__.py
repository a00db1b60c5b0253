"""The pure core: legacy request -> SDRS plan, SDRS answer -> legacy answer. No I/O here.

- `legacy`: the legacy EVS v2 contract (ids, collections, `LegacyError`); `paths`: canonical paths.
- `actions`: how a legacy RCG action is translated (parse, precondition, plan, job outcome).
- `reads`: SDRS groups and pairs as legacy objects; `listing`: merged lists, filters and paging.
- `sdrs_models`: SDRS answers as models; `sdrs_answers`: how they read to old clients (with `tables`).
"""
