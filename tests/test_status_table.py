"""The SDRS status -> legacy status table: complete, and consistent with the legacy workflow."""

from __future__ import annotations

import pytest
import yaml

from conftest import DEFAULT_ENTRY, write_mappings
from shim.mappings import default_mappings_dir, load_mappings
from shim.translate.actions import REPROTECT, SYNC, TRANSLATED_ACTIONS
from shim.validation import ConfigError

# The SDRS appendix's protection group and replication pair statuses, written out independently.
SDRS_GROUP_STATUSES = """creating available protected deleting error-deleting error starting error-starting
    reprotecting error-reprotecting stopping error-stopping reversing error-reversing failing-over
    failed-over error-failing-over""".split()
SDRS_PAIR_STATUSES = """creating available deleting error-deleting error extending error-extending starting
    error-starting protected reversing error-reversing failing-over failed-over error-failing-over
    reprotecting error-reprotecting stopping error-stopping invalid fault attaching detaching
    error-attaching error-detaching""".split()


@pytest.fixture(scope="module")
def table():
    return load_mappings(default_mappings_dir()).statuses


def test_every_sdrs_status_has_a_row(table):
    assert len(SDRS_GROUP_STATUSES) == 17 and len(SDRS_PAIR_STATUSES) == 25
    assert sorted(table.group_statuses) == sorted(SDRS_GROUP_STATUSES)
    assert sorted(table.pair_statuses) == sorted(SDRS_PAIR_STATUSES)


@pytest.mark.parametrize(("sdrs", "legacy"), [
    ("failed-over", ("failovered", "active-stopped")),
    ("reprotecting", ("available", "copying")),
    # legacy `active` means the data is in sync: a protected group's pairs may still be copying.
    ("protected", ("available", "from-pairs")),
    ("error-reprotecting", ("failovered", "error")),
    ("failing-over", ("failovering", "active-stopped")),
    ("reversing", ("reversing", "active")),
])
def test_the_legacy_workflow_reads_consistently(table, sdrs, legacy):
    row = table.group_statuses[sdrs]
    assert (row.status, row.replication_status) == legacy


def test_every_status_that_reads_failovered_can_be_reprotected(table):
    """The legacy precondition of reprotect is `failovered`: what reads so must be accepted."""
    failovered = {sdrs for sdrs, row in table.group_statuses.items() if row.status == "failovered"}
    assert failovered == set(TRANSLATED_ACTIONS[REPROTECT].sdrs_statuses)
    assert not failovered & TRANSLATED_ACTIONS[SYNC].sdrs_statuses


def test_a_table_missing_a_status_is_refused_at_load(tmp_path):
    shipped = yaml.safe_load((default_mappings_dir() / "statuses.yaml").read_text())
    del shipped["group_statuses"]["error-reprotecting"]
    directory = write_mappings(tmp_path / "m", [DEFAULT_ENTRY])
    (directory / "statuses.yaml").write_text(yaml.safe_dump(shipped))
    with pytest.raises(ConfigError) as caught:
        load_mappings(directory)
    assert "statuses.yaml" in str(caught.value)
    assert "group_statuses has no row for SDRS status error-reprotecting" in str(caught.value)


def test_a_row_with_a_status_old_clients_do_not_know_is_refused(tmp_path):
    shipped = yaml.safe_load((default_mappings_dir() / "statuses.yaml").read_text())
    shipped["group_statuses"]["failed-over"]["status"] = "failed-over"
    directory = write_mappings(tmp_path / "m", [DEFAULT_ENTRY])
    (directory / "statuses.yaml").write_text(yaml.safe_dump(shipped))
    with pytest.raises(ConfigError) as caught:
        load_mappings(directory)
    assert "group_statuses.failed-over.status" in str(caught.value)
